package sandboxed

import (
	"context"
	"fmt"
	"image/png"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/examples/docviewer/docerr"
	"github.com/sandkit/sandkit/examples/docviewer/docipc"
	"github.com/sandkit/sandkit/examples/docviewer/docpb"
	"github.com/sandkit/sandkit/examples/docviewer/library"
)

// TestQueuedPageKeepsItsRenderer: a page request that has its document's
// renderer and waits for its turn (behind the document's other pages, or
// for the CPU on a loaded machine) must not lose the renderer to another
// document's request for a slot. Here the wait is a second, four times the
// broker's eviction grace, and the only slot is wanted by another
// document: that request waits, and the page is drawn. Before the backend
// held the renderer across the wait, the other request evicted it and the
// page failed with "renderer idle timeout: evicted to make room".
func TestQueuedPageKeepsItsRenderer(t *testing.T) {
	b := newBackend(t, func(c *Config) { c.MaxRenderers = 1 }, "valid/multipage.pdf=a.pdf", "valid/multipage.pdf=b.pdf")
	ctx := context.Background()
	da, err := b.lookup(library.IDOf("a.pdf"))
	require.NoError(t, err)
	c, _, release, err := b.open(ctx, da) // what renderOnce does before its turn
	require.NoError(t, err)

	other := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
		defer cancel()
		_, err := b.RenderPage(ctx, library.IDOf("b.pdf"), 0, 36)
		other <- err
	}()
	time.Sleep(time.Second)
	_, _, err = broker.Call(ctx, c.r, docipc.Render, &docpb.RenderRequest{Page: 0, Dpi: 36})
	require.NoError(t, err, "the page's renderer was taken while the page waited for its turn")
	require.ErrorIs(t, <-other, context.DeadlineExceeded, "the other document waits for the slot")
	release()

	p, err := b.RenderPage(ctx, library.IDOf("b.pdf"), 0, 36)
	require.NoError(t, err, "once the page is done, the other document gets the slot")
	p.Release()
	<-c.r.Done()
	assert.Equal(t, broker.ExitIdle, c.r.Err().Reason)
	assert.Equal(t, uint64(1), b.Load().Evicted)
}

// TestQueueBound: past MaxQueue waiting requests, a request fails at once
// as docerr.ErrBusy (the web UI's 503), and Load counts it.
func TestQueueBound(t *testing.T) {
	b := newBackend(t, func(c *Config) { c.MaxRenderers = 1; c.MaxQueue = 1 }, "valid/multipage.pdf")
	ctx := context.Background()
	id := library.IDOf("multipage.pdf")
	d, err := b.lookup(id)
	require.NoError(t, err)
	done, err := b.turns.enter(ctx, d) // the one request being served
	require.NoError(t, err)

	queued := make(chan error, 1)
	go func() {
		p, err := b.RenderPage(ctx, id, 0, 36)
		if err == nil {
			p.Release()
		}
		queued <- err
	}()
	require.Eventually(t, func() bool { return b.Load().Queued == 1 }, 10*time.Second, 5*time.Millisecond)
	_, err = b.RenderPage(ctx, id, 1, 36)
	require.ErrorIs(t, err, docerr.ErrBusy)
	assert.Contains(t, err.Error(), "1 requests already wait for a renderer")
	l := b.Load()
	assert.Equal(t, 1, l.Active)
	assert.Equal(t, 1, l.Queued)
	assert.Equal(t, uint64(1), l.Rejected)

	done()
	require.NoError(t, <-queued, "the queued request is served once the turn is free")
	assert.Zero(t, b.Load().Queued)
}

// TestRegionUnmappedWhenRendererEnds: the broker's mapping of a page
// region goes when its renderer goes (here, at the idle timeout), not when
// the document is next opened, which may be never. Before, after a load
// over many documents the viewer kept every evicted renderer's region
// mapped and resident until exit.
func TestRegionUnmappedWhenRendererEnds(t *testing.T) {
	b := newBackend(t, func(c *Config) { c.IdleTimeout = 300 * time.Millisecond }, "valid/multipage.pdf")
	p, err := b.RenderPage(context.Background(), library.IDOf("multipage.pdf"), 0, 36)
	require.NoError(t, err)
	p.Release()
	require.Equal(t, 1, regionMappings(t))
	require.Eventually(t, func() bool { return len(b.b.Renderers()) == 0 }, 10*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return regionMappings(t) == 0 }, 5*time.Second, 10*time.Millisecond, "page region still mapped after its renderer ended")
}

// regionMappings counts this process's mappings of shared memory the
// broker made for renderers.
func regionMappings(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/maps")
	require.NoError(t, err)
	return strings.Count(string(b), "memfd:sandkit-shm")
}

