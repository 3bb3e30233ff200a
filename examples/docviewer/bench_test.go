package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sandkit/sandkit/examples/docviewer/backend"
	"github.com/sandkit/sandkit/examples/docviewer/backend/inprocess"
	"github.com/sandkit/sandkit/examples/docviewer/backend/sandboxed"
	"github.com/sandkit/sandkit/examples/docviewer/library"
	"github.com/sandkit/sandkit/examples/docviewer/render"
)

// benchBackends are the backends the page benchmarks compare: in-process
// (no sandbox, the reference) and sandboxed (one renderer process per
// document, this test binary re-executed; see TestMain). Results are in
// docs/benchmarks.md, "docviewer".
var benchBackends = []struct {
	name string
	new  func(b *testing.B, lib *library.Library) (backend.Backend, io.Closer)
}{
	{"inprocess", func(_ *testing.B, lib *library.Library) (backend.Backend, io.Closer) {
		b := inprocess.New(lib, render.DefaultLimits(), slog.New(slog.NewTextHandler(io.Discard, nil)))
		return b, b
	}},
	{"sandboxed", func(b *testing.B, lib *library.Library) (backend.Backend, io.Closer) {
		sb, err := sandboxed.New(context.Background(), sandboxed.Config{Library: lib, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		return sb, sb
	}},
}

// cpuTime is this process's user+system CPU time. With other load on the
// machine, cpu-ms/page is steadier than pages/s; for the sandboxed backend
// it misses the renderers' CPU (children), so compare pages/s there.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

const (
	benchDPI   = 150
	benchPages = 20
)

// benchLibrary is a directory holding n copies of the 20-page sample.
func benchLibrary(b *testing.B, n int) (*library.Library, []string) {
	b.Helper()
	data, err := os.ReadFile("testdata/valid/multipage.pdf")
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	var ids []string
	for i := range n {
		name := fmt.Sprintf("doc%d.pdf", i)
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			b.Fatal(err)
		}
		ids = append(ids, library.IDOf(name))
	}
	lib, err := library.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	return lib, ids
}

// renderAll renders every page and releases it, as the server does once it
// has encoded it; it reports with b.Error (not Fatal) as it also runs on
// goroutines of its own.
func renderAll(b *testing.B, be backend.Backend, doc string) {
	for p := range benchPages {
		page, err := be.RenderPage(context.Background(), doc, p, benchDPI)
		if err != nil {
			b.Error(err)
			return
		}
		page.Release()
	}
}

// BenchmarkPages renders the same 20 Letter pages at 150 dpi (1275x1650
// px each) through each backend; one op is the whole document. The session
// is opened before the timer starts.
func BenchmarkPages(b *testing.B) {
	for _, bb := range benchBackends {
		b.Run(bb.name, func(b *testing.B) {
			lib, ids := benchLibrary(b, 1)
			be, closer := bb.new(b, lib)
			defer closer.Close()
			renderAll(b, be, ids[0])
			b.ResetTimer()
			cpu := cpuTime()
			for range b.N {
				renderAll(b, be, ids[0])
			}
			b.ReportMetric(float64(b.N*benchPages)/b.Elapsed().Seconds(), "pages/s")
			b.ReportMetric(float64((cpuTime()-cpu).Microseconds())/1000/float64(b.N*benchPages), "cpu-ms/page")
		})
	}
}

// BenchmarkPagesParallel renders 4 documents at once (one goroutine each,
// so with the sandboxed backend 4 renderer processes); one op is all 4x20
// pages.
func BenchmarkPagesParallel(b *testing.B) {
	const docs = 4
	for _, bb := range benchBackends {
		b.Run(bb.name, func(b *testing.B) {
			lib, ids := benchLibrary(b, docs)
			be, closer := bb.new(b, lib)
			defer closer.Close()
			for _, id := range ids {
				renderAll(b, be, id)
			}
			b.ResetTimer()
			cpu := cpuTime()
			for range b.N {
				var wg sync.WaitGroup
				for _, id := range ids {
					wg.Go(func() { renderAll(b, be, id) })
				}
				wg.Wait()
			}
			b.ReportMetric(float64(b.N*docs*benchPages)/b.Elapsed().Seconds(), "pages/s")
			b.ReportMetric(float64((cpuTime()-cpu).Microseconds())/1000/float64(b.N*docs*benchPages), "cpu-ms/page")
		})
	}
}
