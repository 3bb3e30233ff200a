package pdfout

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	fitz "github.com/gen2brain/go-fitz"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/examples/docviewer/render"
)

func testImage(w, h int, alpha uint8) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			// Premultiplied: colour channels never exceed alpha.
			c := color.RGBA{uint8(x % (int(alpha) + 1)), 0, uint8(y % (int(alpha) + 1)), alpha}
			img.SetRGBA(x, y, c)
		}
	}
	return img
}

func writePDF(t *testing.T, pages []*image.RGBA, dpi float64) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, p := range pages {
		require.NoError(t, w.AddPage(p, dpi))
	}
	require.NoError(t, w.Close())
	return buf.Bytes()
}

// TestXrefOffsets: every xref entry points at its "N 0 obj" and startxref
// at "xref".
func TestXrefOffsets(t *testing.T) {
	pdf := writePDF(t, []*image.RGBA{testImage(40, 30, 255), testImage(10, 70, 255)}, 72)
	m := regexp.MustCompile(`startxref\n(\d+)\n%%EOF\n$`).FindSubmatch(pdf)
	require.NotNil(t, m)
	xref, _ := strconv.Atoi(string(m[1]))
	require.True(t, bytes.HasPrefix(pdf[xref:], []byte("xref\n0 ")))
	entries := regexp.MustCompile(`(\d{10}) 00000 n\r\n`).FindAllSubmatch(pdf[xref:], -1)
	require.Len(t, entries, 2+2*4)
	for i, e := range entries {
		off, _ := strconv.Atoi(string(e[1]))
		want := fmt.Sprintf("%d 0 obj\n", i+1)
		assert.Equal(t, want, string(pdf[off:off+len(want)]), "object %d", i+1)
	}
}

func TestPageSizeAndPixels(t *testing.T) {
	// 300x150 px at 150 dpi is 144x72 pt; half-transparent red over white
	// comes back pink.
	img := image.NewRGBA(image.Rect(0, 0, 300, 150))
	for i := 0; i < len(img.Pix); i += 4 {
		copy(img.Pix[i:], []byte{128, 0, 0, 128})
	}
	pdf := writePDF(t, []*image.RGBA{img}, 150)

	d, err := render.Open(pdf, render.DefaultLimits())
	require.NoError(t, err)
	defer d.Close()
	b, err := d.PageBounds(0)
	require.NoError(t, err)
	assert.InDelta(t, 144, b.Width(), 0.01)
	assert.InDelta(t, 72, b.Height(), 0.01)
	out, _, err := d.Render(context.Background(), 0, 150)
	require.NoError(t, err)
	assert.Equal(t, img.Bounds(), out.Bounds())
	px := out.RGBAAt(150, 75)
	assert.InDelta(t, 255, int(px.R), 2)
	assert.InDelta(t, 127, int(px.G), 2)
	assert.InDelta(t, 127, int(px.B), 2)
}

// TestGoFitzReopens: an independent reading of the output through go-fitz's
// own API (fine for our own trusted output).
func TestGoFitzReopens(t *testing.T) {
	pdf := writePDF(t, []*image.RGBA{testImage(50, 50, 255), testImage(60, 20, 200), testImage(5, 5, 0)}, 96)
	doc, err := fitz.NewFromMemory(pdf)
	require.NoError(t, err)
	defer doc.Close()
	assert.Equal(t, 3, doc.NumPage())
	img, err := doc.ImageDPI(1, 96)
	require.NoError(t, err)
	assert.Equal(t, image.Rect(0, 0, 60, 20), img.Bounds())
}

func TestPdfinfo(t *testing.T) {
	pdfinfo, err := exec.LookPath("pdfinfo")
	if err != nil {
		t.Skip("pdfinfo not installed (apt-get install poppler-utils); CI installs it")
	}
	pdf := writePDF(t, []*image.RGBA{testImage(612, 792, 255), testImage(100, 100, 255)}, 72)
	path := filepath.Join(t.TempDir(), "out.pdf")
	require.NoError(t, os.WriteFile(path, pdf, 0o644))
	out, err := exec.Command(pdfinfo, path).CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Regexp(t, `(?m)^Pages:\s+2$`, string(out))
	assert.Regexp(t, `(?m)^Page size:\s+612 x 792 pts`, string(out))
	assert.NotContains(t, string(out), "Syntax Error")
	assert.NotContains(t, string(out), "Syntax Warning")
}

func TestAddPageErrors(t *testing.T) {
	tests := []struct {
		name string
		img  *image.RGBA
		dpi  float64
	}{
		{"empty", image.NewRGBA(image.Rectangle{}), 72},
		{"zero dpi", testImage(1, 1, 255), 0},
		{"negative dpi", testImage(1, 1, 255), -3},
		{"too big", testImage(1000, 1, 255), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := NewWriter(io.Discard)
			assert.Error(t, w.AddPage(tt.img, tt.dpi))
		})
	}
	assert.Error(t, NewWriter(io.Discard).Close(), "no pages")
}

type failWriter struct{ after int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.after -= len(p); f.after < 0 {
		return 0, errors.New("disk full")
	}
	return len(p), nil
}

func TestWriteErrorIsSticky(t *testing.T) {
	w := NewWriter(&failWriter{after: 10})
	err := w.AddPage(testImage(400, 400, 255), 72)
	if err == nil {
		err = w.Close()
	}
	require.ErrorContains(t, err, "disk full")
	assert.ErrorContains(t, w.AddPage(testImage(1, 1, 255), 72), "disk full")
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.pdf")

	require.NoError(t, WriteFileAtomic(path, func(w io.Writer) error {
		_, err := w.Write([]byte("first"))
		return err
	}))
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "first", string(got))

	// A failure half-way leaves the old file and no temporary behind.
	boom := errors.New("render failed")
	err = WriteFileAtomic(path, func(w io.Writer) error {
		w.Write([]byte("partial"))
		return boom
	})
	assert.ErrorIs(t, err, boom)
	got, _ = os.ReadFile(path)
	assert.Equal(t, "first", string(got))

	// And a failure on a new name leaves nothing at all.
	err = WriteFileAtomic(filepath.Join(dir, "new.pdf"), func(w io.Writer) error { return boom })
	assert.ErrorIs(t, err, boom)
	entries, _ := os.ReadDir(dir)
	require.Len(t, entries, 1, "%v", entries)
	assert.Equal(t, "out.pdf", entries[0].Name())

	assert.Error(t, WriteFileAtomic(filepath.Join(dir, "missing", "x.pdf"), func(io.Writer) error { return nil }))
}
