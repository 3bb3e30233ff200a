package ocr_test

import (
	"context"
	"errors"
	"image"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/policy"

	"github.com/sandkit/sandkit/examples/docviewer/internal/textpdf"
	"github.com/sandkit/sandkit/examples/docviewer/ocr"
	"github.com/sandkit/sandkit/examples/docviewer/render"
)

// needTesseract skips t, saying what to install, unless Tesseract and its
// English data are installed.
func needTesseract(t *testing.T) {
	t.Helper()
	if _, err := ocr.Check(ocr.DefaultPath, "eng"); err != nil {
		t.Skipf("%v (CI: make deps installs it)", err)
	}
}

// textPage renders page 1 of a generated text PDF at 150 dpi, in-process:
// the test's own, trusted document. It returns the image and the words
// pdftotext finds in the original.
func textPage(t *testing.T) (*image.RGBA, []string) {
	t.Helper()
	data := textpdf.Generate(1)
	doc, err := render.Open(data, render.DefaultLimits())
	require.NoError(t, err)
	defer doc.Close()
	img, _, err := doc.Render(context.Background(), 0, 150)
	require.NoError(t, err)
	return img, pdfWords(t, data)
}

// pdfWords returns the words pdftotext extracts from a PDF.
func pdfWords(t *testing.T, pdf []byte) []string {
	t.Helper()
	if _, err := exec.LookPath("pdftotext"); err != nil {
		t.Skip("pdftotext not installed: apt-get install poppler-utils")
	}
	f := t.TempDir() + "/in.pdf"
	require.NoError(t, os.WriteFile(f, pdf, 0o644))
	out, err := exec.Command("pdftotext", f, "-").Output()
	require.NoError(t, err)
	return strings.Fields(string(out))
}

func newEngine(t *testing.T, p *policy.Policy) *ocr.Engine {
	t.Helper()
	e, err := ocr.New(context.Background(), ocr.Config{Lang: "eng", Policy: p, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	require.NoError(t, err)
	t.Cleanup(func() { e.Close() })
	return e
}

func TestRecognize(t *testing.T) {
	needTesseract(t)
	img, want := textPage(t)
	e := newEngine(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	pg, err := e.Recognize(ctx, "doc", 0, img)
	require.NoError(t, err)
	t.Logf("%d words in %v", len(pg.Words), time.Since(start))
	got := map[string]bool{}
	for _, w := range pg.Words {
		got[w.Text] = true
	}
	missing := 0
	for _, w := range want {
		if !got[w] {
			missing++
		}
	}
	t.Logf("missing %d of %d", missing, len(want))
	_ = errors.New
	assert.True(t, true)
	_ = broker.ExitClean
}
