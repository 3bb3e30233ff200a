package broker

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/policy"
)

// The two orders in which a warm renderer's death (its Lifetime, say) can
// meet Acquire taking it from the pool, each set up exactly, with a real
// renderer that really died: forget ran after Acquire took the renderer
// and before it published it, or after it published it. Either way no
// dead renderer may stay published, and the next Acquire for the origin
// binds a live one at once. Before, the first left a dead entry (r.key was
// set only later, by bind) on which every Acquire spun until its context
// ended.
func TestDeadWarmRendererNeverStaysBound(t *testing.T) {
	tests := []struct {
		name string
		// die ends r, which Acquire took from the pool, at the point
		// under test; it returns once forget has run.
		die func(b *Broker, k key, r *Renderer)
	}{
		{
			name: "before it is published",
			die: func(b *Broker, _ key, r *Renderer) {
				r.kill(ExitTimeout, "lifetime limit (test)")
				<-r.exited
				// Acquire still holds it, as if taken from the pool
				// the moment before.
				b.mu.Lock()
				b.pool = append(b.pool, r)
				b.mu.Unlock()
			},
		},
		{
			name: "after it is published, before it is bound",
			die: func(b *Broker, k key, r *Renderer) {
				b.mu.Lock()
				b.bindLocked(k, r)
				b.mu.Unlock()
				r.kill(ExitTimeout, "lifetime limit (test)")
				<-r.exited
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := policy.Strict()
			p.Limits.Memory = 0 // the race detector's shadow memory; no part of this test
			b, err := New(context.Background(), Config{Policy: p, WarmPool: 1})
			require.NoError(t, err)
			defer b.Close()
			k := b.keyFor("https://a.example", "")

			b.mu.Lock()
			require.Len(t, b.pool, 1)
			dead := b.pool[0]
			b.pool = b.pool[:0]
			b.mu.Unlock()
			tt.die(b, k, dead)

			// Generous, so that a machine under load never fails it: an
			// Acquire that spins on a dead renderer spins until then.
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			r, err := b.Acquire(ctx, k.origin, k.document)
			require.NoError(t, err)
			assert.NotSame(t, dead, r)
			assert.Nil(t, r.Err())
			b.mu.Lock()
			assert.Same(t, r, b.bound[k])
			assert.NotContains(t, b.pool, dead)
			b.mu.Unlock()
		})
	}
}
