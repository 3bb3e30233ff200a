package pdfout

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/examples/docviewer/render"
)

// Pages of each kind the encoder tells apart, built from exact pixel
// values.
func fill(w, h int, at func(x, y int) color.RGBA) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.SetRGBA(x, y, at(x, y))
		}
	}
	return img
}

// textLike: white with black "glyphs" and, unless bilevel, gray
// anti-aliased edges (of the given colour).
func textLike(w, h int, ink color.RGBA, bilevel bool) *image.RGBA {
	return fill(w, h, func(x, y int) color.RGBA {
		switch {
		case x%17 < 3 && y%23 < 12:
			return ink
		case !bilevel && x%17 == 3 && y%23 < 12:
			return color.RGBA{(ink.R + 255) / 2, (ink.G + 255) / 2, (ink.B + 255) / 2, 255}
		}
		return color.RGBA{255, 255, 255, 255}
	})
}

// antiAliased: like textLike, but its edges spread over many gray levels,
// each on a few pixels, as a real rasteriser's anti-aliasing does.
func antiAliased(w, h int) *image.RGBA {
	return fill(w, h, func(x, y int) color.RGBA {
		switch {
		case x%17 < 3 && y%23 < 12:
			return black
		case x%17 == 3 && y%23 < 12:
			v := uint8(1 + (x*7+y*13)%254)
			return color.RGBA{v, v, v, 255}
		}
		return color.RGBA{255, 255, 255, 255}
	})
}

// threeFills is text on white with gray boxes of three levels.
func threeFills(w, h int) *image.RGBA { return fills(w, h, 60, 200, 240) }

// twoFills has two box levels.
func twoFills(w, h int) *image.RGBA { return fills(w, h, 200, 240) }

func fills(w, h int, levels ...uint8) *image.RGBA {
	img := textLike(w, h, black, true)
	for i, v := range levels {
		for y := range h / 4 {
			for x := range w / 8 {
				img.SetRGBA(i*w/4+x, y, color.RGBA{v, v, v, 255})
			}
		}
	}
	return img
}

func photoLike(w, h int) *image.RGBA {
	r := rand.New(rand.NewPCG(1, 2))
	return fill(w, h, func(x, y int) color.RGBA {
		n := uint8(r.IntN(24))
		return color.RGBA{uint8(x*255/w) ^ n, uint8(y*255/h) + n, uint8((x+y)*127/(w+h)) + n, 255}
	})
}

var (
	black = color.RGBA{0, 0, 0, 255}
	blue  = color.RGBA{20, 40, 200, 255}
)

// TestChooseEncoding: the encoding follows the pixels exactly: one gray
// pixel keeps a page out of bilevel, one coloured pixel out of gray, one
// gray level on more than textMaxFillShare of the page out of Text; JPEG
// only for a photographic page or when Quality asks (never for bilevel).
func TestChooseEncoding(t *testing.T) {
	bi := textLike(200, 100, black, true)
	oneGray := textLike(200, 100, black, true)
	oneGray.SetRGBA(199, 99, color.RGBA{254, 254, 254, 255})
	oneColour := textLike(200, 100, black, false)
	oneColour.SetRGBA(0, 0, color.RGBA{0, 0, 1, 255})
	transparent := image.NewRGBA(image.Rect(0, 0, 10, 10)) // all alpha 0: white
	tests := []struct {
		name string
		img  *image.RGBA
		opt  Options
		want Encoding
	}{
		{"black and white", bi, Options{}, Bilevel},
		{"transparent is white", transparent, Options{}, Bilevel},
		{"one gray pixel", oneGray, Options{}, Text},
		{"one gray pixel, lossless", oneGray, Options{Lossless: true}, Gray},
		{"anti-aliased text", antiAliased(200, 100), Options{}, Text},
		{"anti-aliased text, lossless", antiAliased(200, 100), Options{Lossless: true}, Gray},
		// A 1-pixel column of one gray: an edge, not a fill.
		{"gray edges", textLike(200, 100, black, false), Options{}, Text},
		{"gray fill", fills(200, 100, 200), Options{}, Text},
		{"three gray fills", threeFills(200, 100), Options{}, Gray},
		{"one coloured pixel", oneColour, Options{}, RGB},
		{"coloured text", textLike(200, 100, blue, false), Options{}, RGB},
		{"photograph", photoLike(300, 200), Options{}, JPEG},
		{"quality asked", textLike(200, 100, blue, false), Options{Quality: 60}, JPEG},
		{"quality never blurs bilevel", bi, Options{Quality: 60}, Bilevel},
		{"small gray text", textLike(200, 100, black, false), Options{Small: true}, Bilevel},
		{"small keeps colour", textLike(200, 100, blue, false), Options{Small: true}, RGB},
		{"small photograph", photoLike(300, 200), Options{Small: true}, JPEG},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			w := NewWriterOptions(&buf, tt.opt)
			require.NoError(t, w.AddPage(tt.img, 72))
			require.NoError(t, w.Close())
			assert.Equal(t, []Encoding{tt.want}, w.Encodings())
		})
	}
	assert.ErrorContains(t, NewWriterOptions(&bytes.Buffer{}, Options{Quality: 101}).AddPage(bi, 72), "quality 101")
}

