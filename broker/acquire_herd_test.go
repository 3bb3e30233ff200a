package broker_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/internal/testrenderer"
	"github.com/sandkit/sandkit/policy"
)

// herd runs n Acquires of origin at once, released together, and returns
// what each got.
func herd(ctx context.Context, b *broker.Broker, n int, origin string) ([]*broker.Renderer, []error) {
	rs := make([]*broker.Renderer, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			rs[i], errs[i] = b.Acquire(ctx, origin, "")
		}()
	}
	close(start)
	wg.Wait()
	return rs, errs
}

// countEvents counts b's events of kind.
func countEvents(b *broker.Broker, kind broker.EventKind) int {
	n := 0
	for _, e := range b.Events() {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

// Many Acquires of one origin that has no renderer start one renderer
// between them, and all get it. Before, each spawned its own and all but
// the first to publish ended theirs again ("released: not needed"): under
// the soak's load 960 spawns for 3,000 calls.
func TestConcurrentAcquiresOfOneOriginSpawnOnce(t *testing.T) {
	b := newBroker(t, strict(), func(c *broker.Config) { c.MaxRenderers = 64 })
	const n = 32
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rs, errs := herd(ctx, b, n, "https://herd.example")
	for i := range n {
		require.NoError(t, errs[i])
		assert.Same(t, rs[0], rs[i], "Acquire %d got another renderer", i)
	}
	assert.Equal(t, 1, countEvents(b, broker.EventReady), "renderers started")
	assert.Equal(t, 1, countEvents(b, broker.EventBound), "renderers bound")
	assert.Zero(t, countEvents(b, broker.EventExited), "renderers ended")
	assert.Len(t, b.Renderers(), 1)
	_, _, err := broker.Call(ctx, rs[0], testrenderer.Ping, wrapperspb.Bytes([]byte("x")))
	require.NoError(t, err)
}

// When the Acquire that claimed an origin gives up — its own ctx ended
// while it waited for a slot under MaxRenderers — the Acquires waiting for
// it are not failed with its error: one of them takes over, and all get
// the one renderer it starts. Before, each waiter competed for a slot of
// its own, and every slot that came free started another renderer for the
// same origin, all but one ended again as not needed.
func TestAcquireTakesOverFromACancelledClaimant(t *testing.T) {
	const slots = 4
	b := newBroker(t, strict(), func(c *broker.Config) {
		c.MaxRenderers = slots
		c.CallTimeout = time.Minute // the hanging calls below end when the test says
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Fill every slot with a renderer that has a call in flight: none
	// may be evicted, so the claimant below waits for a slot.
	hangCtx, stopHanging := context.WithCancel(ctx)
	defer stopHanging()
	var hanging sync.WaitGroup
	for i := range slots {
		r, err := b.Acquire(ctx, fmt.Sprintf("https://busy-%d.example", i), "")
		require.NoError(t, err)
		hanging.Add(1)
		go func() {
			defer hanging.Done()
			_, _, _ = broker.Call(hangCtx, r, testrenderer.Attempt, wrapperspb.String("hang"))
		}()
	}
	for !allBusy(b, slots) {
		time.Sleep(time.Millisecond)
	}

	const origin = "https://wanted.example"
	claimantCtx, cancelClaimant := context.WithCancel(ctx)
	claimantErr := make(chan error, 1)
	go func() {
		_, err := b.Acquire(claimantCtx, origin, "")
		claimantErr <- err
	}()
	// Give the claimant time to claim the origin before the others come
	// (if it has not, one of them claims it and the test still holds).
	time.Sleep(100 * time.Millisecond)
	const waiters = slots - 1
	type result struct {
		r   *broker.Renderer
		err error
	}
	results := make(chan result, waiters)
	for range waiters {
		go func() {
			r, err := b.Acquire(ctx, origin, "")
			results <- result{r, err}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	cancelClaimant()
	require.ErrorIs(t, <-claimantErr, context.Canceled)

	// Free every slot at once.
	stopHanging()
	hanging.Wait()
	for i := range slots {
		b.Release(fmt.Sprintf("https://busy-%d.example", i), "")
	}
	var got *broker.Renderer
	for range waiters {
		res := <-results
		require.NoError(t, res.err)
		if got == nil {
			got = res.r
		}
		assert.Same(t, got, res.r)
	}
	assert.Equal(t, slots+1, countEvents(b, broker.EventReady), "renderers started: the busy ones and one for %s", origin)
	for _, e := range b.Events() {
		if e.Kind == broker.EventExited {
			assert.Equal(t, broker.ExitReleased, e.Err.Reason, "%v", e.Err)
			assert.Empty(t, e.Err.Detail, "only the busy renderers, released by the test, may end: %v", e.Err)
		}
	}
}

// allBusy reports whether b has n renderers, each with a call in flight.
func allBusy(b *broker.Broker, n int) bool {
	rs := b.Renderers()
	if len(rs) != n {
		return false
	}
	for _, r := range rs {
		if r.InFlight == 0 {
			return false
		}
	}
	return true
}

// When the one renderer started for a burst of Acquires cannot be had for
// a reason that is the broker's — here a layer the policy requires cannot
// be applied — every one of them gets that renderer's exact, typed
// error, and no other renderer is started to fail the same way. Before,
// each Acquire started (and lost) a renderer of its own.
func TestConcurrentAcquiresShareTheSpawnError(t *testing.T) {
	p := strict()
	p.Filesystem.ReadOnlyPaths = []string{"/nonexistent-sandkit-test"}
	b := newBroker(t, p)
	const n = 8
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, errs := herd(ctx, b, n, "https://herd.example")
	var first *broker.ExitError
	for i, err := range errs {
		var ee *broker.ExitError
		require.ErrorAs(t, err, &ee, "Acquire %d", i)
		assert.Equal(t, broker.ExitLockdownFailed, ee.Reason)
		assert.Equal(t, policy.LayerMountNS, ee.Layer)
		assert.Equal(t, "mount-namespace: read-only path /nonexistent-sandkit-test: no such file or directory (ENOENT)", ee.Detail)
		var ue *policy.UnavailableError
		require.ErrorAs(t, err, &ue, "Acquire %d", i)
		assert.Equal(t, policy.LayerMountNS, ue.Layer)
		if first == nil {
			first = ee
		}
		assert.Equal(t, first.PID, ee.PID, "Acquire %d got another renderer's end", i)
	}
	assert.Equal(t, 1, countEvents(b, broker.EventExited), "renderers started and ended")
}
