package bench_test

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sandkit/sandkit/ipc/wirepb"
)

// BenchmarkRoundTrip64Parts splits BenchmarkRoundTrip64/ipc's gap to the
// raw round trip (diagnostic, no target):
//
//   - raw-netpoller: the raw echo, with the parent waiting in Go's
//     netpoller (a non-blocking socket, os.File Read/Write) instead of a
//     blocking read: what waiting the way ipc must wait costs by itself;
//   - ipc-server: a hand-encoded Ping envelope written and its reply read
//     with blocking syscalls, against the same ipc-serve child as
//     RoundTrip64/ipc: the serving side's cost alone, so that ipc minus
//     this is the calling side's.
func BenchmarkRoundTrip64Parts(b *testing.B) {
	b.Run("raw-netpoller", func(b *testing.B) {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		// Non-blocking before os.NewFile, so that os registers the
		// descriptor with the poller.
		if err := unix.SetNonblock(fds[0], true); err != nil {
			b.Fatal(err)
		}
		f := os.NewFile(uintptr(fds[0]), "netpoller")
		defer f.Close()
		startChild(b, "raw-echo", nil, os.NewFile(uintptr(fds[1]), "child-seq"))
		out := make([]byte, 64)
		in := make([]byte, 128)
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if _, err := f.Write(out); err != nil {
				b.Fatal(err)
			}
			if n, err := f.Read(in); err != nil || n != 64 {
				b.Fatal(n, err)
			}
		}
	})
	b.Run("ipc-server", func(b *testing.B) {
		fd, theirs := seqpacketPair(b)
		defer unix.Close(fd)
		startChild(b, "ipc-serve", nil, theirs)
		pl, err := proto.Marshal(wrapperspb.Bytes(make([]byte, 62)))
		if err != nil {
			b.Fatal(err)
		}
		env := &wirepb.Envelope{Kind: wirepb.Kind_KIND_REQUEST, Method: "test.Ping", Payload: pl}
		in := make([]byte, 1024)
		var out []byte
		b.ReportAllocs()
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
	})
}