// poppler runs a poppler-utils tool, skipping the test if it is absent.
func poppler(t *testing.T, tool string, args ...string) {
	t.Helper()
	bin, err := exec.LookPath(tool)
	if err != nil {
		t.Skip(tool + " not installed (apt-get install poppler-utils); CI installs it")
	}
	out, err := exec.Command(bin, args...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Empty(t, strings.TrimSpace(string(out)), "%s complained", tool)
}

// popplerPixels reads page 1 of pdf with poppler, an independent reader:
// the image as stored (pdfimages decodes it, exactly) and the page as
// pdftoppm draws it at dpi (poppler resamples even at 1:1, so only its
// size is compared).
func popplerPixels(t *testing.T, pdf []byte, dpi int) (stored image.Image, drawn image.Rectangle) {
	t.Helper()
	dir := t.TempDir()
	in := filepath.Join(dir, "in.pdf")
	require.NoError(t, os.WriteFile(in, pdf, 0o644))
	poppler(t, "pdftoppm", "-r", fmt.Sprint(dpi), "-f", "1", "-l", "1", "-singlefile", in, filepath.Join(dir, "p"))
	drawn = readPPM(t, filepath.Join(dir, "p.ppm")).Bounds()
	poppler(t, "pdfimages", "-png", "-f", "1", "-l", "1", in, filepath.Join(dir, "img"))
	f, err := os.Open(filepath.Join(dir, "img-000.png"))
	require.NoError(t, err)
	defer f.Close()
	stored, err = png.Decode(f)
	require.NoError(t, err)
	return stored, drawn
}

func readPPM(t *testing.T, path string) *image.RGBA {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	r := bufio.NewReader(f)
	// Header: "P6", width, height, maxval, separated by whitespace, then
	// exactly one whitespace byte before the pixels.
	var magic string
	var w, h, max int
	_, err = fmt.Fscan(r, &magic, &w, &h, &max)
	require.NoError(t, err)
	require.Equal(t, "P6", magic)
	require.Equal(t, 255, max)
	_, err = r.ReadByte()
	require.NoError(t, err)
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	px := make([]byte, 3)
	for i := range w * h {
		_, err := io.ReadFull(r, px)
		require.NoError(t, err)
		copy(img.Pix[4*i:], px)
		img.Pix[4*i+3] = 255
	}
	return img
}

// glyphs is a page of black text on white, drawn at random from an
// alphabet of 40 random glyphs (strokes of a 7x10 box), 8 or 9 pixels
// apart, in words and lines at a 14-pixel pitch: like a text page, it
// codes smaller in Group 4 than in Flate.
func glyphs(w, h int) *image.RGBA {
	rng := rand.New(rand.NewPCG(5, 6))
	var alphabet [40][10][7]bool
	for g := range alphabet {
		for range 3 { // three strokes, vertical or horizontal
			if rng.IntN(2) == 0 {
				x := rng.IntN(6)
				for y := rng.IntN(4); y < 10; y++ {
					alphabet[g][y][x], alphabet[g][y][x+1] = true, true
				}
			} else {
				y := rng.IntN(9)
				for x := range 7 {
					alphabet[g][y][x], alphabet[g][y+1][x] = true, true
				}
			}
		}
	}
	ink := make([]bool, w*h)
	for top := 4; top+10 < h; top += 14 {
		for x := 4; x+7 < w; {
			if rng.IntN(6) == 0 {
				x += 3 + rng.IntN(4) // a space
				continue
			}
			g := &alphabet[rng.IntN(len(alphabet))]
			for y := range 10 {
				for dx := range 7 {
					ink[(top+y)*w+x+dx] = g[y][dx]
				}
			}
			x += 8 + rng.IntN(2) // proportional spacing
		}
	}
	return fill(w, h, func(x, y int) color.RGBA {
		if ink[y*w+x] {
			return color.RGBA{0, 0, 0, 255}
		}
		return color.RGBA{255, 255, 255, 255}
	})
}

// bilevelNoise is black and white pixels at random: Group 4's worst
// case, where Flate of the 1-bit rows is smaller.
func bilevelNoise(w, h int) *image.RGBA {
	rng := rand.New(rand.NewPCG(3, 4))
	return fill(w, h, func(x, y int) color.RGBA {
		if rng.IntN(2) == 0 {
			return color.RGBA{0, 0, 0, 255}
		}
		return color.RGBA{255, 255, 255, 255}
	})
}

// meanError is the mean absolute difference per colour channel.
func meanError(want *image.RGBA, got image.Image) float64 {
	var sum float64
	b := want.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			w := want.RGBAAt(x, y)
			g := color.RGBAModel.Convert(got.At(x, y)).(color.RGBA)
			sum += float64(abs(int(w.R)-int(g.R)) + abs(int(w.G)-int(g.G)) + abs(int(w.B)-int(g.B)))
		}
	}
	return sum / float64(3*b.Dx()*b.Dy())
}

