package ipc_test

import (
	"context"
	"io"
	"os"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/sandkit/sandkit/ipc"
	"github.com/sandkit/sandkit/ipc/shm"
	"github.com/sandkit/sandkit/ipc/wirepb"
)

// Benchmarks run between two processes (see startChild). They report
// time per operation; none of them is a timed assertion.

func rawFD(b testing.TB, f *os.File) int {
	rc, err := f.SyscallConn()
	if err != nil {
		b.Fatal(err)
	}
	var fd int
	rc.Control(func(u uintptr) { fd = int(u) })
	return fd
}

// BenchmarkRawSeqpacketRoundTrip is the floor: 64 bytes there and back
// with blocking read/write on a bare SEQPACKET socket, no framing.
func BenchmarkRawSeqpacketRoundTrip(b *testing.B) {
	seq, _, _ := startChild(b, "raw-echo", false)
	fd := rawFD(b, seq)
	out := make([]byte, 64)
	in := make([]byte, 128)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := unix.Write(fd, out); err != nil {
			b.Fatal(err)
		}
		if n, err := unix.Read(fd, in); err != nil || n != 64 {
			b.Fatal(n, err)
		}
	}
}

func benchConn(b *testing.B, env ...string) *ipc.Conn {
	seq, _, _ := startChild(b, "serve", false, env...)
	c, err := ipc.NewConn(seq)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// BenchmarkRoundTrip is a typed call with a 64-byte payload and its reply.
func BenchmarkRoundTrip(b *testing.B) {
	c := benchConn(b)
	req := &msg{Value: make([]byte, 60)} // 64 bytes encoded
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, _, err := ipc.Call(ctx, c, mEcho, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRoundTripChildGOMAXPROCS1 is BenchmarkRoundTrip with the
// serving child at GOMAXPROCS=1: a diagnostic of how much the serving
// side's scheduler matters (with the read token, not measurably).
func BenchmarkRoundTripChildGOMAXPROCS1(b *testing.B) {
	c := benchConn(b, "GOMAXPROCS=1")
	req := &msg{Value: make([]byte, 60)}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, _, err := ipc.Call(ctx, c, mEcho, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRoundTripRawClient isolates the serving side: a hand-encoded
// request sent and its reply read with blocking write/read, against an ipc
// server in the child.
func BenchmarkRoundTripRawClient(b *testing.B) {
	seq, _, _ := startChild(b, "serve", false)
	fd := rawFD(b, seq)
	pl, err := proto.Marshal(&msg{Value: make([]byte, 60)})
	if err != nil {
		b.Fatal(err)
	}
	env := &wirepb.Envelope{Kind: wirepb.Kind_KIND_REQUEST, Method: "echo", Payload: pl}
	in := make([]byte, 1024)
	var out []byte
	b.ResetTimer()
	for b.Loop() {
		env.Id++
		out, err = proto.MarshalOptions{}.MarshalAppend(out[:0], env)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := unix.Write(fd, out); err != nil {
			b.Fatal(err)
		}
		if _, err := unix.Read(fd, in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRoundTripWithFD adds one ReadOnlyFile to each request (checked
// by the sender and the receiver, closed by the handler).
func BenchmarkRoundTripWithFD(b *testing.B) {
	c := benchConn(b)
	f, err := os.Open(os.Args[0])
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	req := &msg{Value: make([]byte, 60)}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, _, err := ipc.Call(ctx, c, mEchoFD, req, f); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBulk8MiB moves 8 MiB from the child (producer) to the test
// process (receiver), which validates every byte (checksum) before use.
//
//   - shared: the producer writes into a pre-faulted, size-sealed region
//     shared once per connection; the receiver copies it out exactly once,
//     chunk by chunk, into its own reused buffer and validates the copy.
//   - socket: the producer writes the bytes into a SOCK_STREAM socket; the
//     receiver reads them into its reused buffer and validates them.
//   - sealed: a fresh sealed memfd per transfer, validated in place
//     (zero-copy, immutable, but every transfer pays for new pages).
func BenchmarkBulk8MiB(b *testing.B) {
	want := checksum(template())
	ctx := context.Background()
	// The region has two 8 MiB slots. "shared" double-buffers: while the
	// receiver copies out and validates slot i, the producer fills the
	// other slot (the socket path overlaps producer and receiver through
	// the kernel's buffer in the same way). "shared-serial" waits for
	// each fill before copying, one transfer at a time.
	openRegion := func(b *testing.B, c *ipc.Conn) *shm.RegionReader {
		_, fds, err := ipc.Call(ctx, c, mRegion, &msg{})
		if err != nil {
			b.Fatal(err)
		}
		r, err := shm.OpenRegion(fds[0], 2*bulkSize)
		fds[0].Close()
		if err != nil {
			b.Fatal(err)
		}
		return r
	}
	receive := func(b *testing.B, r *shm.RegionReader, buf []byte, slot int) {
		var sum uint64
		base := slot * bulkSize
		for off := 0; off < bulkSize; off += chunk {
			// One fetch into our own buffer; validate and use only the copy.
			if err := r.CopyOut(buf[off:off+chunk], base+off); err != nil {
				b.Fatal(err)
			}
			sum ^= checksum(buf[off : off+chunk])
		}
		if sum != chunkedWant(want) {
			b.Fatal("checksum mismatch")
		}
	}
	fill := func(c *ipc.Conn, slot int) chan error {
		done := make(chan error, 1)
		go func() {
			_, _, err := ipc.Call(ctx, c, mFillRegion, &msg{Value: []byte{byte(slot)}})
			done <- err
		}()
		return done
	}
	b.Run("shared", func(b *testing.B) {
		c := benchConn(b)
		r := openRegion(b, c)
		defer r.Close()
		buf := make([]byte, bulkSize)
		b.SetBytes(bulkSize)
		b.ResetTimer()
		next := fill(c, 0)
		for i := 0; b.Loop(); i++ {
			if err := <-next; err != nil {
				b.Fatal(err)
			}
			next = fill(c, (i+1)%2)
			receive(b, r, buf, i%2)
		}
		b.StopTimer()
		<-next
	})
	b.Run("shared-serial", func(b *testing.B) {
		c := benchConn(b)
		r := openRegion(b, c)
		defer r.Close()
		buf := make([]byte, bulkSize)
		b.SetBytes(bulkSize)
		b.ResetTimer()
		for b.Loop() {
			if err := <-fill(c, 0); err != nil {
				b.Fatal(err)
			}
			receive(b, r, buf, 0)
		}
	})
	b.Run("socket", func(b *testing.B) {
		seq, stream, _ := startChild(b, "serve", true)
		c, err := ipc.NewConn(seq)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, bulkSize)
		b.SetBytes(bulkSize)
		b.ResetTimer()
		for b.Loop() {
			if _, err := stream.Write([]byte{1}); err != nil {
				b.Fatal(err)
			}
			var sum uint64
			for off := 0; off < bulkSize; off += chunk {
				if _, err := io.ReadFull(stream, buf[off:off+chunk]); err != nil {
					b.Fatal(err)
				}
				sum ^= checksum(buf[off : off+chunk])
			}
			if sum != chunkedWant(want) {
				b.Fatal("checksum mismatch")
			}
		}
	})
	b.Run("sealed", func(b *testing.B) {
		c := benchConn(b)
		b.SetBytes(bulkSize)
		b.ResetTimer()
		for b.Loop() {
			_, fds, err := ipc.Call(ctx, c, mSealed, &msg{})
			if err != nil {
				b.Fatal(err)
			}
			m, err := shm.Map(fds[0], bulkSize)
			fds[0].Close()
			if err != nil {
				b.Fatal(err)
			}
			var sum uint64
			for off := 0; off < bulkSize; off += chunk {
				sum ^= checksum(m.Bytes()[off : off+chunk])
			}
			m.Close()
			if sum != chunkedWant(want) {
				b.Fatal("checksum mismatch")
			}
		}
	})
}

var chunkedWantCache = map[uint64]uint64{}

// chunkedWant is the expected XOR of per-chunk checksums of the template.
func chunkedWant(uint64) uint64 {
	if v, ok := chunkedWantCache[0]; ok {
		return v
	}
	t := template()
	var sum uint64
	for off := 0; off < bulkSize; off += chunk {
		sum ^= checksum(t[off : off+chunk])
	}
	chunkedWantCache[0] = sum
	return sum
}
