package main

import (
	"strings"
	"testing"
)

const sample = `goos: linux
pkg: github.com/sandkit/sandkit/internal/bench
BenchmarkSpawn/sandkit-cold-2   20  4000000 ns/op  4000 median-us
BenchmarkSpawn/sandkit-cold-2   20  4000000 ns/op  6000 median-us
BenchmarkSpawn/sandkit-cold-2   20  4000000 ns/op  5000 median-us
BenchmarkSpawn/bwrap-2          20  4000000 ns/op  5500 median-us
BenchmarkSpawn/sandkit-cold-dedicated-2   20  4000000 ns/op  5200 median-us
BenchmarkSpawn/sandkit-cold-dedicated-2   20  4000000 ns/op  4900 median-us
BenchmarkSpawn/sandkit-cold-dedicated-2   20  4000000 ns/op  4800 median-us
BenchmarkRoundTrip64/ipc-2      1000  30000 ns/op  231 B/op  3 allocs/op
BenchmarkRoundTrip64/raw-seqpacket-2  1000  15000 ns/op  0 B/op  0 allocs/op
--- BENCH: some log line
PASS
`

func TestParseAndRows(t *testing.T) {
	s := newSamples()
	if err := s.parse(strings.NewReader(sample)); err != nil {
		t.Fatal(err)
	}
	if v, n, ok := s.median("BenchmarkSpawn/sandkit-cold", "median-us"); !ok || n != 3 || v != 5000 {
		t.Fatalf("median = %v, %d, %v; want 5000 of 3", v, n, ok)
	}
	got := map[string]row{}
	for _, r := range rows(s) {
		got[r.what] = r
	}
	if r := got["cold spawn vs bubblewrap (spawn to first reply, median; both run this test binary)"]; r.st != met || !strings.HasPrefix(r.value, "0.91×") {
		t.Errorf("cold vs bwrap: %+v", r)
	}
	if r := got["cold spawn, absolute (Acquire + first Ping, median), dedicated static renderer binary"]; r.st != met || r.value != "4.9 ms" {
		t.Errorf("cold, dedicated: %+v", r)
	}
	if r := got["cold spawn, absolute, the 18 MB test binary re-executed as its own renderer"]; r.st != info || r.value != "5 ms" {
		t.Errorf("cold, self-exec: %+v", r)
	}
	if r := got["64-byte round trip: ipc vs raw SEQPACKET"]; r.st != missed || !strings.HasPrefix(r.value, "2.00×") {
		t.Errorf("ipc vs raw: %+v", r)
	}
	if r := got["64-byte round trip: gRPC (unix socket) vs ipc"]; r.st != missing {
		t.Errorf("grpc: %+v", r)
	}
}

func TestReplaceGeneratedKeepsHandWrittenSections(t *testing.T) {
	doc := "# Benchmarks\n\n## ipc\n\nhand-written\n\n## docviewer\n\nmore\n"
	sec := beginMarker + "\ngenerated 1\n" + endMarker + "\n"
	once, err := replaceGenerated(doc, sec)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(once, "# Benchmarks\n\n"+sec) || !strings.HasSuffix(once, "## ipc\n\nhand-written\n\n## docviewer\n\nmore\n") {
		t.Fatalf("first insertion:\n%s", once)
	}
	sec2 := beginMarker + "\ngenerated 2\n" + endMarker + "\n"
	twice, err := replaceGenerated(once, sec2)
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Replace(once, sec, sec2, 1); twice != want {
		t.Fatalf("replacement:\n%s\nwant:\n%s", twice, want)
	}
	if _, err := replaceGenerated("x "+beginMarker, sec); err == nil {
		t.Fatal("a lone BEGIN marker was accepted")
	}
}
