package ipc_test

import (
	"context"
	"io"
	"os"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/sandkit/sandkit/internal/bulkbench"
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
// process (receiver), which validates every byte of its own copy (a
// checksum per 256 KiB chunk, as it arrives). Each producer holds the
// result in its own memory and hands it over once.
//
//   - shared: the package's shared-memory path, an shm stream: the
//     receiver asks with ipc.Start, the producer writes the result into a
//     1 MiB ring shared once per connection, and the receiver copies each
//     chunk out (the single fetch) and validates the copy while the
//     producer writes the next.
//   - region: a pre-faulted shared region of two 8 MiB slots,
//     double-buffered: the producer fills one slot on an ipc.Call while
//     the receiver copies the other out and validates the copy.
//   - socket: the producer writes the result into a SOCK_STREAM socket;
//     the receiver reads it into its reused buffer and validates it.
//   - sealed: a fresh sealed memfd per transfer, validated in place
//     (zero-copy, immutable, but every transfer pays for new pages).
func BenchmarkBulk8MiB(b *testing.B) {
	want := bulkbench.ChunkedSum(bulkbench.Template())
	ctx := context.Background()
	b.Run("shared", func(b *testing.B) {
		c := benchConn(b)
		_, fds, err := ipc.Call(ctx, c, mStream, &msg{})
		if err != nil {
			b.Fatal(err)
		}
		r, err := shm.OpenStream(fds[0], streamCap)
		fds[0].Close()
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		buf := make([]byte, bulkSize)
		b.SetBytes(bulkSize)
		b.ResetTimer()
		for b.Loop() {
			fill, err := ipc.Start(ctx, c, mFillStream, &msg{})
			if err != nil {
				b.Fatal(err)
			}
			err = bulkbench.Receive(buf, want, func(p []byte, _ int) error { return r.ReadFull(ctx, p) })
			if err != nil {
				b.Fatal(err)
			}
			if _, _, err := fill.Wait(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("region", func(b *testing.B) {
		c := benchConn(b)
		_, fds, err := ipc.Call(ctx, c, mRegion, &msg{})
		if err != nil {
			b.Fatal(err)
		}
		r, err := shm.OpenRegion(fds[0], 2*bulkSize)
		fds[0].Close()
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		fill := func(slot int) chan error {
			done := make(chan error, 1)
			go func() {
				_, _, err := ipc.Call(ctx, c, mFillRegion, &msg{Value: []byte{byte(slot)}})
				done <- err
			}()
			return done
		}
		buf := make([]byte, bulkSize)
		b.SetBytes(bulkSize)
		b.ResetTimer()
		next := fill(0)
		for i := 0; b.Loop(); i++ {
			if err := <-next; err != nil {
				b.Fatal(err)
			}
			next = fill((i + 1) % 2)
			base := (i % 2) * bulkSize
			err := bulkbench.Receive(buf, want, func(p []byte, off int) error { return r.CopyOut(p, base+off) })
			if err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		<-next
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
			err := bulkbench.Receive(buf, want, func(p []byte, _ int) error {
				_, err := io.ReadFull(stream, p)
				return err
			})
			if err != nil {
				b.Fatal(err)
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
			sum := bulkbench.ChunkedSum(m.Bytes())
			m.Close()
			if sum != want {
				b.Fatal("checksum mismatch")
			}
		}
	})
}
