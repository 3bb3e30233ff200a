package thumb

import (
	"image"
	"image/color"
	"image/draw"
)

// boxScale writes into dst (dw x dh, origin 0,0) the area-average ("box
// filter") reduction of the canvas rectangle (0,0)-(sw,sh), where src supplies
// the pixels of the part of the canvas it covers and the rest of the canvas is
// transparent black. src.Bounds() must lie within the canvas and dw <= sw,
// dh <= sh: the caller never upscales.
//
// Why not golang.org/x/image/draw: measured on a 4000x3000 JPEG scaled to
// 256x192, CatmullRom takes ~340 ms and BiLinear ~270 ms (more than the JPEG
// decode itself) and both allocate a dw x sh x 32-byte temporary, which for a
// 1-pixel-wide, 50-million-pixel-tall image is 1.6 GB, far beyond what the
// pixel budget implies. ApproxBiLinear is fast (~2 ms) but samples 4 of the
// ~240 source pixels behind each thumbnail pixel, so noise and fine patterns
// alias badly. An exact area average looks right for every reduction factor,
// visits each source pixel once, and needs only O(sw + dw) memory beyond the
// decoded image: one converted source row and two rows of accumulators.
//
// Arithmetic is in integers: along x, source column x covers the interval
// [x*dw, (x+1)*dw) and destination column i covers [i*sw, (i+1)*sw), so each
// source column overlaps at most two destination columns (dw <= sw) with
// integer weights that sum to dw; likewise along y. Every destination pixel
// therefore receives a total weight of exactly sw*sh, and the sums stay below
// 255*sw*sh, which fits a uint64 for any canvas a decoder can produce
// (sw, sh < 2^32). Averaging premultiplied values keeps each output pixel
// premultiplied (R, G, B <= A).
func boxScale(dst *image.RGBA, dw, dh int, src image.Image, sw, sh int) {
	// Per source column: first destination column and its weight; the
	// remainder of dw goes to the next column.
	colDst := make([]int32, sw)
	colW := make([]uint32, sw)
	for x := 0; x < sw; x++ {
		lo := uint64(x) * uint64(dw)
		i := lo / uint64(sw)
		end := min((i+1)*uint64(sw), lo+uint64(dw))
		colDst[x] = int32(i)
		colW[x] = uint32(end - lo)
	}

	row := image.NewRGBA(image.Rect(0, 0, sw, 1))
	var lut *[256][4]uint8
	if p, ok := src.(*image.Paletted); ok {
		lut = paletteLUT(p.Palette)
	}
	sb := src.Bounds()

	// hacc holds one source row reduced horizontally; cur and next the
	// vertical sums of destination rows j and j+1.
	hacc := make([]uint64, 4*(dw+1))
	cur := make([]uint64, 4*dw)
	next := make([]uint64, 4*dw)
	j := 0
	total := uint64(sw) * uint64(sh)
	half := total / 2
	emit := func() {
		out := dst.Pix[j*dst.Stride : j*dst.Stride+4*dw]
		for k, v := range cur {
			out[k] = uint8((v + half) / total)
		}
	}

	for y := 0; y < sh; y++ {
		loadRow(row, src, sb, y, lut)

		clear(hacc)
		pix := row.Pix
		for x := 0; x < sw; x++ {
			i := int(colDst[x]) * 4
			w0 := uint64(colW[x])
			w1 := uint64(dw) - w0
			p := pix[4*x : 4*x+4 : 4*x+4]
			r, g, b, a := uint64(p[0]), uint64(p[1]), uint64(p[2]), uint64(p[3])
			if w1 == 0 {
				// Common when reducing a lot: the column falls inside one
				// destination column.
				h := hacc[i : i+4 : i+4]
				h[0] += r * w0
				h[1] += g * w0
				h[2] += b * w0
				h[3] += a * w0
				continue
			}
			h := hacc[i : i+8 : i+8]
			h[0] += r * w0
			h[1] += g * w0
			h[2] += b * w0
			h[3] += a * w0
			h[4] += r * w1
			h[5] += g * w1
			h[6] += b * w1
			h[7] += a * w1
		}

		lo := uint64(y) * uint64(dh)
		jy := int(lo / uint64(sh))
		end := min(uint64(jy+1)*uint64(sh), lo+uint64(dh))
		w0 := end - lo
		w1 := uint64(dh) - w0
		if jy != j {
			// Source row y starts in destination row j+1: row j is complete.
			emit()
			j = jy
			cur, next = next, cur
			clear(next)
		}
		h := hacc[:4*dw]
		for k, v := range h {
			cur[k] += v * w0
		}
		if w1 != 0 {
			for k, v := range h {
				next[k] += v * w1
			}
		}
	}
	emit()
}

// loadRow converts canvas row y into row (premultiplied RGBA), transparent
// where src does not cover the canvas.
func loadRow(row *image.RGBA, src image.Image, sb image.Rectangle, y int, lut *[256][4]uint8) {
	if y < sb.Min.Y || y >= sb.Max.Y {
		clear(row.Pix)
		return
	}
	if sb.Min.X > 0 || sb.Max.X < len(row.Pix)/4 {
		clear(row.Pix)
	}
	if lut != nil {
		p := src.(*image.Paletted)
		off := p.PixOffset(sb.Min.X, y)
		idx := p.Pix[off : off+sb.Dx()]
		out := row.Pix[4*sb.Min.X:]
		for k, c := range idx {
			copy(out[4*k:4*k+4], lut[c][:])
		}
		return
	}
	draw.Draw(row, image.Rect(sb.Min.X, 0, sb.Max.X, 1), src, image.Pt(sb.Min.X, y), draw.Src)
}

// paletteLUT converts a palette to premultiplied RGBA once, so that paletted
// rows (GIF, paletted PNG/BMP/TIFF) need no per-pixel interface calls. Indexes
// past the end of the palette, or nil entries, map to transparent black rather
// than panicking as image.Paletted.At would.
func paletteLUT(p color.Palette) *[256][4]uint8 {
	var lut [256][4]uint8
	for i, c := range p {
		if i >= len(lut) {
			break
		}
		if c == nil {
			continue
		}
		r, g, b, a := c.RGBA()
		lut[i] = [4]uint8{uint8(r >> 8), uint8(g >> 8), uint8(b >> 8), uint8(a >> 8)}
	}
	return &lut
}
