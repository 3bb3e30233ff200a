package broker_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/broker"
)

// A warm renderer SIGKILLed from outside just as Acquire binds it ends as
// what it is, killed ("crashed: signal killed"), never as a bad
// message: the bind's send can meet its closed socket before the
// connection's reader has seen the end. Before, that order made it "bad
// message: bind failed: ipc: peer closed the connection", which the soak
// counted as lost (the renderer had done nothing wrong).
func TestWarmRendererKilledWhileBoundEndsAsKilled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// A broker each time: New fills the pool before it returns, and a
	// renderer that dies in the pool is replaced only by the next
	// Acquire that takes one from it.
	for range 40 {
		b, err := broker.New(ctx, broker.Config{Policy: strict(), WarmPool: 1})
		require.NoError(t, err)
		rs := b.Renderers()
		require.Len(t, rs, 1)
		warm := rs[0].PID
		require.NoError(t, unix.Kill(warm, unix.SIGKILL))
		// The killed renderer may be taken and fail its bind (then
		// Acquire takes another), or be gone already.
		_, err = b.Acquire(ctx, "https://a.example", "")
		require.NoError(t, err)
		e := exitEvent(ctx, t, b, warm)
		assert.Equal(t, broker.ExitCrash, e.Err.Reason, "%v", e.Err)
		assert.Equal(t, "signal killed", e.Err.Detail, "%v", e.Err)
		require.NoError(t, b.Close())
	}
}

// exitEvent waits for b's exit event of pid.
func exitEvent(ctx context.Context, t *testing.T, b *broker.Broker, pid int) broker.Event {
	t.Helper()
	for {
		for _, e := range b.Events() {
			if e.Kind == broker.EventExited && e.PID == pid {
				return e
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("renderer %d did not end", pid)
		case <-time.After(time.Millisecond):
		}
	}
}
