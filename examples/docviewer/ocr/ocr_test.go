package ocr_test

import (
	"context"
	"errors"
	"image"
	"log/slog"
	"os"
	"os/exec"
	"slices"
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
	e, err := ocr.New(context.Background(), ocr.Config{Lang: "eng", Policy: p,
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))})
	require.NoError(t, err)
	t.Cleanup(func() { e.Close() })
	return e
}

func recognize(t *testing.T, e *ocr.Engine, img *image.RGBA) (*ocr.Page, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	return e.Recognize(ctx, "doc", 0, img)
}

// TestRecognize: Tesseract, under its policy with every layer in force,
// finds the words of a page the test rendered from a text PDF: at least
// 95 % of those pdftotext extracts from the original.
func TestRecognize(t *testing.T) {
	needTesseract(t)
	img, want := textPage(t)
	e := newEngine(t, nil)
	start := time.Now()
	pg, err := recognize(t, e, img)
	require.NoError(t, err)
	t.Logf("%d words in %v", len(pg.Words), time.Since(start))
	for _, l := range e.Policy().Requested() {
		assert.True(t, pg.Layers.Active(l), "layer %s not in force: %v", l, pg.Layers)
	}
	got := map[string]int{}
	for _, w := range pg.Words {
		got[w.Text]++
		assert.True(t, w.Box.In(img.Bounds()), "%v outside the page", w.Box)
	}
	var missing []string
	for _, w := range want {
		if got[w] == 0 {
			missing = append(missing, w)
		} else {
			got[w]--
		}
	}
	assert.LessOrEqual(t, len(missing)*20, len(want), "missing %d of %d words: %q", len(missing), len(want), missing)
}

// TestRecognizeViolation: a Tesseract that makes a syscall its policy
// lacks is killed by the violation monitor, which names it, and
// Recognize fails with that exit.
func TestRecognizeViolation(t *testing.T) {
	needTesseract(t)
	img, _ := textPage(t)
	tessdata, err := ocr.Check(ocr.DefaultPath, "eng")
	require.NoError(t, err)
	p := ocr.Policy(tessdata)
	// glibc asks sysinfo for the memory size before the page is read.
	p.Seccomp.Allow = slices.DeleteFunc(p.Seccomp.Allow, func(s string) bool { return s == "sysinfo" })
	e := newEngine(t, p)
	pg, err := recognize(t, e, img)
	require.Error(t, err)
	assert.Nil(t, pg)
	var ee *broker.ExitError
	require.True(t, errors.As(err, &ee), "%v", err)
	assert.Equal(t, broker.ExitViolation, ee.Reason)
	assert.Equal(t, "sysinfo", ee.Syscall)
	assert.Equal(t, "disallowed by the seccomp policy", ee.Detail)
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name, path, lang, want string
	}{
		{"path as language", ocr.DefaultPath, "../../etc/passwd", "not a Tesseract language name"},
		{"option as language", ocr.DefaultPath, "-psm", "not a Tesseract language name"},
		{"empty", ocr.DefaultPath, "", "not a Tesseract language name"},
		{"no binary", "/nonexistent/tesseract", "eng", "/nonexistent/tesseract not found: install Tesseract and its eng language data: apt-get install tesseract-ocr tesseract-ocr-eng"},
		{"no data", ocr.DefaultPath, "eng+qqq", "no language data for qqq"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.path == ocr.DefaultPath {
				needTesseract(t)
			}
			_, err := ocr.Check(tc.path, tc.lang)
			require.Error(t, err)
			assert.True(t, errors.Is(err, ocr.ErrUnavailable), "%v", err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}
