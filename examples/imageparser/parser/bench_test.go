package parser_test

import (
	"context"
	"os"
	"path/filepath"
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
			b.Run("inprocess", func(b *testing.B) { benchInProcess(b, path) })
			b.Run("sandboxed-cold", func(b *testing.B) { benchSandboxed(b, path, 0, false) })
			b.Run("sandboxed-pooled", func(b *testing.B) { benchSandboxed(b, path, 2, false) })
			b.Run("sandboxed-warm", func(b *testing.B) { benchSandboxed(b, path, 1, true) })
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
