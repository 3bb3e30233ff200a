package fuzz

import (
	"os"
	"runtime"
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
// (handler goroutines, a renderer's log reader) to finish.
const settleTimeout = 10 * time.Second

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

// noLeaks records the descriptor and goroutine counts now and returns a
// check that waits until both are back at most at those values.
func noLeaks(tb testing.TB) func() {
	tb.Helper()
	fds, gs := openFDs(tb), runtime.NumGoroutine()
	return func() {
		tb.Helper()
		settle(tb, "goroutines", gs, runtime.NumGoroutine)
		settle(tb, "descriptors", fds, func() int { return openFDs(tb) })
	}
}
