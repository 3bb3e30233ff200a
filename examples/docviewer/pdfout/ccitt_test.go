package pdfout

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/image/ccitt"
)

// bitmap is a test image, one byte per pixel, 1 for black.
type bitmap struct {
	name string
	w, h int
	pix  []byte
}

func (m bitmap) row(y int, row []byte) { copy(row, m.pix[y*m.w:(y+1)*m.w]) }

func newBitmap(name string, w, h int, black func(x, y int) bool) bitmap {
	m := bitmap{name: name, w: w, h: h, pix: make([]byte, w*h)}
	for y := range h {
		for x := range w {
			if black(x, y) {
				m.pix[y*w+x] = 1
			}
		}
	}
	return m
}

// TestG4RoundTrip: what encodeG4 writes, golang.org/x/image/ccitt (an
// independent decoder) reads back exactly, for the shapes that exercise
// every mode and every run-length code: runs of each length from 0 to
// past 2623 (make-up codes of both colours, the shared ones, repeated
// 2560s), vertical edges moving by -3..3 (vertical mode), edges that end
// above a run (pass mode), noise (horizontal mode), and rows of one or
// two pixels.
func TestG4RoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	noise := func(p float64) func(x, y int) bool { return func(x, y int) bool { return rng.Float64() < p } }
	const long = 5300 // two repeated 2560 make-ups and more
	images := []bitmap{
		newBitmap("white", 100, 3, func(x, y int) bool { return false }),
		newBitmap("black", 100, 3, func(x, y int) bool { return true }),
		newBitmap("one column", 1, 5, func(x, y int) bool { return y%2 == 0 }),
		newBitmap("two columns", 2, 6, func(x, y int) bool { return (x+y)%3 == 0 }),
		newBitmap("checkerboard", 37, 37, func(x, y int) bool { return (x+y)%2 == 0 }),
		// Row r: a black run of r pixels after a white run of r, then
		// white: every terminating and make-up code of both colours.
		newBitmap("run lengths", long, 2*64+1, func(x, y int) bool {
			n := y * 41
			return x >= n && x < 2*n
		}),
		newBitmap("long runs", long, 4, func(x, y int) bool { return (x < long-y*7) == (y%2 == 0) }),
		// An edge moving by -3..+3 each row: vertical mode.
		newBitmap("slanted edges", 200, 64, func(x, y int) bool {
			d := []int{0, 1, -1, 2, -2, 3, -3, 0}[y%8]
			return x > 50+d*y/8 && x < 150-d*y/8
		}),
		// Short bars above nothing: pass mode.
		newBitmap("bars", 120, 20, func(x, y int) bool { return y%2 == 0 && x%10 < 3 }),
		newBitmap("sparse noise", 300, 40, noise(0.02)),
		newBitmap("noise", 300, 40, noise(0.5)),
		newBitmap("dense noise", 300, 40, noise(0.97)),
	}
	for _, m := range images {
		t.Run(m.name, func(t *testing.T) {
			data := encodeG4(m.row, m.w, m.h)
			got, err := io.ReadAll(ccitt.NewReader(bytes.NewReader(data), ccitt.MSB, ccitt.Group4, m.w, m.h, &ccitt.Options{}))
			require.NoError(t, err)
			stride := (m.w + 7) / 8
			require.Len(t, got, stride*m.h)
			for y := range m.h {
				for x := range m.w {
					white := got[y*stride+x/8]&(0x80>>(x%8)) != 0 // BlackIs1 false: 1 is white
					require.Equal(t, m.pix[y*m.w+x] == 0, white, "pixel (%d,%d)", x, y)
				}
			}
		})
	}
}

// TestG4EndsWithEOFB: the stream ends with two EOLs, which
// CCITTFaxDecode's default EndOfBlock expects.
func TestG4EndsWithEOFB(t *testing.T) {
	data := encodeG4(func(y int, row []byte) {}, 8, 1)
	// One white row of 8 against a white reference is V0 ("1"), then
	// EOL EOL: 1 000000000001 000000000001, padded with zeros.
	require.Equal(t, []byte{0x80, 0x08, 0x00, 0x80}, data)
}