// TestRenderedPixels: poppler draws each safe page with exactly the
// pixels the writer was given (lossless encodings), or within a small
// mean error (JPEG); Small thresholds gray at SmallThreshold exactly.
func TestRenderedPixels(t *testing.T) {
	const dpi = 72 // one PDF point per pixel
	tests := []struct {
		name    string
		img     *image.RGBA
		opt     Options
		want    Encoding
		maxMean float64 // mean absolute error per channel; 0: exact
	}{
		{"bilevel", textLike(240, 120, black, true), Options{}, Bilevel, 0},
		{"bilevel noise", bilevelNoise(240, 120), Options{}, Bilevel, 0},
		{"bilevel glyphs", glyphs(400, 300), Options{}, Bilevel, 0},
		{"gray", textLike(240, 120, black, false), Options{Lossless: true}, Gray, 0},
		{"text, edges to four levels", textLike(240, 120, black, false), Options{}, Text, 2},
		{"text with a gray fill", fills(240, 120, 200), Options{}, Text, 0},
		{"text with two gray fills", twoFills(240, 120), Options{}, Text, 0},
		{"gray with three fills", threeFills(240, 120), Options{}, Gray, 0},
		{"rgb", textLike(240, 120, blue, false), Options{}, RGB, 0},
		{"odd width bilevel", textLike(237, 51, black, true), Options{}, Bilevel, 0},
		{"half transparent", testImage(90, 40, 128), Options{}, RGB, 0},
		{"jpeg photo", photoLike(240, 160), Options{}, JPEG, 10}, // noise is JPEG's worst case
		{"jpeg asked", textLike(240, 120, blue, false), Options{Quality: 90}, JPEG, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			w := NewWriterOptions(&buf, tt.opt)
			require.NoError(t, w.AddPage(tt.img, dpi))
			require.NoError(t, w.Close())
			require.Equal(t, []Encoding{tt.want}, w.Encodings())
			if tt.want == Bilevel {
				// Group 4 for text, Flate where it is smaller (noise).
				filter := "/CCITTFaxDecode"
				if tt.name != "bilevel glyphs" {
					filter = "/FlateDecode" // repetitive or noise
				}
				require.Contains(t, buf.String(), filter)
			}
			stored, drawn := popplerPixels(t, buf.Bytes(), dpi)
			require.Equal(t, tt.img.Bounds(), drawn, "pdftoppm page size")
			require.Equal(t, tt.img.Bounds(), stored.Bounds(), "stored image size")
			// MuPDF, which draws 1:1 without resampling, shows the page.
			d, err := render.Open(buf.Bytes(), render.DefaultLimits())
			require.NoError(t, err)
			defer d.Close()
			shown, _, err := d.Render(context.Background(), 0, dpi)
			require.NoError(t, err)
			want := opaque(tt.img)
			if tt.maxMean == 0 {
				assert.Zero(t, meanError(want, stored), "poppler's decoding differs from the pixels written")
				assert.Zero(t, meanError(want, shown), "MuPDF's page differs from the pixels written")
				return
			}
			for name, got := range map[string]image.Image{"poppler": stored, "MuPDF": shown} {
				mean := meanError(want, got)
				assert.Less(t, mean, tt.maxMean, name)
				assert.Greater(t, mean, 0.0, "%s: the encoding is lossy: an exact match means it was not used", name)
			}
		})
	}

	t.Run("text levels", func(t *testing.T) {
		// Every gray level once, on 4 rows of a white page: each covers
		// far less than textMaxFillShare.
		img := fill(256, 400, func(x, y int) color.RGBA {
			if y < 4 {
				return color.RGBA{uint8(x), uint8(x), uint8(x), 255}
			}
			return color.RGBA{255, 255, 255, 255}
		})
		var buf bytes.Buffer
		w := NewWriterOptions(&buf, Options{})
		require.NoError(t, w.AddPage(img, dpi))
		require.NoError(t, w.Close())
		require.Equal(t, []Encoding{Text}, w.Encodings())
		stored, _ := popplerPixels(t, buf.Bytes(), dpi)
		for x := range 256 {
			want := uint8((x*3 + 127) / 255 * 85) // the nearest of 0, 85, 170, 255
			r, _, _, _ := stored.At(x, 2).RGBA()
			require.Equal(t, want, uint8(r>>8), "gray %d", x)
			require.LessOrEqual(t, abs(int(want)-x), 42, "gray %d", x)
		}
		r, _, _, _ := stored.At(100, 200).RGBA()
		require.Equal(t, uint8(255), uint8(r>>8), "white stays white")
	})

	t.Run("small threshold", func(t *testing.T) {
		img := fill(256, 4, func(x, _ int) color.RGBA { return color.RGBA{uint8(x), uint8(x), uint8(x), 255} })
		var buf bytes.Buffer
		w := NewWriterOptions(&buf, Options{Small: true})
		require.NoError(t, w.AddPage(img, dpi))
		require.NoError(t, w.Close())
		require.Equal(t, []Encoding{Bilevel}, w.Encodings())
		stored, _ := popplerPixels(t, buf.Bytes(), dpi)
		for x := range 256 {
			want := uint8(0)
			if x >= SmallThreshold {
				want = 255
			}
			r, _, _, _ := stored.At(x, 2).RGBA()
			require.Equal(t, want, uint8(r>>8), "gray %d", x)
		}
	})
}

