package broker_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/policy"
)

// procStatus returns the fields of a /proc/<pid>/status line ("Uid:",
// "Threads:"), as the kernel reports them to the broker's side.
func procStatus(pid int, name string) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, name); ok {
			return strings.Fields(rest), nil
		}
	}
	return nil, fmt.Errorf("/proc/%d/status has no %s line", pid, name)
}

// hostIDs returns the real, effective, saved and filesystem uids and gids
// of a renderer, as host ids.
func hostIDs(t *testing.T, r *broker.Renderer) (uids, gids []string) {
	t.Helper()
	uids, err := procStatus(r.PID(), "Uid:")
	require.NoError(t, err)
	gids, err = procStatus(r.PID(), "Gid:")
	require.NoError(t, err)
	require.Len(t, uids, 4)
	require.Len(t, gids, 4)
	return uids, gids
}

func same(s []string) bool {
	for _, v := range s {
		if v != s[0] {
			return false
		}
	}
	return true
}

// TestRendererRunsAsItsOwnID checks, as root, that each live renderer runs
// as a host uid and gid of its own from Config.RendererIDs, neither root
// nor the broker's, with no supplementary group, and is 0 inside its user
// namespace; that an id is reused only after its renderer was reaped; and
// that a range smaller than MaxRenderers is refused. As an ordinary user
// it checks what SECURITY.md says instead: renderers run as the broker's
// uid.
func TestRendererRunsAsItsOwnID(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if os.Geteuid() != 0 {
		b := newBroker(t, policy.Strict(), func(c *broker.Config) { c.RendererIDs = broker.IDRange{First: 200000, Count: 64} })
		r, err := b.Acquire(ctx, "https://a.example", "")
		require.NoError(t, err)
		uids, gids := hostIDs(t, r)
		assert.Equal(t, []string{strconv.Itoa(os.Getuid())}, uids[:1], "an ordinary broker's renderer runs as its uid")
		assert.Equal(t, []string{strconv.Itoa(os.Getgid())}, gids[:1])
		return
	}
	ids := broker.IDRange{First: 1879048192 + 4096, Count: 2}
	b := newBroker(t, policy.Strict(), func(c *broker.Config) { c.RendererIDs = ids; c.MaxRenderers = 2 })
	acquire := func(origin string) (*broker.Renderer, int) {
		r, err := b.Acquire(ctx, origin, "")
		require.NoError(t, err)
		uids, gids := hostIDs(t, r)
		require.True(t, same(uids), "uids %v", uids)
		require.Equal(t, uids, gids, "gid is the uid's number")
		id, err := strconv.Atoi(uids[0])
		require.NoError(t, err)
		assert.NotZero(t, id)
		assert.NotEqual(t, os.Getuid(), id)
		assert.GreaterOrEqual(t, id, int(ids.First))
		assert.Less(t, id, int(ids.First+ids.Count))
		groups, err := procStatus(r.PID(), "Groups:")
		require.NoError(t, err)
		assert.Empty(t, groups, "supplementary groups of a renderer")
		got, err := attempt(t, r, "uid")
		require.NoError(t, err)
		assert.Equal(t, "0 0", got, "uid and gid inside its user namespace")
		return r, id
	}
	a, idA := acquire("https://a.example")
	_, idB := acquire("https://b.example")
	assert.NotEqual(t, idA, idB, "two live renderers share a host id")

	// Both ids are taken: the next renderer gets a's id once a has been
	// reaped (Release returns after the reap).
	b.Release("https://a.example", "")
	select {
	case <-a.Done():
	default:
		t.Fatal("Release returned before the renderer was reaped")
	}
	_, idC := acquire("https://c.example")
	assert.Equal(t, idA, idC)

	_, err := broker.New(ctx, broker.Config{Policy: policy.Strict(), RendererIDs: broker.IDRange{First: 1879048192, Count: 1}, MaxRenderers: 2})
	require.ErrorContains(t, err, "fewer than MaxRenderers 2")
	_, err = broker.New(ctx, broker.Config{Policy: policy.Strict(), RendererIDs: broker.IDRange{First: 65000, Count: 1000}})
	require.ErrorContains(t, err, "overflow id")
}

// threadPeak follows a renderer's thread count (the kernel's Threads:
// line) until stop is closed, and returns the highest it saw.
func threadPeak(pid int, stop <-chan struct{}) <-chan int {
	out := make(chan int, 1)
	go func() {
		peak := 0
		defer func() { out <- peak }()
		for {
			if f, err := procStatus(pid, "Threads:"); err == nil && len(f) == 1 {
				if n, err := strconv.Atoi(f[0]); err == nil && n > peak {
					peak = n
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Microsecond):
			}
		}
	}()
	return out
}

// TestThreadBombEndsAtThreadLimit runs thread bombs in real, locked
// renderers, two at a time: each goroutine locks a thread of its own until
// a limit stops it. "threads" leaves the runtime's own thread limit, set
// just below RLIMIT_NPROC, in place; "threads-unguarded" lifts it first
// (debug.SetMaxThreads(100000)), as a compromised renderer would, so that
// only the kernel stops it. Either way, as root (each renderer its own
// host uid) and as an ordinary user (both renderers the broker's uid),
// each renderer ends as ExitThreadLimit with no more threads than the
// policy's limit, the other renderer's bomb notwithstanding.
func TestThreadBombEndsAtThreadLimit(t *testing.T) {
	for _, action := range []string{"threads", "threads-unguarded"} {
		t.Run(action, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			p := policy.Strict()
			b := newBroker(t, p)
			var wg sync.WaitGroup
			for _, origin := range []string{"https://a.example", "https://b.example"} {
				r, err := b.Acquire(ctx, origin, "")
				require.NoError(t, err)
				wg.Add(1)
				go func() {
					defer wg.Done()
					stop := make(chan struct{})
					peak := threadPeak(r.PID(), stop)
					_, err := attempt(t, r, action)
					close(stop)
					n := <-peak
					var ee *broker.ExitError
					if assert.ErrorAs(t, err, &ee, origin) {
						assert.Equal(t, broker.ExitThreadLimit, ee.Reason, "%s: %v", origin, ee)
					}
					// The sampler can miss the peak on a loaded machine
					// (the guarded bomb dies within a millisecond of it),
					// never overcount it: an upper bound only. That the
					// bomb reached a limit is the reason's to prove.
					assert.LessOrEqual(t, n, int(p.Limits.Threads), "%s: threads", origin)
					t.Logf("%s: peak %d threads, %v", origin, n, err)
				}()
			}
			wg.Wait()
		})
	}
}
