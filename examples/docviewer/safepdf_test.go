package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/examples/docviewer/internal/textpdf"
	"github.com/sandkit/sandkit/examples/docviewer/render"
)

// TestConvertSafePixels: a text PDF converted at the default resolution
// through the sandbox opens in pdfinfo with its page count, and every page
// of the safe PDF, drawn by MuPDF, is the page MuPDF draws from the
// original: exactly with -lossless; by default with black and white
// exact and every other pixel (the anti-aliased edges) within 64 levels;
// with -small, thresholded at mid-gray. The sizes bound the encoder: a
// regression to 8-bit RGB (~3x the gray size), or of the default to 8-bit
// gray, fails them.
func TestConvertSafePixels(t *testing.T) {
	const pages = 3
	dir := t.TempDir()
	in := filepath.Join(dir, "paper.pdf")
	orig := textpdf.Generate(pages)
	require.NoError(t, os.WriteFile(in, orig, 0o644))

	convertTo := func(out string, flags ...string) []byte {
		var stderr bytes.Buffer
		args := append(append([]string{"convert"}, flags...), in, out)
		require.Equal(t, 0, run(context.Background(), args, &stderr), stderr.String())
		require.Equal(t, pages, pdfinfoPages(t, out))
		b, err := os.ReadFile(out)
		require.NoError(t, err)
		return b
	}
	def := convertTo(filepath.Join(dir, "default.pdf"))
	lossless := convertTo(filepath.Join(dir, "lossless.pdf"), "-lossless")
	small := convertTo(filepath.Join(dir, "small.pdf"), "-small")
	ratio := func(b []byte) float64 { return float64(len(b)) / float64(len(orig)) }
	t.Logf("original %d B, safe %d B (%.1fx), -lossless %d B (%.1fx), -small %d B (%.1fx)", len(orig), len(def), ratio(def), len(lossless), ratio(lossless), len(small), ratio(small))
	assert.Less(t, len(lossless), pages*190_000, "lossless: gray text pages measured ~170 KB")
	assert.Less(t, len(def), len(lossless)*2/3, "default: four levels")
	assert.Less(t, len(small), len(lossless)/3)

	want, err := render.Open(orig, render.DefaultLimits())
	require.NoError(t, err)
	defer want.Close()
	for name, pdf := range map[string][]byte{"default": def, "lossless": lossless, "small": small} {
		got, err := render.Open(pdf, render.DefaultLimits())
		require.NoError(t, err)
		for p := range pages {
			w, _, err := want.Render(context.Background(), p, 150)
			require.NoError(t, err)
			g, _, err := got.Render(context.Background(), p, 150)
			require.NoError(t, err)
			require.Equal(t, w.Bounds(), g.Bounds())
			diff := 0
			for i := 0; i < len(w.Pix); i += 4 {
				v := w.Pix[i] // gray page: R = G = B
				if g.Pix[i] != g.Pix[i+1] || g.Pix[i+1] != g.Pix[i+2] {
					diff++
					continue
				}
				switch name {
				case "small":
					v = map[bool]byte{true: 255, false: 0}[v >= 128]
				case "default":
					if v != 0 && v != 255 && abs(int(g.Pix[i])-int(v)) <= 64 {
						continue
					}
				}
				if g.Pix[i] != v {
					diff++
				}
			}
			assert.Zero(t, diff, "%s page %d: pixels differing from the original's", name, p+1)
		}
		got.Close()
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

// TestConvertQuality: -quality stores the comic's colour pages as JPEG;
// without it they stay lossless Flate (not photographic: few colours, long
// runs).
func TestConvertQuality(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		flags      []string
		jpeg, zlib int // image streams of each kind
	}{
		{nil, 0, 3},
		{[]string{"-quality", "50"}, 3, 0},
	} {
		out := filepath.Join(dir, "out.pdf")
		var stderr bytes.Buffer
		args := append(append([]string{"convert", "-dpi", "72"}, tt.flags...), "testdata/valid/comic.cbz", out)
		require.Equal(t, 0, run(context.Background(), args, &stderr), stderr.String())
		assert.Equal(t, 3, pdfinfoPages(t, out))
		b, err := os.ReadFile(out)
		require.NoError(t, err)
		assert.Equal(t, tt.jpeg, bytes.Count(b, []byte("/Filter /DCTDecode")), "%v", tt.flags)
		assert.Equal(t, tt.zlib, bytes.Count(b, []byte("/ColorSpace /DeviceRGB /BitsPerComponent 8 /Filter /FlateDecode /DecodeParms << /Predictor 15")), "%v", tt.flags)
	}
}
