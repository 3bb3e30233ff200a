package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/sandkit/sandkit/examples/docviewer/convert"
	"github.com/sandkit/sandkit/examples/docviewer/internal/textpdf"
	"github.com/sandkit/sandkit/examples/docviewer/library"
	"github.com/sandkit/sandkit/examples/docviewer/pdfout"
)

// BenchmarkConvert writes the safe PDF of a generated 10-page text
// document at 150 dpi through each backend, the default encoding and
// -small: rendering, the broker's copy and the PDF encoding, as `convert`
// does per document (one op = 10 pages; the session is opened before the
// timer starts).
func BenchmarkConvert(b *testing.B) {
	const pages = 10
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "paper.pdf"), textpdf.Generate(pages), 0o644); err != nil {
		b.Fatal(err)
	}
	lib, err := library.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	doc := library.IDOf("paper.pdf")
	out := filepath.Join(b.TempDir(), "safe.pdf")
	for _, bb := range benchBackends {
		for _, mode := range []struct {
			name string
			opt  pdfout.Options
		}{{"lossless", pdfout.Options{}}, {"small", pdfout.Options{Small: true}}} {
			b.Run(bb.name+"/"+mode.name, func(b *testing.B) {
				be, closer := bb.new(b, lib)
				defer closer.Close()
				if _, err := be.PageCount(context.Background(), doc); err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				for range b.N {
					if _, err := convert.ToPDF(context.Background(), be, doc, out, benchDPI, mode.opt, nil); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*pages)/b.Elapsed().Seconds(), "pages/s")
			})
		}
	}
}
