package office

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// benchDocs are the samples timed, with their pages.
var benchDocs = []struct {
	name  string
	pages int
}{
	{"text.docx", 3},
	{"text.odt", 3},
	{"sheet.xlsx", 2},
	{"slides.pptx", 4},
}

// BenchmarkToPDF times one sandboxed conversion per document: the sandbox,
// LibreOffice's start with a fresh profile, the conversion, the PDF read
// back. ms/page is the time per document over its pages.
func BenchmarkToPDF(b *testing.B) {
	if err := Available(); err != nil {
		b.Skip(err)
	}
	c, err := New(context.Background(), nil, 1)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for _, d := range benchDocs {
		b.Run(d.name, func(b *testing.B) {
			f, err := os.Open(filepath.Join("..", "testdata", "office", d.name))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			for b.Loop() {
				if _, err := c.ToPDF(context.Background(), "bench", f, d.name); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N)/float64(d.pages), "ms/page")
		})
	}
}

// BenchmarkUnsandboxed is the baseline: soffice --headless --convert-to
// pdf on the same files, unsandboxed, with a profile made once beforehand
// (LibreOffice's usual warm start).
func BenchmarkUnsandboxed(b *testing.B) {
	soffice, err := exec.LookPath("soffice")
	if err != nil {
		b.Skip(err)
	}
	profile := "-env:UserInstallation=file://" + b.TempDir()
	out := b.TempDir()
	warm := exec.Command(soffice, "--headless", "--norestore", profile, "--convert-to", "pdf", "--outdir", out,
		filepath.Join("..", "testdata", "office", "text.odt"))
	if o, err := warm.CombinedOutput(); err != nil {
		b.Fatalf("%v: %s", err, o)
	}
	for _, d := range benchDocs {
		b.Run(d.name, func(b *testing.B) {
			for b.Loop() {
				cmd := exec.Command(soffice, "--headless", "--norestore", profile, "--convert-to", "pdf", "--outdir", out,
					filepath.Join("..", "testdata", "office", d.name))
				if o, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("%v: %s", err, o)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N)/float64(d.pages), "ms/page")
		})
	}
}
