package broker_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/internal/testrenderer"
	"github.com/sandkit/sandkit/policy"
)

// TestHoldSparesRendererFromEviction: a held renderer, idle far longer
// than eviction's grace, is not ended to make room: the other origin's
// Acquire waits for a slot instead, and gets one once the hold ends.
func TestHoldSparesRendererFromEviction(t *testing.T) {
	b := newBroker(t, policy.Strict(), func(c *broker.Config) { c.MaxRenderers = 1 })
	r, err := b.Acquire(context.Background(), "a", "")
	require.NoError(t, err)
	release, err := r.Hold()
	require.NoError(t, err)
	assert.Equal(t, 1, r.Status().InFlight)
	time.Sleep(time.Second) // four times the eviction grace

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = b.Acquire(ctx, "b", "")
	require.ErrorIs(t, err, context.DeadlineExceeded, "Acquire must wait for the held renderer, not evict it")
	assert.Nil(t, r.Err(), "the held renderer lives")
	_, _, err = broker.Call(context.Background(), r, testrenderer.Ping, wrapperspb.Bytes(nil))
	require.NoError(t, err)

	release()
	release() // idempotent: one release, not two
	assert.Equal(t, 0, r.Status().InFlight)
	_, err = b.Acquire(context.Background(), "b", "")
	require.NoError(t, err)
	<-r.Done()
	assert.Equal(t, broker.ExitIdle, r.Err().Reason)
	assert.Contains(t, r.Err().Detail, "evicted to make room")
}

// TestHoldSparesRendererFromIdleTimeout: the idle timeout counts from the
// hold's end, not from the last call.
func TestHoldSparesRendererFromIdleTimeout(t *testing.T) {
	b := newBroker(t, policy.Strict(), func(c *broker.Config) { c.IdleTimeout = 200 * time.Millisecond })
	r, err := b.Acquire(context.Background(), "a", "")
	require.NoError(t, err)
	release, err := r.Hold()
	require.NoError(t, err)
	select {
	case <-r.Done():
		t.Fatalf("held renderer ended: %v", r.Err())
	case <-time.After(time.Second):
	}
	release()
	select {
	case <-r.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("renderer did not end once idle")
	}
	assert.Equal(t, broker.ExitIdle, r.Err().Reason)
}

// TestHoldFailsOnEndedRenderer: a renderer that is gone, or unbound,
// cannot be held; the error says so.
func TestHoldFailsOnEndedRenderer(t *testing.T) {
	b := newBroker(t, policy.Strict())
	r, err := b.Acquire(context.Background(), "a", "")
	require.NoError(t, err)
	r.Close()
	_, err = r.Hold()
	require.ErrorIs(t, err, broker.ErrRendererGone)
}

// TestWarmPoolRefillsAfterBurst: a burst that takes every slot empties
// the pool; once its renderers end, the pool is full again, without any
// further Acquire.
func TestWarmPoolRefillsAfterBurst(t *testing.T) {
	b := newBroker(t, policy.Strict(), func(c *broker.Config) {
		c.MaxRenderers = 2
		c.WarmPool = 1
		c.IdleTimeout = 200 * time.Millisecond
	})
	require.Equal(t, 1, b.Pool().Ready)
	ra, err := b.Acquire(context.Background(), "a", "")
	require.NoError(t, err)
	rb, err := b.Acquire(context.Background(), "b", "")
	require.NoError(t, err)
	assert.Equal(t, 0, b.Pool().Ready, "no room for a warm renderer while both slots are bound")
	<-ra.Done()
	<-rb.Done()
	require.Eventually(t, func() bool { return b.Pool().Ready == 1 }, 10*time.Second, 10*time.Millisecond, "the pool refills after the burst")
	st := b.Pool()
	assert.Equal(t, 1, st.Target)
	assert.Zero(t, st.Failures)
	assert.Empty(t, st.LastError)
}
