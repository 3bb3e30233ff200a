package broker

import (
	"context"
	"time"
)

// poolRefill is the state of the warm pool's background refills, under
// Broker.mu.
type poolRefill struct {
	running  bool      // a refill goroutine is under way
	retryAt  time.Time // no refill before this, after a failure
	backoff  time.Duration
	failures int
	lastErr  string
	lastFail time.Time
}

// Refill backoff after a failed spawn: a kernel that refuses renderers
// must not be asked again in a loop.
const (
	minRefillBackoff = time.Second
	maxRefillBackoff = 30 * time.Second
)

// PoolStatus describes the warm pool.
type PoolStatus struct {
	Target   int // Config.WarmPool
	Ready    int // spawned, locked down and waiting
	Spawning int // spawns under way (for the pool or an Acquire)
	// Failures counts refills that failed; LastError and LastFailure
	// say the latest. A refill is retried with a backoff (1 s doubling
	// to 30 s), and whenever a renderer ends or leaves the pool.
	Failures    int
	LastError   string
	LastFailure time.Time
}

// Pool reports the warm pool's state.
func (b *Broker) Pool() PoolStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	return PoolStatus{
		Target: b.cfg.WarmPool, Ready: len(b.pool), Spawning: b.spawning,
		Failures: b.refill.failures, LastError: b.refill.lastErr, LastFailure: b.refill.lastFail,
	}
}

// refillPoolLocked starts topping the warm pool up in the background when
// it is short, there is room under MaxRenderers and no refill is under
// way or backing off; b.mu is held. It runs whenever a renderer leaves
// the pool or ends, so the pool is full again after a burst.
func (b *Broker) refillPoolLocked() {
	f := &b.refill
	if b.closed || b.cfg.WarmPool == 0 || f.running || time.Now().Before(f.retryAt) ||
		len(b.pool)+b.spawning >= b.cfg.WarmPool || len(b.live)+b.spawning >= b.cfg.MaxRenderers {
		return
	}
	f.running = true
	// Added under b.mu while not closed: Close, which sets closed under
	// b.mu before it waits, always waits for this one.
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), b.cfg.ReadyTimeout)
		defer cancel()
		err := b.fillPool(ctx)
		b.mu.Lock()
		defer b.mu.Unlock()
		f.running = false
		if b.closed {
			// Close interrupted it (its renderer ended as a broker
			// shutdown): the broker stopping, not a failure.
			return
		}
		if err == nil {
			f.backoff = 0
			return
		}
		f.backoff = min(max(2*f.backoff, minRefillBackoff), maxRefillBackoff)
		f.retryAt = time.Now().Add(f.backoff)
		f.failures++
		f.lastErr, f.lastFail = err.Error(), time.Now()
		b.log.Error("warm pool refill failed", "err", err, "failures", f.failures, "retry_in", f.backoff)
		backoff := f.backoff
		time.AfterFunc(backoff, func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			b.refillPoolLocked()
		})
	}()
}
