package broker_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/internal/fdtest"
	"github.com/sandkit/sandkit/internal/testrenderer"
)

// TestRendererCannotMakeBrokerHoldOrSpendMore floods the broker from a
// locked renderer the way a compromised one would, on a duplicate of its
// socket: Open requests whose replies it never reads, Open requests as
// fast as it can read the answers, cancels of requests it never sent. Each
// flood must end that renderer as ExitBrokerLimit, naming the bound, while
// it holds at most its share of the broker (a goroutine per request in
// flight, not one per request sent), and a bystander of another origin
// answers and a newcomer starts throughout. Afterwards the broker holds
// no more goroutines or descriptors than before the attacker came.
func TestRendererCannotMakeBrokerHoldOrSpendMore(t *testing.T) {
	const (
		attacker  = "https://attacker.example"
		bystander = "https://bystander.example"
		newcomer  = "https://newcomer.example"
	)
	tests := []struct {
		name   string
		action string
		want   []string // in the exit's Detail
	}{
		// Each Open reply carries a descriptor; unread, they fill the
		// socket and then the 64 requests in flight.
		{"unread replies", "flood-open:5000:a.txt", []string{"too many requests in flight", "64 already in flight"}},
		// Fewer than 64: only the descriptors it leaves unread (8 at
		// most: the kernel charges them to the broker's user, which the
		// renderers share) and the 5 s each reply may wait bound them,
		// and a newcomer can still pass its seccomp listener meanwhile.
		{"unread replies within the in-flight bound", "flood-open:63:a.txt", []string{
			"the renderer stopped reading its socket: reply to sandkit.Open", "not read within 5s: 8 descriptors already unread"}},
		// Invalid names fail fast: only the request rate bounds them.
		{"request rate", "flood-open-read:50000:", []string{"request rate exceeded", "more than 1000 requests/s (burst 1000)"}},
		{"cancels", "flood-cancel:500000", []string{"unexpected cancel", "never sent"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			dir := t.TempDir()
			require.NoError(t, os.WriteFile(filepath.Join(dir, "a.txt"), []byte("a"), 0o644))
			b := newBroker(t, strict())
			require.NoError(t, b.GrantDir(attacker, dir))
			by, err := b.Acquire(ctx, bystander, "")
			require.NoError(t, err)
			ping(t, ctx, by)

			goroutines := steadyGoroutines()
			before := goroutineStacks()
			fds := openFDs(t)
			r, err := b.Acquire(ctx, attacker, "")
			require.NoError(t, err)

			var peak int
			stopSampling := make(chan struct{})
			sampled := make(chan struct{})
			go func() {
				defer close(sampled)
				for {
					peak = max(peak, runtime.NumGoroutine())
					select {
					case <-stopSampling:
						return
					case <-time.After(time.Millisecond):
					}
				}
			}()
			attacked := make(chan error, 1)
			go func() {
				resp, _, err := broker.Call(ctx, r, testrenderer.Attempt, wrapperspb.String(tt.action))
				if err == nil {
					err = errors.New("the flood ended without a kill: " + resp.GetValue())
				}
				attacked <- err
			}()

			// Meanwhile the bystander answers and a newcomer starts.
			var wg sync.WaitGroup
			wg.Add(2)
			go func() {
				defer wg.Done()
				for {
					ping(t, ctx, by)
					select {
					case <-r.Done():
						return
					case <-time.After(time.Millisecond):
					}
				}
			}()
			go func() {
				defer wg.Done()
				n, err := b.Acquire(ctx, newcomer, "")
				if !assert.NoError(t, err) {
					return
				}
				ping(t, ctx, n)
			}()

			err = <-attacked
			var exit *broker.ExitError
			require.ErrorAs(t, err, &exit)
			assert.Equal(t, broker.ExitBrokerLimit, exit.Reason, "exit: %v", exit)
			for _, w := range tt.want {
				assert.Contains(t, exit.Detail, w)
			}
			<-r.Done()
			assert.Equal(t, broker.ExitBrokerLimit, r.Err().Reason)
			wg.Wait()
			close(stopSampling)
			<-sampled
			// The attacker's share: its supervision, its connection and
			// at most MaxInFlight (64) handlers; the newcomer's few.
			t.Logf("goroutines: %d before the attacker, at most %d during", goroutines, peak)
			assert.LessOrEqual(t, peak-goroutines, 64+48, "goroutines held for one renderer")
			ping(t, ctx, by)

			b.Release(newcomer, "")
			for _, st := range b.Renderers() {
				require.NotEqual(t, newcomer, st.Origin)
			}
			if left := settledGoroutines(goroutines); left > goroutines {
				t.Errorf("%d goroutines left after the attacker, %d before.\nBefore:\n%s\nNow:\n%s", left, goroutines, before, goroutineStacks())
			}
			waitNoFDsAdded(t, fds)
		})
	}
}

// goroutineStacks returns every goroutine's stack, grouped, for a failure
// message that shows which one was left.
func goroutineStacks() string {
	var b strings.Builder
	_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
	return b.String()
}

// steadyGoroutines returns the goroutine count once it has stayed the same
// for 100 ms (or after 5 s).
func steadyGoroutines() int {
	n, since := runtime.NumGoroutine(), time.Now()
	for deadline := since.Add(5 * time.Second); time.Since(since) < 100*time.Millisecond && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		if m := runtime.NumGoroutine(); m != n {
			n, since = m, time.Now()
		}
	}
	return n
}

func ping(t *testing.T, ctx context.Context, r *broker.Renderer) {
	t.Helper()
	resp, _, err := broker.Call(ctx, r, testrenderer.Ping, wrapperspb.Bytes([]byte("ping")))
	if assert.NoError(t, err) {
		assert.Equal(t, "ping", string(resp.GetValue()))
	}
}

// settledGoroutines waits (up to 10 s) for the goroutine count to fall to
// want, and returns it.
func settledGoroutines(want int) int {
	n := runtime.NumGoroutine()
	for deadline := time.Now().Add(10 * time.Second); n > want && time.Now().Before(deadline); n = runtime.NumGoroutine() {
		time.Sleep(10 * time.Millisecond)
	}
	return n
}

// waitNoFDsAdded waits (up to 10 s) until no descriptor is open that was
// not in base.
func waitNoFDsAdded(t *testing.T, base map[int]string) {
	t.Helper()
	var added []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if added = fdtest.Added(base, openFDs(t)); len(added) == 0 {
			return
		}
	}
	t.Errorf("descriptors left after the attacker: %v", added)
}

// A renderer that stops reading its socket leaves the broker's next
// request unread: the call fails once CallTimeout passes, and the exit
// says the renderer stopped reading, not that it was slow to answer.
func TestRendererThatStopsReadingIsReportedAsSuch(t *testing.T) {
	ctx := context.Background()
	b := newBroker(t, strict(), func(c *broker.Config) { c.CallTimeout = time.Second })
	r, err := b.Acquire(ctx, "https://attacker.example", "")
	require.NoError(t, err)
	out, err := attempt(t, r, "stop-reading")
	require.NoError(t, err)
	require.Equal(t, "ok", out)
	time.Sleep(200 * time.Millisecond) // the reader stops 50 ms after answering
	_, _, err = broker.Call(ctx, r, testrenderer.Ping, wrapperspb.Bytes([]byte("ping")))
	var exit *broker.ExitError
	require.ErrorAs(t, err, &exit)
	assert.Equal(t, broker.ExitBrokerLimit, exit.Reason, "exit: %v", exit)
	assert.Equal(t, "the renderer stopped reading its socket: test.Ping request not read within 1s", exit.Detail)
}
