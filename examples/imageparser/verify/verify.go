// Package verify is the broker-side half of the imageparser example. The
// renderer that produced a thumbnail has decoded attacker-controlled bytes and
// must be assumed compromised, so everything it reports — sizes, format name,
// error text, pixels — is checked or neutralised here before the broker uses
// it to allocate, write files or print.
package verify

import (
	"errors"
	"fmt"
	"image"
	"image/png"
	"io"
	"math/bits"
)

// ErrBadReply means the renderer's reply is inconsistent or out of range.
// The broker should report the input as failed and not trust that renderer
// further.
var ErrBadReply = errors.New("bad reply from renderer")

// Pixels checks a thumbnail reply and returns an image over buf. width and
// height must each be in [1, maxSide] and len(buf) must be exactly
// 4*width*height (computed without overflow); every pixel must be valid
// premultiplied RGBA (R, G, B <= A), the invariant of image.RGBA that
// encoders and compositors rely on.
//
// The returned image wraps buf without copying: the caller guarantees that
// buf is a sealed, read-only mapping the renderer can no longer change, so
// what was checked is what gets used. The slice's capacity is trimmed so
// nothing past the pixels is reachable through the image.
func Pixels(width, height int, buf []byte, maxSide int) (*image.RGBA, error) {
	if maxSide < 1 {
		return nil, fmt.Errorf("%w: maximum side %d < 1", ErrBadReply, maxSide)
	}
	if width < 1 || width > maxSide || height < 1 || height > maxSide {
		return nil, fmt.Errorf("%w: size %dx%d outside 1..%d", ErrBadReply, width, height, maxSide)
	}
	hi, n := bits.Mul64(uint64(width), uint64(height))
	if hi == 0 {
		hi, n = bits.Mul64(n, 4)
	}
	if hi != 0 || n != uint64(len(buf)) {
		return nil, fmt.Errorf("%w: %d bytes of pixels for %dx%d", ErrBadReply, len(buf), width, height)
	}
	for i := 0; i < len(buf); i += 4 {
		p := buf[i : i+4 : i+4]
		if p[0] > p[3] || p[1] > p[3] || p[2] > p[3] {
			px := i / 4
			return nil, fmt.Errorf("%w: pixel (%d,%d) is not premultiplied RGBA", ErrBadReply, px%width, px/width)
		}
	}
	return &image.RGBA{
		Pix:    buf[:len(buf):len(buf)],
		Stride: 4 * width,
		Rect:   image.Rect(0, 0, width, height),
	}, nil
}

// WritePNG encodes img as PNG with the fastest compression: thumbnails are
// small, and the broker's time is better spent on the next input than on a
// few percent of file size.
func WritePNG(w io.Writer, img *image.RGBA) error {
	if img == nil {
		return errors.New("verify: WritePNG: nil image")
	}
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	if err := enc.Encode(w, img); err != nil {
		return fmt.Errorf("verify: encoding thumbnail: %w", err)
	}
	return nil
}
