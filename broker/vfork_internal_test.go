package broker

import (
	"context"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/ipc"
	"github.com/sandkit/sandkit/policy"
)

// BenchmarkStartRenderer measures what the spawn paths themselves cost the
// broker, as root: from the start of the clone to the renderer's exec,
// which is when both return. The renderer is killed and reaped outside the
// timer, before its lockdown. BenchmarkSpawnToReady measures the whole cold
// start, of which this is a part; on a loaded machine its noise hides this
// part. one-step-vfork-broker-ids is an ordinary broker's path, for
// comparison. "heap" runs each path again with 512 MiB of the broker's memory
// touched, which os/exec's fork copies the page tables of.
func BenchmarkStartRenderer(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("renderers start as ids of their own only under a root broker")
	}
	br, err := New(context.Background(), Config{Policy: policy.Strict(), MaxRenderers: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	if br.ids.execReason != nil {
		b.Fatalf("the two-step spawn is off: %v", br.ids.execReason)
	}
	paths := []struct {
		name  string
		start func(logW, remote *os.File, hostID int) (process, error)
	}{
		{"two-step-vfork", br.startVfork},
		{"os-exec", br.startExec},
		// What an ordinary broker does: one step, the broker's ids
		// (here root's) mapped to 0.
		{"one-step-vfork-broker-ids", func(logW, remote *os.File, _ int) (process, error) { return br.startVfork(logW, remote, -1) }},
	}
	for _, heap := range []int{0, 512 << 20} {
		var ballast []byte
		if heap > 0 {
			ballast = make([]byte, heap)
			for i := 0; i < len(ballast); i += os.Getpagesize() {
				ballast[i] = 1
			}
		}
		for _, p := range paths {
			name := p.name
			if heap > 0 {
				name += "/heap-512MiB"
			}
			b.Run(name, func(b *testing.B) {
				for b.Loop() {
					benchStartOnce(b, br, p.start)
				}
			})
		}
		if heap > 0 {
			ballast[heap-1]++ // keep it alive through the runs
		}
	}
}

func benchStartOnce(b *testing.B, br *Broker, start func(logW, remote *os.File, hostID int) (process, error)) {
	b.StopTimer()
	local, remote, err := ipc.SocketPair()
	if err != nil {
		b.Fatal(err)
	}
	logR, logW, err := logPipe()
	if err != nil {
		b.Fatal(err)
	}
	br.mu.Lock()
	id, err := br.ids.alloc()
	br.mu.Unlock()
	if err != nil {
		b.Fatal(err)
	}
	b.StartTimer()
	proc, err := start(logW, remote, int(id))
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	_ = unix.PidfdSendSignal(proc.pidfd, unix.SIGKILL, nil, 0)
	proc.reap()
	unix.Close(proc.pidfd)
	br.releaseID(int(id))
	for _, f := range []*os.File{local, remote, logR, logW} {
		f.Close()
	}
	b.StartTimer()
}
