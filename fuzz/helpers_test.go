package fuzz

import (
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// openFDs counts this process's open descriptors. Leak checks compare it
// at quiescent points: only the harness's own descriptors should differ.
func openFDs(tb testing.TB) int {
	tb.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		tb.Fatalf("read /proc/self/fd: %v", err)
	}
	return len(ents) - 1 // the directory's own descriptor
}

// settleTimeout bounds how long a leak check waits for background work
// (handler goroutines, a renderer's log reader) to finish. It stays well
// under the 10 s after which the fuzzing coordinator declares a worker
// hung, so that a leak is reported as such.
const settleTimeout = 5 * time.Second

// settle polls get until it returns at most want and fails the test if it
// does not within settleTimeout. It polls by hand, without helper
// goroutines (require.Eventually runs its own, which would be counted).
func settle(tb testing.TB, what string, want int, get func() int) {
	tb.Helper()
	deadline := time.Now().Add(settleTimeout)
	for {
		got := get()
		if got <= want {
			return
		}
		if time.Now().After(deadline) {
			if what == "goroutines" {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				tb.Logf("goroutines:\n%s", buf)
			}
			tb.Fatalf("%s leaked: %d, want at most %d", what, got, want)
		}
		time.Sleep(time.Millisecond)
	}
}

// goroutines counts this process's goroutines, except idle ipc handler
// workers and ipc loop goroutines. A Conn keeps up to Limits.MaxInFlight
// idle workers for reuse (how many depends on how requests raced their
// predecessors' replies), and one or two loop goroutines, one of them
// waiting to receive only while no caller holds the read token
// (ipc/read.go); all exit with their Conn. Counting them would make the
// check flaky without making it stronger, since a leaked Conn still shows
// up through its descriptors (the socket, the wake eventfd and the epoll
// instance).
func goroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	total, idle := 0, 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		total++
		header, rest, _ := strings.Cut(g, "\n")
		switch {
		case strings.Contains(header, "[select") && strings.HasPrefix(rest, "github.com/sandkit/sandkit/ipc.(*Conn).worker("),
			strings.Contains(rest, "\ngithub.com/sandkit/sandkit/ipc.(*readState).loop(") ||
				strings.HasPrefix(rest, "github.com/sandkit/sandkit/ipc.(*readState).loop("):
			idle++
		}
	}
	return total - idle
}

// noLeaks records the descriptor and goroutine counts now and returns a
// check that waits until both are back at most at those values.
func noLeaks(tb testing.TB) func() {
	tb.Helper()
	fds, gs := openFDs(tb), goroutines()
	return func() {
		tb.Helper()
		settle(tb, "goroutines", gs, goroutines)
		settle(tb, "descriptors", fds, func() int { return openFDs(tb) })
	}
}
