package broker_test

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/internal/spawnbench"
	"github.com/sandkit/sandkit/internal/testrenderer"
)

// BenchmarkSpawnToReady measures a cold start: exec of the renderer to a
// fully locked-down renderer bound to an origin and answering a ping.
// self-exec re-executes this test binary as the renderer (large, linked
// dynamically); dedicated-static uses a small statically linked renderer
// binary (internal/testrenderer/cmd/testrenderer, built here), which is
// what a program ships when cold spawns matter.
func BenchmarkSpawnToReady(b *testing.B) {
	b.Run("self-exec", func(b *testing.B) { benchSpawnToReady(b, "") })
	b.Run("dedicated-static", func(b *testing.B) {
		path, err := testrenderer.BuildDedicated(context.Background(), b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		benchSpawnToReady(b, path)
	})
}

func benchSpawnToReady(b *testing.B, path string) {
	spawnbench.Cold(b, newBroker(b, strict(), func(c *broker.Config) { c.MaxRenderers = 4; c.Path = path }))
}

// BenchmarkWarmAcquire measures taking a locked renderer from the warm
// pool and binding it to an origin. Acquire returns once the binding is
// sent; BenchmarkWarmAcquireFirstCall adds the first call, which is when
// the idle renderer's wakeup is paid.
func BenchmarkWarmAcquire(b *testing.B) {
	benchWarm(b, false)
}

// BenchmarkWarmAcquireFirstCall measures Acquire from the warm pool and a
// first 64-byte call: what a program waits for before its first result.
func BenchmarkWarmAcquireFirstCall(b *testing.B) {
	benchWarm(b, true)
}

func benchWarm(b *testing.B, call bool) {
	br := newBroker(b, strict(), func(c *broker.Config) { c.WarmPool = 1; c.MaxRenderers = 4 })
	ctx := context.Background()
	payload := wrapperspb.Bytes(make([]byte, 64))
	var lat []time.Duration
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		for len(br.Renderers()) == 0 || br.Renderers()[0].Bound {
			time.Sleep(time.Millisecond) // wait for the pool to refill
		}
		time.Sleep(20 * time.Millisecond) // let the fresh renderer go idle
		b.StartTimer()
		start := time.Now()
		r, err := br.Acquire(ctx, "o"+strconv.Itoa(i), "")
		if err != nil {
			b.Fatal(err)
		}
		if call {
			if _, _, err := broker.Call(ctx, r, testrenderer.Ping, payload); err != nil {
				b.Fatal(err)
			}
		}
		lat = append(lat, time.Since(start))
		b.StopTimer()
		r.Close()
		b.StartTimer()
	}
	spawnbench.ReportMedian(b, lat)
}

// BenchmarkIdleRSS reports the resident memory of an idle, locked renderer
// next to the same binary idle without any sandbox ("plain").
func BenchmarkIdleRSS(b *testing.B) {
	br := newBroker(b, strict())
	ctx := context.Background()
	var rss []float64
	for i := 0; b.Loop(); i++ {
		r, err := br.Acquire(ctx, "o"+strconv.Itoa(i), "")
		if err != nil {
			b.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
		rss = append(rss, float64(rssKiB(b, r.PID())))
		r.Close()
	}
	sort.Float64s(rss)
	b.ReportMetric(rss[len(rss)/2], "renderer-RSS-KiB")
	b.ReportMetric(float64(rssKiB(b, os.Getpid())), "broker-RSS-KiB")
}

func rssKiB(b testing.TB, pid int) int {
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(s), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

// BenchmarkCall measures one 64-byte call to a bound renderer.
func BenchmarkCall(b *testing.B) {
	br := newBroker(b, strict())
	ctx := context.Background()
	r, err := br.Acquire(ctx, "o", "")
	if err != nil {
		b.Fatal(err)
	}
	payload := wrapperspb.Bytes(make([]byte, 64))
	for b.Loop() {
		if _, _, err := broker.Call(ctx, r, testrenderer.Ping, payload); err != nil {
			b.Fatal(err)
		}
	}
}
