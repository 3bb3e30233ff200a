package fuzz

import (
	"bytes"
	"errors"
	"image"
	"image/draw"
	"image/png"
	"math"
	"math/big"
	"testing"

	"github.com/sandkit/sandkit/examples/imageparser/verify"
)

// FuzzPixelsReply fuzzes the imageparser broker's check of a renderer's
// thumbnail reply, verify.Pixels: the dimensions a compromised renderer
// claims and the size of the buffer it hands over. Unlike a plain bytes
// input, the buffer is built to the claimed size plus a fuzzed delta, so
// the fuzzer reaches the per-pixel check as easily as the size checks.
// The oracle uses arbitrary-precision arithmetic: no width × height × 4
// may wrap. An accepted image must cover exactly the buffer and survive a
// PNG round trip unchanged. (docviewer's reply checks live in a separate
// module, examples/docviewer, and are not fuzzed here.)
func FuzzPixelsReply(f *testing.F) {
	f.Add(2, 2, 64, 0, []byte{0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 9, 3, 2, 1, 4})
	f.Add(1, 1, 1, 0, []byte{5, 5, 5, 4}) // not premultiplied
	f.Add(3, 1, 8, -1, []byte{1, 2, 3, 4})
	f.Add(1<<31, 1<<31, math.MaxInt, 0, []byte{})
	f.Add(1<<62, 4, math.MaxInt, 0, []byte{})
	f.Add(-1, 1, 256, 0, []byte{})
	f.Add(1, 1, 0, 0, []byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, w, h, maxSide, delta int, px []byte) {
		// Build a buffer of 4*w*h+delta bytes when that is small.
		size := new(big.Int).Mul(big.NewInt(int64(w)), big.NewInt(int64(h)))
		size.Mul(size, big.NewInt(4))
		size.Add(size, big.NewInt(int64(delta)))
		var buf []byte
		if size.IsInt64() && size.Int64() >= 0 && size.Int64() <= 1<<20 {
			buf = make([]byte, size.Int64())
			for i := range buf {
				if len(px) > 0 {
					buf[i] = px[i%len(px)]
				}
			}
		} else {
			buf = px
		}
		img, err := verify.Pixels(w, h, buf, maxSide)
		want := pixelsOK(w, h, maxSide, buf)
		if err != nil {
			if !errors.Is(err, verify.ErrBadReply) || img != nil {
				t.Fatalf("error %v with image %v", err, img)
			}
			if want {
				t.Fatalf("%dx%d (max %d) with %d valid bytes refused: %v", w, h, maxSide, len(buf), err)
			}
			return
		}
		if !want {
			t.Fatalf("%dx%d (max %d) with %d bytes accepted", w, h, maxSide, len(buf))
		}
		if img.Bounds() != image.Rect(0, 0, w, h) || img.Stride != 4*w || len(img.Pix) != len(buf) || cap(img.Pix) != len(buf) {
			t.Fatalf("image %v stride %d len %d cap %d over %d bytes", img.Bounds(), img.Stride, len(img.Pix), cap(img.Pix), len(buf))
		}
		if len(buf) > 4<<10 || !opaque(buf) {
			// PNG stores straight alpha: translucent premultiplied
			// pixels come back rounded, so only small opaque (or
			// fully transparent) images must round-trip exactly.
			return
		}
		var out bytes.Buffer
		if err := verify.WritePNG(&out, img); err != nil {
			t.Fatalf("WritePNG: %v", err)
		}
		dec, err := png.Decode(&out)
		if err != nil {
			t.Fatalf("decoding our own PNG: %v", err)
		}
		back := image.NewRGBA(dec.Bounds())
		draw.Draw(back, back.Bounds(), dec, dec.Bounds().Min, draw.Src)
		if !bytes.Equal(back.Pix, img.Pix) {
			t.Fatalf("PNG round trip changed the pixels")
		}
	})
}

// pixelsOK is the oracle for verify.Pixels, from its documentation.
func pixelsOK(w, h, maxSide int, buf []byte) bool {
	if maxSide < 1 || w < 1 || h < 1 || w > maxSide || h > maxSide {
		return false
	}
	n := new(big.Int).Mul(big.NewInt(int64(w)), big.NewInt(int64(h)))
	if n.Mul(n, big.NewInt(4)).Cmp(big.NewInt(int64(len(buf)))) != 0 {
		return false
	}
	for i := 0; i+3 < len(buf); i += 4 {
		if buf[i] > buf[i+3] || buf[i+1] > buf[i+3] || buf[i+2] > buf[i+3] {
			return false
		}
	}
	return true
}

// opaque reports whether every pixel is fully opaque or fully transparent.
func opaque(buf []byte) bool {
	for i := 3; i < len(buf); i += 4 {
		if buf[i] != 0 && buf[i] != 0xff {
			return false
		}
	}
	return true
}
