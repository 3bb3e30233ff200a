// Package spawnbench is the cold-spawn measurement shared by the broker's
// BenchmarkSpawnToReady and the comparison benchmarks of internal/bench,
// so that the two measure exactly the same thing.
package spawnbench

import (
	"context"
	"sort"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/internal/testrenderer"
)

// Cold measures the cold path once per op: br.Acquire of an origin it has
// never seen (new namespaces, exec, lockdown, ready, bind) and a first
// Ping. The renderer is closed and reaped outside the timer. It reports
// the median (ReportMedian): the first spawns pay for page cache, and the
// tail follows the machine's load.
func Cold(b *testing.B, br *broker.Broker) {
	ctx := context.Background()
	req := wrapperspb.Bytes([]byte("ping"))
	var lat []time.Duration
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		r, err := br.Acquire(ctx, "o"+strconv.Itoa(i), "")
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := broker.Call(ctx, r, testrenderer.Ping, req); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
		b.StopTimer()
		r.Close()
		<-r.Done()
		b.StartTimer()
	}
	ReportMedian(b, lat)
}

// ReportMedian reports the median of lat, in microseconds, as the metric
// median-us. It sorts lat.
func ReportMedian(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "median-us")
}
