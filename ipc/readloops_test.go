package ipc

import (
	"bytes"
	"context"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// These tests check that an idle Conn keeps exactly one read loop
// goroutine (read.go's loop): the one holding the token. A loop goroutine
// left parked beside it stays until the Conn dies, one per connection
// that ever ran a handler inline while the token changed hands.

// gate is a handler that reports it runs and waits to be let go.
type gate struct {
	started chan struct{}
	release chan struct{}
}

func newGate() *gate {
	return &gate{started: make(chan struct{}, 1), release: make(chan struct{})}
}

func (g *gate) handle(ctx context.Context, req *testMsg, _ []*os.File) (*testMsg, []*os.File, error) {
	g.started <- struct{}{}
	select {
	case <-g.release:
		return req, nil, nil
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
}

var (
	mGateA = NewMethod[*testMsg, *testMsg](MethodSpec{Name: "gate-a"})
	mGateB = NewMethod[*testMsg, *testMsg](MethodSpec{Name: "gate-b"})
)

// callAsync calls m on c from a new goroutine; the returned channel gets
// the call's error.
func callAsync(ctx context.Context, c *Conn, m *Method[*testMsg, *testMsg]) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, _, err := Call(ctx, c, m, &testMsg{Value: []byte("x")})
		done <- err
	}()
	return done
}

func waitFor[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// readLoopStacks counts the goroutines in this process whose stack is in
// a read loop, from their stacks rather than from the Conns' own count.
func readLoopStacks() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	return bytes.Count(buf, []byte("ipc.(*readState).loop("))
}

// settledLoops waits until every read loop goroutine of each Conn in cs
// either holds the token or is parked, with a loop holding it (the state
// of an idle Conn), and returns each Conn's count of loop goroutines. It
// fails if the goroutines' stacks show a different total.
func settledLoops(t *testing.T, cs ...*Conn) []int {
	t.Helper()
	loops := make([]int, len(cs))
	deadline := time.Now().Add(10 * time.Second)
	for {
		settled := true
		total := 0
		for i, c := range cs {
			r := &c.rd
			r.mu.Lock()
			idle := 0
			if r.idleLoop {
				idle = 1
			}
			loops[i] = r.loops
			settled = settled && r.held && r.heldByLoop && r.loops == 1+idle
			r.mu.Unlock()
			total += loops[i]
		}
		if settled && readLoopStacks() == total {
			return loops
		}
		if time.Now().After(deadline) {
			t.Fatalf("read loops did not settle: per Conn %v, %d in goroutine stacks", loops, readLoopStacks())
		}
		time.Sleep(time.Millisecond)
	}
}

// setStandby sets how long c's token stays free before a loop takes it.
func setStandby(c *Conn, d time.Duration) {
	c.rd.mu.Lock()
	c.rd.standbyAfter = d
	c.rd.mu.Unlock()
}

func waitIdleLoop(t *testing.T, c *Conn) {
	t.Helper()
	require.Eventually(t, func() bool {
		c.rd.mu.Lock()
		defer c.rd.mu.Unlock()
		return c.rd.idleLoop
	}, 10*time.Second, 50*time.Microsecond, "a parked loop goroutine")
}

// The two ways a second loop goroutine found the token taken by another
// loop, driven step by step: the standby timer of the Conn under test (s)
// is an hour, and the test starts loops itself (startLoop, as the timer
// would). Each fails (two loops on the idle Conn) without the loop's exit.
func TestIdleConnKeepsOneReadLoop(t *testing.T) {
	tests := []struct {
		name string
		// run leaves s idle; s's peer p calls gate-a, which s's first
		// loop serves inline.
		run func(t *testing.T, ctx context.Context, s, p *Conn, ga, gb *gate)
	}{
		{
			// The loop that served a request finds the token with the
			// loop that started meanwhile.
			name: "handler ends while another loop holds the token",
			run: func(t *testing.T, ctx context.Context, s, p *Conn, ga, gb *gate) {
				called := callAsync(ctx, p, mGateA)
				waitFor(t, ga.started, "gate-a to run")
				s.rd.startLoop()
				waitHolder(t, s, true)
				close(ga.release)
				require.NoError(t, waitFor(t, called, "p's call"))
			},
		},
		{
			// The loop that served a request takes the token while the
			// loop that yielded to a caller is parked.
			name: "a loop takes the token while another is parked",
			run: func(t *testing.T, ctx context.Context, s, p *Conn, ga, gb *gate) {
				calledA := callAsync(ctx, p, mGateA)
				waitFor(t, ga.started, "gate-a to run")
				s.rd.startLoop()
				waitHolder(t, s, true)
				// s calls p: the second loop yields to the caller and
				// parks.
				calledB := callAsync(ctx, s, mGateB)
				waitFor(t, gb.started, "gate-b to run")
				waitHolder(t, s, false)
				waitIdleLoop(t, s)
				close(gb.release)
				require.NoError(t, waitFor(t, calledB, "s's call"))
				// The token is free (an hour's standby) and one loop
				// is parked; the first loop ends its handler and takes
				// the token.
				close(ga.release)
				require.NoError(t, waitFor(t, calledA, "p's call"))
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ga, gb := newGate(), newGate()
			muxS, muxP := testMux(), testMux()
			Handle(muxS, mGateA, ga.handle)
			Handle(muxP, mGateB, gb.handle)
			s, p := newPair(t, muxS, muxP, Limits{})
			setStandby(s, time.Hour)
			waitHolder(t, s, true)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			tt.run(t, ctx, s, p, ga, gb)
			require.Equal(t, []int{1, 1}, settledLoops(t, s, p), "read loop goroutines per idle Conn (s, p)")
		})
	}
}

// Bursts of concurrent calls both ways, handlers that call back, and
// pauses after which the standby timer hands the token to a loop: after
// each burst, each idle Conn has one read loop goroutine.
func TestIdleConnKeepsOneReadLoopAfterBursts(t *testing.T) {
	mOuter := NewMethod[*testMsg, *testMsg](MethodSpec{Name: "outer-burst"})
	var bp atomic.Pointer[Conn] // set after the handler is registered
	muxB := testMux()
	Handle(muxB, mOuter, func(ctx context.Context, req *testMsg, _ []*os.File) (*testMsg, []*os.File, error) {
		resp, _, err := Call(ctx, bp.Load(), mEcho, req)
		return resp, nil, err
	})
	a, b := newPair(t, testMux(), muxB, Limits{})
	bp.Store(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for round := range 20 {
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Add(3)
			go func() {
				defer wg.Done()
				if _, _, err := Call(ctx, a, mEcho, &testMsg{Value: []byte{byte(i)}}); err != nil {
					t.Errorf("a→b echo: %v", err)
				}
			}()
			go func() {
				defer wg.Done()
				if _, _, err := Call(ctx, b, mEcho, &testMsg{Value: []byte{byte(i)}}); err != nil {
					t.Errorf("b→a echo: %v", err)
				}
			}()
			go func() {
				defer wg.Done()
				if _, _, err := Call(ctx, a, mOuter, &testMsg{Value: []byte{byte(i)}}); err != nil {
					t.Errorf("a→b→a call: %v", err)
				}
			}()
		}
		wg.Wait()
		require.Equal(t, []int{1, 1}, settledLoops(t, a, b), "read loop goroutines per idle Conn (a, b) after burst %d", round)
	}
}
