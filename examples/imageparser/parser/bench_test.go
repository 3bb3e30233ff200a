package parser_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandkit/sandkit/examples/imageparser/internal/benchdata"
	"github.com/sandkit/sandkit/examples/imageparser/parser"
	"github.com/sandkit/sandkit/examples/imageparser/thumb"
	"github.com/sandkit/sandkit/examples/imageparser/verify"
)

// BenchmarkThumbnail measures one file end to end — read, decode, scale,
// check, write the PNG — in process (the baseline, no sandbox) and through
// the sandbox: a renderer spawned per file (cold); a renderer per file
// taken from a warm pool (pooled: the spawn leaves the critical path but
// still costs a core); warm renderers reused for the files of one
// directory (warm, Options.ReuseByDirectory: every iteration reads the
// same file, so one renderer serves them all). docs/benchmarks.md has the
// figures.
//
// Besides wall time it reports cpu-ns/op: the CPU time of this process
// plus that of its reaped children (the renderers) per file. On a shared,
// loaded machine wall time mostly measures the neighbours; CPU time shows
// what the sandbox itself costs. (Renderers still in the warm pool when
// the benchmark ends are not reaped yet, so their start-up is missing
// from the warm figure: about two spawns' worth over the whole run.)
func BenchmarkThumbnail(b *testing.B) {
	for _, in := range []struct {
		name string
		gen  func() []byte
	}{
		{"jpeg12MP", benchdata.JPEG12MP},
		{"png1MP", benchdata.PNG1MP},
		// The sandbox's fixed cost per file: decoding one pixel is free.
		{"png1x1", func() []byte { return mustRead(b, filepath.Join(corpusDir, "png_1x1.png")) }},
	} {
		b.Run(in.name, func(b *testing.B) {
			path := filepath.Join(b.TempDir(), in.name)
			if err := os.WriteFile(path, in.gen(), 0o644); err != nil {
				b.Fatal(err)
			}
			b.Run("inprocess", func(b *testing.B) { waitIdle(b); benchInProcess(b, path) })
			b.Run("sandboxed-cold", func(b *testing.B) { waitIdle(b); benchSandboxed(b, path, 0, false) })
			b.Run("sandboxed-pooled", func(b *testing.B) { waitIdle(b); benchSandboxed(b, path, 2, false) })
			b.Run("sandboxed-warm", func(b *testing.B) { waitIdle(b); benchSandboxed(b, path, 1, true) })
		})
	}
}

// benchInProcess does what the command does for one file, without the
// sandbox: the same reads, thumb calls, checks and PNG encoding.
func benchInProcess(b *testing.B, path string) {
	out := b.TempDir()
	budget := thumb.DefaultBudget()
	b.ReportAllocs()
	defer reportCPU(b)()
	for i := 0; b.Loop(); i++ {
		data, err := os.ReadFile(path)
		if err != nil {
			b.Fatal(err)
		}
		info, err := thumb.Probe(data, budget)
		if err != nil {
			b.Fatal(err)
		}
		w, h := thumb.ThumbnailSize(info, parser.MaxSide)
		dst := make([]byte, 4*w*h)
		if _, _, _, err := thumb.ThumbnailInto(dst, data, budget, parser.MaxSide); err != nil {
			b.Fatal(err)
		}
		img, err := verify.Pixels(w, h, dst, parser.MaxSide)
		if err != nil {
			b.Fatal(err)
		}
		f, err := os.Create(verify.OutputName(out, path, i))
		if err != nil {
			b.Fatal(err)
		}
		if err := verify.WritePNG(f, img); err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

func benchSandboxed(b *testing.B, path string, warm int, reuse bool) {
	p := newParser(b, func(o *parser.Options) { o.WarmPool, o.ReuseByDirectory = warm, reuse })
	ctx := context.Background()
	b.ReportAllocs()
	defer reportCPU(b)()
	for i := 0; b.Loop(); i++ {
		if _, err := p.Thumbnail(ctx, i, path); err != nil {
			b.Fatal(err)
		}
	}
}

// waitIdle waits (untimed, at most 10 s) until the CPUs have been at
// least 90% idle for 200 ms. The kernel tears a renderer's network
// namespace down later, in a worker thread, so a variant that spawned
// dozens of renderers leaves work behind that would otherwise be charged
// to whichever variant runs next.
func waitIdle(b *testing.B) {
	b.Helper()
	idle := func() (idle, total uint64) {
		data, err := os.ReadFile("/proc/stat")
		if err != nil {
			b.Fatal(err)
		}
		line, _, _ := strings.Cut(string(data), "\n")
		for i, f := range strings.Fields(line)[1:] {
			n, err := strconv.ParseUint(f, 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			total += n
			if i == 3 || i == 4 { // idle, iowait
				idle += n
			}
		}
		return idle, total
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		i0, t0 := idle()
		time.Sleep(200 * time.Millisecond)
		i1, t1 := idle()
		if t1 > t0 && float64(i1-i0)/float64(t1-t0) >= 0.9 {
			return
		}
	}
	b.Log("CPUs not idle after 10 s; measuring anyway")
}

// reportCPU starts measuring CPU time; the function it returns reports
// cpu-ns/op.
func reportCPU(b *testing.B) func() {
	start := cpuTime(b)
	return func() {
		b.ReportMetric(float64((cpuTime(b)-start).Nanoseconds())/float64(b.N), "cpu-ns/op")
	}
}

// cpuTime is the user and system time of this process and its reaped
// children.
func cpuTime(b *testing.B) time.Duration {
	var total time.Duration
	for _, who := range []int{syscall.RUSAGE_SELF, syscall.RUSAGE_CHILDREN} {
		var ru syscall.Rusage
		if err := syscall.Getrusage(who, &ru); err != nil {
			b.Fatal(err)
		}
		total += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return total
}

func mustRead(b *testing.B, path string) []byte {
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	return data
}
