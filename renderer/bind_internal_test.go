package renderer

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sandkit/sandkit/internal/control"
	"github.com/sandkit/sandkit/internal/control/controlpb"
	"github.com/sandkit/sandkit/ipc"
)

var mWhoAmI = ipc.NewMethod[*wrapperspb.StringValue, *wrapperspb.StringValue](ipc.MethodSpec{Name: "test.WhoAmI"})

// sessionPair serves a fresh Session as Main does (Bind, the hold, and a
// method that reports the session's origin) and returns the broker's end.
// The session's lockdown is complete.
func sessionPair(t *testing.T) *ipc.Conn {
	t.Helper()
	s := &Session{boundCh: make(chan struct{}), lockedCh: make(chan struct{})}
	close(s.lockedCh)
	return servedSession(t, s)
}

// servedSession serves s as Main does and returns the broker's end.
func servedSession(t *testing.T, s *Session) *ipc.Conn {
	t.Helper()
	mux := ipc.NewMux()
	ipc.Handle(mux, control.Bind, s.bind)
	mux.Before(s.holdUntilBound)
	// What register may add runs after the hold and cannot replace it.
	mux.Before(func(context.Context, string) error { return nil })
	ipc.Handle(mux, mWhoAmI, func(context.Context, *wrapperspb.StringValue, []*os.File) (*wrapperspb.StringValue, []*os.File, error) {
		origin, _ := s.Origin()
		return wrapperspb.String(origin), nil, nil
	})
	a, b, err := ipc.SocketPair()
	require.NoError(t, err)
	broker, err := ipc.NewConn(a)
	require.NoError(t, err)
	rend, err := ipc.NewConn(b, ipc.WithMux(mux))
	require.NoError(t, err)
	s.conn = rend
	t.Cleanup(func() { broker.Close(); rend.Close() })
	return broker
}

// A call sent right behind Bind, without waiting for Bind's answer, is
// served by a bound renderer, every time.
func TestCallBehindBindSeesTheBinding(t *testing.T) {
	for range 200 {
		c := sessionPair(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		started, err := ipc.Start(ctx, c, control.Bind, &controlpb.BindRequest{Origin: "https://a.example"})
		require.NoError(t, err)
		resp, _, err := ipc.Call(ctx, c, mWhoAmI, wrapperspb.String(""))
		require.NoError(t, err)
		require.Equal(t, "https://a.example", resp.GetValue())
		_, _, err = started.Wait(ctx)
		require.NoError(t, err)
		cancel()
	}
}

// A request that reaches an unbound renderer is held, not served, until
// the renderer is bound.
func TestRequestHeldUntilBound(t *testing.T) {
	c := sessionPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := whoAmIHeld(t, ctx, c, "Bind")
	_, _, err := ipc.Call(ctx, c, control.Bind, &controlpb.BindRequest{Origin: "https://late.example"})
	require.NoError(t, err)
	require.Equal(t, "https://late.example", <-got)
}

// A bound renderer still holds requests while its lockdown is incomplete:
// Main hands the seccomp listener to the broker and closes its own copy,
// and the broker may send Bind and a request in between.
func TestRequestHeldUntilLocked(t *testing.T) {
	s := &Session{boundCh: make(chan struct{}), lockedCh: make(chan struct{})}
	c := servedSession(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _, err := ipc.Call(ctx, c, control.Bind, &controlpb.BindRequest{Origin: "https://a.example"})
	require.NoError(t, err, "Bind itself is never held")
	got := whoAmIHeld(t, ctx, c, "the lockdown was complete")
	close(s.lockedCh)
	require.Equal(t, "https://a.example", <-got)
}

// whoAmIHeld sends a WhoAmI request, checks that it is not answered within
// 50 ms (it is held until what), and returns where its answer, or error,
// will arrive.
func whoAmIHeld(t *testing.T, ctx context.Context, c *ipc.Conn, until string) <-chan string {
	t.Helper()
	got := make(chan string, 1)
	go func() {
		resp, _, err := ipc.Call(ctx, c, mWhoAmI, wrapperspb.String(""))
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		got <- resp.GetValue()
	}()
	select {
	case v := <-got:
		t.Fatalf("served before %s: %q", until, v)
	case <-time.After(50 * time.Millisecond):
	}
	return got
}
