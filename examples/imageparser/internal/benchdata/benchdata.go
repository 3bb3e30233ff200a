// Package benchdata generates the inputs of the imageparser benchmarks.
//
// The inputs are generated rather than committed: a realistic 12 MP JPEG is a
// few megabytes, far more than the repository should carry, and generating it
// from a fixed seed makes every run (in-process or sandboxed) decode exactly
// the same bytes. The generators live in a non-test file so that benchmarks in
// other packages (the sandboxed variants) can reuse them.
package benchdata

import (
	"bytes"
	"image"
	"image/jpeg"
	"image/png"
)

// JPEG12MP returns a 4000x3000 baseline JPEG at quality 85. The content is a
// mix of smooth gradients, soft rings and per-pixel noise, so that the entropy
// coder sees something closer to a photograph than a flat test card (a flat
// image would decode unrealistically fast). The output is deterministic.
func JPEG12MP() []byte {
	img := natural(4000, 3000, 0x5eed12)
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 85}); err != nil {
		// Encoding an in-memory RGBA into a bytes.Buffer cannot fail; a failure
		// here is a bug in this generator, not a condition to handle.
		panic("benchdata: jpeg.Encode: " + err.Error())
	}
	return buf.Bytes()
}

// PNG1MP returns a 1000x1000 RGBA PNG (default compression) with the same kind
// of content as JPEG12MP. The output is deterministic.
func PNG1MP() []byte {
	img := natural(1000, 1000, 0x5eed01)
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		panic("benchdata: png.Encode: " + err.Error())
	}
	return buf.Bytes()
}

// natural paints a w x h opaque image: horizontal and vertical colour ramps,
// concentric rings around an off-centre point, and +-16 of noise from a
// xorshift generator seeded with seed.
func natural(w, h int, seed uint64) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	s := seed | 1
	cx, cy := w*2/3, h/3
	for y := 0; y < h; y++ {
		row := img.Pix[y*img.Stride : y*img.Stride+4*w]
		for x := 0; x < w; x++ {
			s ^= s << 13
			s ^= s >> 7
			s ^= s << 17
			noise := int(s&31) - 16
			dx, dy := x-cx, y-cy
			ring := ((dx*dx + dy*dy) >> 9) & 63
			r := x*200/w + ring + noise
			g := y*180/h + 40 - ring/2 + noise
			b := (x+y)*120/(w+h) + 90 + ring/3 + noise
			row[4*x+0] = clamp8(r)
			row[4*x+1] = clamp8(g)
			row[4*x+2] = clamp8(b)
			row[4*x+3] = 0xff
		}
	}
	return img
}

func clamp8(v int) uint8 {
	if v < 0 {
		return 0
	}
	if v > 255 {
		return 255
	}
	return uint8(v)
}
