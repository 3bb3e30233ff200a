package ipc

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// These tests exercise the read token (read.go): who receives when, and
// that nothing waits on a datagram nobody reads.

// A handler that calls back over the same Conn gets its reply: the loop
// released the token before running the handler inline, so the handler,
// as a caller, receives its own reply; the other side receives the
// callback while it waits for the outer reply.
func TestHandlerCallsBack(t *testing.T) {
	mOuter := NewMethod[*testMsg, *testMsg](MethodSpec{Name: "outer"})
	var b atomic.Pointer[Conn] // set after the handler is registered
	muxB := NewMux()
	Handle(muxB, mOuter, func(ctx context.Context, req *testMsg, _ []*os.File) (*testMsg, []*os.File, error) {
		resp, _, err := Call(ctx, b.Load(), mEcho, &testMsg{Value: append([]byte("back:"), req.Value...)})
		if err != nil {
			return nil, nil, err
		}
		return resp, nil, nil
	})
	a, cb := newPair(t, testMux(), muxB, Limits{})
	b.Store(cb)
	for i := range 50 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, _, err := Call(ctx, a, mOuter, &testMsg{Value: []byte{byte(i)}})
		cancel()
		require.NoError(t, err)
		require.Equal(t, append([]byte("back:"), byte(i)), resp.Value)
	}
}