// TestLoadNeverFailsValidPages: more documents than MaxRenderers, more
// clients than renderers, each client encoding its pages as the web server
// does (CPU-bound work in every client at once): every page of every valid
// document comes back.
func TestLoadNeverFailsValidPages(t *testing.T) {
	const docs, clients, requests = 6, 12, 64
	var samples []string
	for i := range docs {
		samples = append(samples, fmt.Sprintf("valid/multipage.pdf=doc%02d.pdf", i))
	}
	b := newBackend(t, func(c *Config) { c.MaxRenderers = 2; c.WarmPool = 1 }, samples...)
	// Generous: only a hang may fail it (the race detector makes the
	// encoding slow, and the machine is shared).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var mu sync.Mutex
	var failures []error
	work := make(chan int)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for i := range work {
				rng := rand.New(rand.NewPCG(uint64(i), 1))
				id := library.IDOf(fmt.Sprintf("doc%02d.pdf", rng.IntN(docs)))
				p, err := b.RenderPage(ctx, id, rng.IntN(20), 36)
				if err != nil {
					mu.Lock()
					failures = append(failures, err)
					mu.Unlock()
					continue
				}
				png.Encode(io.Discard, p.Image)
				p.Release()
			}
		})
	}
	for i := range requests {
		work <- i
	}
	close(work)
	wg.Wait()
	require.NoError(t, ctx.Err())
	assert.Empty(t, failures)
	l := b.Load()
	assert.Zero(t, l.Rejected)
	assert.Positive(t, l.Evicted, "the test must make documents compete for renderers")
	t.Logf("load: %+v", l)
}

// TestLoadCountsViolationsBySyscall: a renderer killed by the seccomp
// monitor is counted under the system call it tried.
func TestLoadCountsViolationsBySyscall(t *testing.T) {
	b := newBackend(t, nil, "valid/multipage.pdf=violation.pdf")
	_, err := b.RenderPage(context.Background(), library.IDOf("violation.pdf"), 0, 36)
	require.ErrorIs(t, err, docerr.ErrSandbox)
	require.Eventually(t, func() bool { return b.Load().Violations["socket"] == 1 }, 5*time.Second, 5*time.Millisecond, "%+v", b.Load())
	l := b.Load()
	assert.Equal(t, uint64(1), l.Exits[string(broker.ExitViolation)])
	assert.Equal(t, uint64(1), l.RenderersSpawned)
	assert.Zero(t, l.RenderersAlive)
}

// regionSizes lists the sizes of this process's mappings of renderers'
// shared memory.
func regionSizes(t *testing.T) []int64 {
	b, err := os.ReadFile("/proc/self/maps")
	require.NoError(t, err)
	var sizes []int64
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, "memfd:sandkit-shm") {
			continue
		}
		var lo, hi int64
		_, err := fmt.Sscanf(line, "%x-%x", &lo, &hi)
		require.NoError(t, err)
		sizes = append(sizes, hi-lo)
	}
	return sizes
}

// TestRegionSizedToPages: a renderer's page region is as large as the
// pages drawn need (from the ladder of halvings of the largest), not the
// 128 MiB the limits allow; a larger page replaces it with a larger one,
// and the old one is unmapped.
func TestRegionSizedToPages(t *testing.T) {
	b := newBackend(t, nil, "valid/multipage.pdf")
	id := library.IDOf("multipage.pdf")
	for _, tc := range []struct {
		dpi  float64
		want int64
	}{
		{36, 1 << 20},   // 306x396 px: 0.5 MB
		{72, 2 << 20},   // 612x792 px: 1.9 MB
		{36, 2 << 20},   // a smaller page keeps the region
		{150, 16 << 20}, // 1275x1650 px: 8.4 MB
	} {
		p, err := b.RenderPage(context.Background(), id, 0, tc.dpi)
		require.NoError(t, err)
		p.Release()
		assert.Equal(t, []int64{tc.want}, regionSizes(t), "%g dpi", tc.dpi)
	}
}

func TestRegionSize(t *testing.T) {
	const max = 128 << 20
	for _, tc := range []struct{ need, want int64 }{
		{1, 1 << 20},
		{1 << 20, 1 << 20},
		{1<<20 + 1, 2 << 20},
		{8415000, 16 << 20},
		{64<<20 + 1, max},
		{max, max},
	} {
		assert.Equal(t, tc.want, regionSize(tc.need, max), "need %d", tc.need)
	}
	// A limit that is no power of two: steps round up to whole pages and
	// never pass the limit.
	assert.Equal(t, int64(100_000_000), regionSize(60_000_000, 100_000_000))
	assert.Equal(t, int64(50_003_968), regionSize(40_000_000, 100_000_000))
}
