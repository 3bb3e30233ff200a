package ipc

import (
	"context"
	"testing"
)

// BenchmarkInProcessRoundTrip is BenchmarkRoundTrip with both ends in one
// process (a Pair): the same work, minus waking an idle process.
func BenchmarkInProcessRoundTrip(b *testing.B) {
	a, _ := newPair(b, nil, testMux(), Limits{})
	req := &testMsg{Value: make([]byte, 60)}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Call(context.Background(), a, mEcho, req); err != nil {
			b.Fatal(err)
		}
	}
}
