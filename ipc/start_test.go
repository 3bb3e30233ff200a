package ipc

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Start sends at once and a call can follow before its reply; Wait
// returns the reply, once.
func TestStartThenWait(t *testing.T) {
	arrived := make(chan string, 2)
	mux := testMux()
	mux.Before(func(_ context.Context, method string) error {
		arrived <- method
		return nil
	})
	a, _ := newPair(t, nil, mux, Limits{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 20 {
		f := readOnlyFile(t)
		started, err := Start(ctx, a, mReadOnly, &testMsg{Value: []byte("first")}, f)
		f.Close() // sent: the peer has its own copy
		require.NoError(t, err)
		resp, _, err := Call(ctx, a, mEcho, &testMsg{Value: []byte("second")})
		require.NoError(t, err)
		require.Equal(t, "second", string(resp.Value))
		resp, fds, err := started.Wait(ctx)
		require.NoError(t, err)
		require.Empty(t, fds)
		require.Equal(t, "first", string(resp.Value))
		_, _, err = started.Wait(ctx)
		require.EqualError(t, err, "ipc: readonly: Wait called twice")
		// The handlers may run in either order; both ran.
		got := []string{<-arrived, <-arrived}
		require.ElementsMatch(t, []string{"readonly", "echo"}, got)
	}
}

// A Wait whose ctx ends returns ctx's error and tells the peer; the
// handler sees its ctx cancelled.
func TestStartWaitCancelled(t *testing.T) {
	a, _ := newPair(t, nil, testMux(), Limits{})
	started, err := Start(context.Background(), a, mBlock, &testMsg{})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, _, err = started.Wait(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	// The slot comes back once the peer answers the cancelled call.
	for range defaultLimits().MaxInFlight + 1 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, _, err := Call(ctx, a, mEcho, &testMsg{})
		cancel()
		require.NoError(t, err)
	}
}

// Start on a dead Conn fails without sending.
func TestStartOnClosedConn(t *testing.T) {
	a, _ := newPair(t, nil, testMux(), Limits{})
	a.Close()
	_, err := Start(context.Background(), a, mEcho, &testMsg{})
	require.ErrorIs(t, err, ErrClosed)
}

// Mux.Before's error reaches the caller as the handler's would, the
// handler does not run, and the request's descriptors are closed.
func TestMuxBeforeRefuses(t *testing.T) {
	warmUp(t)
	base := openFDs(t)
	ran := make(chan struct{}, 1)
	mux := NewMux()
	Handle(mux, mReadOnly, func(ctx context.Context, req *testMsg, fds []*os.File) (*testMsg, []*os.File, error) {
		closeFiles(fds)
		ran <- struct{}{}
		return req, nil, nil
	})
	mux.Before(func(_ context.Context, method string) error {
		return Errorf(CodeFailedPrecondition, "not yet: %s", method)
	})
	a, _ := newPair(t, nil, mux, Limits{})
	withConns := openFDs(t)
	f := readOnlyFile(t)
	_, _, err := Call(context.Background(), a, mReadOnly, &testMsg{}, f)
	f.Close()
	var se *StatusError
	require.True(t, errors.As(err, &se), "%v", err)
	require.Equal(t, CodeFailedPrecondition, se.Code)
	require.Equal(t, "not yet: readonly", se.Message)
	require.Empty(t, ran)
	waitFDs(t, withConns)
	require.Greater(t, len(withConns), len(base))
}

// readOnlyFile opens a fresh read-only regular file.
func readOnlyFile(t *testing.T) *os.File {
	t.Helper()
	f, err := os.Open("/proc/self/exe")
	require.NoError(t, err)
	return f
}

// Before functions run in the order they were added; the first error
// stops the request, and later functions do not run for it.
func TestMuxBeforeOrder(t *testing.T) {
	mux := testMux()
	var (
		mu    sync.Mutex
		order []string
	)
	record := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		order = append(order, s)
	}
	mux.Before(func(_ context.Context, method string) error {
		record("first:" + method)
		if method == "readonly" {
			return Errorf(CodePermissionDenied, "refused first")
		}
		return nil
	})
	mux.Before(func(_ context.Context, method string) error {
		record("second:" + method)
		return nil
	})
	a, _ := newPair(t, nil, mux, Limits{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _, err := Call(ctx, a, mEcho, &testMsg{})
	require.NoError(t, err)
	f := readOnlyFile(t)
	defer f.Close()
	_, _, err = Call(ctx, a, mReadOnly, &testMsg{}, f)
	var se *StatusError
	require.True(t, errors.As(err, &se), "%v", err)
	require.Equal(t, "refused first", se.Message)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []string{"first:echo", "second:echo", "first:readonly"}, order)
}
