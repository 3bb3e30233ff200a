package thumb

import (
	"fmt"
	"math/bits"
)

// Budget bounds the work one input may cause. A zero field allows nothing
// (every input is refused), so a forgotten field fails closed; start from
// DefaultBudget and adjust.
type Budget struct {
	// MaxPixels caps the declared canvas, width*height. It is what bounds the
	// decoder's memory (see the package documentation for the factor).
	MaxPixels int64
	// MaxFrames caps the number of frames of an animated GIF. Only the first
	// frame is decoded, but an image with millions of frames is a cheap way
	// to make any later consumer loop, so it is refused outright.
	MaxFrames int
	// MaxInputBytes caps the length of the encoded input.
	MaxInputBytes int64
}

// DefaultBudget returns the limits the imageparser example uses: 50
// megapixels (a large camera photo), 1000 frames, 64 MiB of input.
func DefaultBudget() Budget {
	return Budget{
		MaxPixels:     50_000_000,
		MaxFrames:     1000,
		MaxInputBytes: 64 << 20,
	}
}

func (b Budget) checkInput(n int) error {
	if int64(n) > b.MaxInputBytes {
		return fmt.Errorf("%w: input is %d bytes > %d", ErrOverBudget, n, b.MaxInputBytes)
	}
	return nil
}

// checkPixels rejects empty, negative and over-budget canvases. The product
// is computed in 128 bits so that no pair of ints can wrap around into an
// acceptable value.
func (b Budget) checkPixels(w, h int) error {
	if w <= 0 || h <= 0 {
		return fmt.Errorf("%w: declared size %dx%d is empty", ErrCorrupt, w, h)
	}
	hi, lo := bits.Mul64(uint64(w), uint64(h))
	if hi != 0 || lo > uint64(max(b.MaxPixels, 0)) {
		if hi != 0 || lo > 1<<63-1 {
			return fmt.Errorf("%w: %dx%d pixels > %d", ErrOverBudget, w, h, b.MaxPixels)
		}
		return fmt.Errorf("%w: %dx%d = %d pixels > %d", ErrOverBudget, w, h, lo, b.MaxPixels)
	}
	return nil
}

func (b Budget) checkFrames(n int) error {
	if n > b.MaxFrames {
		return fmt.Errorf("%w: more than %d frames", ErrOverBudget, b.MaxFrames)
	}
	return nil
}