// opaque is img composited onto white, as the writer stores it.
func opaque(img *image.RGBA) *image.RGBA {
	o := image.NewRGBA(img.Bounds())
	for i := 0; i < len(img.Pix); i += 4 {
		a := img.Pix[i+3]
		o.Pix[i], o.Pix[i+1], o.Pix[i+2], o.Pix[i+3] = img.Pix[i]+(255-a), img.Pix[i+1]+(255-a), img.Pix[i+2]+(255-a), 255
	}
	return o
}

// TestFilterRow: None stays unless a predictor at least halves the row's
// absolute sum; a gradient takes Sub.
func TestFilterRow(t *testing.T) {
	var f [5][]byte
	for i := range f {
		f[i] = make([]byte, 9)
		f[i][0] = byte(i)
	}
	prev := make([]byte, 8)
	gradient := []byte{10, 20, 30, 40, 50, 60, 70, 80}
	assert.Equal(t, byte(1), filterRow(&f, gradient, prev, 1)[0], "Sub")
	assert.Equal(t, []byte{1, 10, 10, 10, 10, 10, 10, 10, 10}, filterRow(&f, gradient, prev, 1))
	text := []byte{255, 255, 0, 0, 255, 255, 0, 255}
	white := bytes.Repeat([]byte{255}, 8)
	assert.Equal(t, byte(0), filterRow(&f, text, white, 1)[0], "None: no predictor halves it")
	assert.Equal(t, byte(2), filterRow(&f, text, text, 1)[0], "Up: a row like the last")
}

// TestTextPalette: black, white and the page's fills (levels with more
// than textFillShare of the page inside areas of them), the rest evenly
// spread; more than two fills or
// any colour is not a text page.
func TestTextPalette(t *testing.T) {
	page := func(fills ...int) pageStats {
		s := pageStats{gray: true, pixels: 1_000_000}
		for v := 1; v < 255; v++ {
			s.fill[v] = 20 // an edge level: now and then a pixel inside
		}
		for _, v := range fills {
			s.fill[v] = 51 // just over 0.005 %
		}
		return s
	}
	tests := []struct {
		name string
		s    pageStats
		want [4]byte
		ok   bool
	}{
		{"edges only", page(), [4]byte{0, 85, 170, 255}, true},
		{"a light fill", page(200), [4]byte{0, 100, 200, 255}, true},
		{"a dark fill", page(50), [4]byte{0, 50, 153, 255}, true},
		{"two fills", page(30, 230), [4]byte{0, 30, 230, 255}, true},
		{"three fills", page(30, 128, 230), [4]byte{}, false},
		{"colour", pageStats{pixels: 100}, [4]byte{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.s.textPalette()
			assert.Equal(t, tt.ok, ok)
			assert.Equal(t, tt.want, got)
		})
	}
	idx := nearest([4]byte{0, 50, 153, 255})
	for v, want := range map[int]byte{0: 0, 25: 0, 26: 1, 50: 1, 101: 1, 102: 2, 204: 2, 205: 3, 255: 3} {
		assert.Equal(t, want, idx[v], "level %d", v)
	}
}