// After this side's call returns, nobody holds the token until the
// standby timer hands it to a loop goroutine; the peer's requests must
// still be served, including a long burst while this side calls too.
func TestRequestsServedBetweenCalls(t *testing.T) {
	a, b := newPair(t, testMux(), testMux(), Limits{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 200 {
		_, _, err := Call(ctx, a, mEcho, &testMsg{Value: []byte("a")})
		require.NoError(t, err)
		// b calls a right after a's call returned: a's token is free
		// (standby pending) or already back with a loop.
		resp, _, err := Call(ctx, b, mEcho, &testMsg{Value: []byte{byte(i)}})
		require.NoError(t, err)
		require.Equal(t, []byte{byte(i)}, resp.Value)
		if i%50 == 0 {
			waitHolder(t, a, true) // let a's loop take the token back
		}
	}
}

// A handler running inline for longer than standbyDelay does not stop
// the Conn from receiving: a second request is served concurrently.
func TestLongInlineHandlerDoesNotBlockOthers(t *testing.T) {
	mBlock := NewMethod[*testMsg, *testMsg](MethodSpec{Name: "block-inline"})
	release := make(chan struct{})
	started := make(chan struct{})
	mux := testMux()
	Handle(mux, mBlock, func(ctx context.Context, req *testMsg, _ []*os.File) (*testMsg, []*os.File, error) {
		close(started)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return req, nil, nil
	})
	a, _ := newPair(t, nil, mux, Limits{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _, err := Call(ctx, a, mBlock, &testMsg{})
		if err != nil {
			t.Error(err)
		}
	}()
	<-started
	resp, _, err := Call(ctx, a, mEcho, &testMsg{Value: []byte("while blocked")})
	require.NoError(t, err)
	require.Equal(t, "while blocked", string(resp.Value))
	close(release)
	wg.Wait()
}

// A caller that finds a loop goroutine holding the token (an idle Conn)
// asks it to yield and receives its own reply; then the standby timer
// hands the token back to a loop. Repeated.
func TestCallerTakesTokenFromIdleLoop(t *testing.T) {
	a, _ := newPair(t, nil, testMux(), Limits{})
	for range 20 {
		waitHolder(t, a, true)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, _, err := Call(ctx, a, mEcho, &testMsg{Value: []byte("x")})
		cancel()
		require.NoError(t, err)
		require.Equal(t, "x", string(resp.Value))
	}
}

// A call whose method last took longer than longWait is marked long, and
// its next call waits in the netpoller. Calls succeed whichever way they
// wait. (Only the slow direction is checked: how long a fast call takes
// depends on the machine.)
func TestLongWaitsFollowTheMethod(t *testing.T) {
	mSlow := NewMethod[*testMsg, *testMsg](MethodSpec{Name: "slow"})
	mux := testMux()
	Handle(mux, mSlow, func(ctx context.Context, req *testMsg, _ []*os.File) (*testMsg, []*os.File, error) {
		time.Sleep(4 * longWait)
		return req, nil, nil
	})
	a, _ := newPair(t, nil, mux, Limits{})
	long := func(name string) bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.longCalls[name]
	}
	call := func(m *Method[*testMsg, *testMsg], v string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, _, err := Call(ctx, a, m, &testMsg{Value: []byte(v)})
		require.NoError(t, err)
		require.Equal(t, v, string(resp.Value))
	}
	for i := range 3 {
		call(mSlow, "slow")
		require.True(t, long("slow"), "call %d", i)
	}
	// Both waits deliver the echo's reply.
	for _, waitLong := range []bool{true, false, true} {
		a.mu.Lock()
		a.longCalls[mEcho.Spec().Name] = waitLong
		a.mu.Unlock()
		call(mEcho, "echo")
	}
}

// A holder waiting in the netpoller still receives what arrives for
// others, yields to a caller, gives up on cancellation and serves the
// peer's requests.
func TestLongWaitIsInterruptible(t *testing.T) {
	mBlock := NewMethod[*testMsg, *testMsg](MethodSpec{Name: "block-long"})
	release := make(chan struct{}, 8)
	mux := testMux()
	Handle(mux, mBlock, func(ctx context.Context, req *testMsg, _ []*os.File) (*testMsg, []*os.File, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return req, nil, nil
	})
	a, b := newPair(t, testMux(), mux, Limits{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Teach a that mBlock is long: its reply comes later than longWait
	// (the delay is what a learns, not a synchronisation).
	go func() { time.Sleep(4 * longWait); release <- struct{}{} }()
	_, _, err := Call(ctx, a, mBlock, &testMsg{})
	require.NoError(t, err)
	a.mu.Lock()
	require.True(t, a.longCalls["block-long"])
	a.mu.Unlock()

	// The holder waits long for mBlock; an echo's reply reaches its caller.
	done := make(chan error, 1)
	go func() {
		_, _, err := Call(ctx, a, mBlock, &testMsg{})
		done <- err
	}()
	waitHolder(t, a, false)
	resp, _, err := Call(ctx, a, mEcho, &testMsg{Value: []byte("past the long wait")})
	require.NoError(t, err)
	require.Equal(t, "past the long wait", string(resp.Value))
	release <- struct{}{}
	require.NoError(t, <-done)

	// Cancelling a long wait returns at once.
	cctx, ccancel := context.WithCancel(ctx)
	go func() {
		_, _, err := Call(cctx, a, mBlock, &testMsg{})
		done <- err
	}()
	waitHolder(t, a, false) // the caller waits for its reply
	ccancel()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(10 * time.Second):
		t.Fatal("a cancelled long wait did not return")
	}

	// After an idle spell, a's loop waits in the netpoller: b's requests
	// are served and a's callers take the token back. (The spells are the
	// condition under test: a wait that outlasted longWait.)
	for range 5 {
		time.Sleep(10 * longWait)
		resp, _, err := Call(ctx, b, mEcho, &testMsg{Value: []byte("to a")})
		require.NoError(t, err)
		require.Equal(t, "to a", string(resp.Value))
		time.Sleep(10 * longWait)
		resp, _, err = Call(ctx, a, mEcho, &testMsg{Value: []byte("from a")})
		require.NoError(t, err)
		require.Equal(t, "from a", string(resp.Value))
	}
}

// Serve serves the peer's requests on the calling goroutine, lets calls on
// the same Conn through meanwhile (it yields the socket to them), and
// returns why the Conn died: the peer's hang-up, or at once on a Conn that
// is already closed.
func TestServe(t *testing.T) {
	a, b := newPair(t, testMux(), testMux(), Limits{})
	served := make(chan error, 1)
	go func() { served <- b.Serve() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Add(2)
		go func() { // a's requests, served by b.Serve
			defer wg.Done()
			resp, _, err := Call(ctx, a, mEcho, &testMsg{Value: []byte{byte(i)}})
			if err != nil || resp.Value[0] != byte(i) {
				t.Errorf("a→b call %d: %v, %v", i, resp, err)
			}
		}()
		go func() { // b's own calls while Serve holds the socket
			defer wg.Done()
			resp, _, err := Call(ctx, b, mEcho, &testMsg{Value: []byte{byte(i)}})
			if err != nil || resp.Value[0] != byte(i) {
				t.Errorf("b→a call %d: %v, %v", i, resp, err)
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-served:
		t.Fatalf("Serve returned while the Conn was alive: %v", err)
	default:
	}
	require.NoError(t, a.Close())
	select {
	case err := <-served:
		require.ErrorIs(t, err, ErrPeerClosed)
	case <-ctx.Done():
		t.Fatal("Serve did not return after the peer closed")
	}
	require.ErrorIs(t, b.Serve(), ErrPeerClosed, "Serve on a dead Conn")

	c, _ := newPair(t, nil, nil, Limits{})
	require.NoError(t, c.Close())
	require.ErrorIs(t, c.Serve(), ErrClosed)
}

// A wait blocked in recvmsg ends on a wake, not on the socket's receive
// timeout: with the timeout raised to an hour and a peer that never sends
// anything, a caller's cancellation (a signal to the blocked thread) and
// Close (the socket's receive side shut down, and the signal) must each end
// it within the test's deadline.
func TestWakeInterruptsBlockedReceive(t *testing.T) {
	skipInNetpollerMode(t) // TestNetpollerModeNeverBlocksInRecvmsg is its counterpart
	tests := []struct {
		name   string
		byLoop bool // who blocks: the receive loop, or a caller
		run    func(a *Conn, cancel context.CancelFunc) error
	}{
		{"cancelled caller", false, func(a *Conn, cancel context.CancelFunc) error {
			cancel()
			return nil
		}},
		{"Close", true, func(a *Conn, _ context.CancelFunc) error {
			return a.Close()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mine, theirs, err := SocketPair()
			require.NoError(t, err)
			defer theirs.Close() // never read, never written
			a, err := NewConn(mine)
			require.NoError(t, err)
			defer a.Close()
			hour := unix.NsecToTimeval(time.Hour.Nanoseconds())
			require.NoError(t, a.rc.Control(func(fd uintptr) {
				require.NoError(t, unix.SetsockoptTimeval(int(fd), unix.SOL_SOCKET, unix.SO_RCVTIMEO, &hour))
			}))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			called := make(chan error, 1)
			if !tt.byLoop {
				go func() {
					_, _, err := Call(ctx, a, mEcho, &testMsg{})
					called <- err
				}()
			}
			waitBlockedInReceive(t, a, tt.byLoop)
			done := make(chan error, 1)
			go func() { done <- tt.run(a, cancel) }()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(20 * time.Second):
				t.Fatal("the blocked receive was not interrupted")
			}
			if !tt.byLoop {
				select {
				case err := <-called:
					require.ErrorIs(t, err, context.Canceled)
				case <-time.After(20 * time.Second):
					t.Fatal("the blocked caller was not interrupted")
				}
			}
		})
	}
}

// waitBlockedInReceive waits until the holder of c's read token (its loop,
// or a caller) is asleep in recvmsg: its thread is published and the
// kernel reports it sleeping.
func waitBlockedInReceive(t *testing.T, c *Conn, byLoop bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c.rd.mu.Lock()
		holder := c.rd.held && c.rd.heldByLoop == byLoop
		c.rd.mu.Unlock()
		if tid := c.blockTID.Load(); holder && tid != 0 {
			stat, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/stat", tid))
			// The state follows the command name in parentheses.
			if i := bytes.LastIndexByte(stat, ')'); err == nil && i >= 0 && i+2 < len(stat) && stat[i+2] == 'S' && c.blockTID.Load() == tid {
				return
			}
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("no goroutine blocked in recvmsg")
}

// waitHolder waits until c's read token is held by a loop goroutine
// (byLoop) or by a caller.
func waitHolder(t *testing.T, c *Conn, byLoop bool) {
	t.Helper()
	require.Eventually(t, func() bool {
		c.rd.mu.Lock()
		defer c.rd.mu.Unlock()
		return c.rd.held && c.rd.heldByLoop == byLoop
	}, 10*time.Second, 50*time.Microsecond, "token held by loop=%v", byLoop)
}
