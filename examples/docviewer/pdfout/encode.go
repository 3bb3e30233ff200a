package pdfout

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"fmt"
	"image"
	"image/jpeg"
	"slices"
)

// Encoding is how one page's pixels are stored in the PDF.
type Encoding int

const (
	// Bilevel: 1 bit per pixel, DeviceGray, CCITT Group 4 (or Flate
	// with PNG predictors where that is smaller: noise, halftones).
	// Chosen only when every pixel is exactly black or exactly white
	// (or, in Small mode, for a page with no colour, after a threshold).
	Bilevel Encoding = iota + 1
	// Gray: 8-bit DeviceGray, Flate with PNG predictors, when every pixel
	// has R = G = B. Lossless.
	Gray
	// RGB: 8-bit DeviceRGB, Flate with PNG predictors. Lossless.
	RGB
	// JPEG: baseline JPEG (DCTDecode), gray or RGB. Lossy.
	JPEG
	// Text: 2-bit indexed gray, Flate with PNG predictors, for pages of
	// black ink on white (textPalette): four levels, black, white and
	// the page's gray fills if it has one or two, else evenly spaced.
	// Only the anti-aliased edges of glyphs and lines change, each
	// pixel to the nearest of the four; at 150 dpi the page is about
	// 2.6x smaller than Gray and looks the same even zoomed in. Not
	// lossless: Options.Lossless stores such pages as Gray.
	Text
)

func (e Encoding) String() string {
	switch e {
	case Bilevel:
		return "bilevel"
	case Gray:
		return "gray"
	case RGB:
		return "rgb"
	case JPEG:
		return "jpeg"
	case Text:
		return "text"
	}
	return fmt.Sprintf("Encoding(%d)", int(e))
}

// DefaultJPEGQuality is the quality of pages detected as photographic
// when Options.Quality is 0: high enough that photographs show no
// visible blocking at the page's own resolution.
const DefaultJPEGQuality = 85

// SmallThreshold is the gray level below which a pixel becomes black in
// Small mode (128: the midpoint, so a glyph's anti-aliased edge is cut
// where it is half covered).
const SmallThreshold = 128

// Options choose the page encoding. The zero value is lossless for every
// page that is not photographic.
type Options struct {
	// Quality, if 1..100, stores every page that is not pure black and
	// white as JPEG at that quality. 0 means automatic: lossless Flate,
	// except pages detected as photographic (JPEG at DefaultJPEGQuality).
	Quality int
	// Small stores pages without colour as bilevel, thresholded at
	// SmallThreshold: anti-aliasing and light grays are lost (a gray
	// lighter than the threshold becomes white), text stays legible at
	// 150 dpi and the page is about 3x smaller. Pages with colour are
	// encoded as without Small.
	Small bool
	// Lossless stores pages of black ink on white as 8-bit Gray instead
	// of Text's four levels. It does not turn off JPEG for photographic
	// pages (set Quality for that choice) nor Small.
	Lossless bool
}

// pageStats are what the encoding choice looks at, gathered in one pass
// over the pixels composited onto white.
type pageStats struct {
	gray    bool // every pixel has R = G = B
	bilevel bool // every pixel is (0,0,0) or (255,255,255)
	// sameAsLeft counts pixels equal to their left neighbour: the share of
	// the page in horizontal runs, which is what Flate compresses well.
	sameAsLeft int
	pixels     int
	// colours counts distinct RGB values, up to maxColours.
	colours int
	// fill counts, per gray level other than black and white, the
	// pixels equal to both their left and their upper neighbour: inside
	// an area of that level, not on a 1-pixel edge.
	fill [256]int
}

// Photographic detection: rendered text, line art, diagrams and
// screenshots have long runs of one colour (the background, a fill), so
// most pixels equal their left neighbour, and few distinct colours
// (anti-aliasing adds blends between a handful of inks). A photograph has
// neither: nearly every pixel differs from the one before, and thousands
// of colours appear. Flate gains little there (about 2:1) and JPEG about
// 10:1, with losses the eye does not see in continuous tone; on text the
// same losses are visible ringing, so both conditions must hold.
const (
	maxColours        = 1 << 14 // counting stops here
	photoMinColours   = 1 << 13
	photoMaxSameShare = 0.5
)

func (s pageStats) photographic() bool {
	return s.colours >= photoMinColours && float64(s.sameAsLeft) < photoMaxSameShare*float64(s.pixels)
}

// Black ink on white: a gray page whose mid grays are the anti-aliased
// edges of glyphs and lines, plus at most two levels of gray fill
// (shading, a highlight, gray text). At 150 dpi an edge is one pixel
// wide, so its pixels rarely equal both their left and their upper
// neighbour, while a fill's inside does: a level with more than
// textFillShare of the page inside areas of it (a box of 11 by 11 pixels
// at 150 dpi) is a fill. Fills keep their exact level in the palette; a
// page with more than two stays 8-bit. Measured on libtasn1.pdf and a
// generated page of dense 10 pt Times: every page text.
const textFillShare = 0.00005

// textPalette returns the four gray levels, ascending, for a page of
// black ink on white, or false if the page is not one.
func (s pageStats) textPalette() ([4]byte, bool) {
	if !s.gray {
		return [4]byte{}, false
	}
	limit := int(textFillShare * float64(s.pixels))
	var fills []byte
	for v, n := range s.fill[1:255] {
		if n > limit {
			if len(fills) == 2 {
				return [4]byte{}, false
			}
			fills = append(fills, byte(v+1))
		}
	}
	switch len(fills) {
	case 0:
		return [4]byte{0, 85, 170, 255}, true
	case 1:
		// The fourth level halves the wider gap around the fill.
		v := int(fills[0])
		mid := v / 2
		if 255-v > v {
			mid = v + (255-v+1)/2
		}
		levels := []byte{0, fills[0], byte(mid), 255}
		slices.Sort(levels)
		return [4]byte(levels), true
	}
	return [4]byte{0, fills[0], fills[1], 255}, true
}

func (s pageStats) isText() bool {
	_, ok := s.textPalette()
	return ok
}

// nearest maps each gray level to the index of the nearest of pal.
func nearest(pal [4]byte) *[256]byte {
	var idx [256]byte
	for v := range 256 {
		best := 0
		for i, p := range pal {
			if abs(int(p)-v) < abs(int(pal[best])-v) {
				best = i
			}
		}
		idx[v] = byte(best)
	}
	return &idx
}

// composite returns pixel i of img's row as opaque RGB over white:
// premultiplied c + (255 - a).
func compositeRow(dst, src []byte) {
	for x := 0; x < len(dst)/3; x++ {
		r, g, b, a := src[4*x], src[4*x+1], src[4*x+2], src[4*x+3]
		dst[3*x], dst[3*x+1], dst[3*x+2] = r+(255-a), g+(255-a), b+(255-a)
	}
}

// stats scans img once. seen is a 2^24-bit set reused across pages.
func stats(img *image.RGBA, seen []uint64) pageStats {
	clear(seen)
	b := img.Bounds()
	s := pageStats{gray: true, bilevel: true, pixels: b.Dx() * b.Dy()}
	row, above := make([]byte, 3*b.Dx()), make([]byte, 3*b.Dx())
	for y := b.Min.Y; y < b.Max.Y; y++ {
		row, above = above, row
		compositeRow(row, img.Pix[img.PixOffset(b.Min.X, y):])
		var pr, pg, pb int = -1, -1, -1
		for x := 0; x+2 < len(row); x += 3 {
			r, g, bl := row[x], row[x+1], row[x+2]
			if r != g || g != bl {
				s.gray, s.bilevel = false, false
			} else if r != 0 && r != 255 {
				s.bilevel = false
				if int(r) == pr && y > b.Min.Y && above[x] == r {
					s.fill[r]++
				}
			}
			if int(r) == pr && int(g) == pg && int(bl) == pb {
				s.sameAsLeft++
				continue
			}
			pr, pg, pb = int(r), int(g), int(bl)
			if s.colours < maxColours {
				c := uint32(r)<<16 | uint32(g)<<8 | uint32(bl)
				if seen[c/64]&(1<<(c%64)) == 0 {
					seen[c/64] |= 1 << (c % 64)
					s.colours++
				}
			}
		}
	}
	return s
}

// choose picks the encoding of a page from its statistics and the options.
func choose(s pageStats, opt Options) Encoding {
	switch {
	case s.bilevel:
		return Bilevel // lossless and smallest; JPEG could only blur it
	case opt.Quality > 0:
		return JPEG
	case s.gray && opt.Small:
		return Bilevel
	case s.photographic():
		return JPEG
	case !opt.Lossless && s.isText():
		return Text
	case s.gray:
		return Gray
	}
	return RGB
}

// imageDict returns the image XObject's dictionary entries (without
// /Length) for enc; g4 says a Bilevel page is coded CCITT Group 4.
func imageDict(enc Encoding, st pageStats, w, h int, g4 bool) string {
	const base = "/Type /XObject /Subtype /Image /Width %d /Height %d "
	switch enc {
	case Bilevel:
		if g4 {
			return fmt.Sprintf(base+"/ColorSpace /DeviceGray /BitsPerComponent 1 /Filter /CCITTFaxDecode /DecodeParms << /K -1 /Columns %d /Rows %d >>", w, h, w, h)
		}
		return fmt.Sprintf(base+"/ColorSpace /DeviceGray /BitsPerComponent 1 /Filter /FlateDecode /DecodeParms << /Predictor 15 /Colors 1 /BitsPerComponent 1 /Columns %d >>", w, h, w)
	case Text:
		pal, _ := st.textPalette()
		return fmt.Sprintf(base+"/ColorSpace [/Indexed /DeviceGray 3 <%x>] /BitsPerComponent 2 /Filter /FlateDecode /DecodeParms << /Predictor 15 /Colors 1 /BitsPerComponent 2 /Columns %d >>", w, h, pal[:], w)
	case Gray:
		return fmt.Sprintf(base+"/ColorSpace /DeviceGray /BitsPerComponent 8 /Filter /FlateDecode /DecodeParms << /Predictor 15 /Colors 1 /BitsPerComponent 8 /Columns %d >>", w, h, w)
	case RGB:
		return fmt.Sprintf(base+"/ColorSpace /DeviceRGB /BitsPerComponent 8 /Filter /FlateDecode /DecodeParms << /Predictor 15 /Colors 3 /BitsPerComponent 8 /Columns %d >>", w, h, w)
	case JPEG:
		cs := "/DeviceRGB"
		if st.gray {
			cs = "/DeviceGray"
		}
		return fmt.Sprintf(base+"/ColorSpace %s /BitsPerComponent 8 /Filter /DCTDecode", w, h, cs)
	}
	panic("pdfout: unknown encoding") // unreachable: choose returns one of the above
}

// encodeFlate writes img's rows, converted for enc (Bilevel at threshold,
// Text in palette pal, Gray or RGB),
// through PNG predictors (a filter chosen per row, see filterRow) into
// zlib.
func encodeFlate(w *bufio.Writer, img *image.RGBA, enc Encoding, threshold byte, pal [4]byte) error {
	zw, err := zlib.NewWriterLevel(w, zlib.DefaultCompression)
	if err != nil {
		return err
	}
	b := img.Bounds()
	width := b.Dx()
	var n, bpp int
	switch enc {
	case Bilevel:
		n, bpp = (width+7)/8, 1
	case Text:
		n, bpp = (width+3)/4, 1
	case Gray:
		n, bpp = width, 1
	default:
		n, bpp = 3*width, 3
	}
	index := nearest(pal)
	rgb := make([]byte, 3*width)
	prev, cur := make([]byte, n), make([]byte, n)
	var filtered [5][]byte
	for i := range filtered {
		filtered[i] = make([]byte, n+1)
		filtered[i][0] = byte(i)
	}
	for y := b.Min.Y; y < b.Max.Y; y++ {
		compositeRow(rgb, img.Pix[img.PixOffset(b.Min.X, y):])
		switch enc {
		case Bilevel:
			// 1 is white: the default Decode of DeviceGray.
			clear(cur)
			for x := range width {
				if rgb[3*x] >= threshold {
					cur[x/8] |= 0x80 >> (x % 8)
				}
			}
		case Text:
			// The palette index of the nearest level; the first
			// pixel in the high bits.
			clear(cur)
			for x := range width {
				cur[x/4] |= index[rgb[3*x]] << (2 * (3 - x%4))
			}
		case Gray:
			for x := range width {
				cur[x] = rgb[3*x]
			}
		default:
			copy(cur, rgb)
		}
		if _, err := zw.Write(filterRow(&filtered, cur, prev, bpp)); err != nil {
			return err
		}
		prev, cur = cur, prev
	}
	return zw.Close()
}

// encodeBilevel returns img's pixels as a Bilevel stream, thresholded
// at threshold: CCITT Group 4 (g4 true) unless Flate with predictors is
// smaller. Text codes 10-30 % smaller in Group 4; noise, fine halftones
// (Small mode's threshold of a gray picture) and exactly repeating
// patterns code smaller in Flate, so both are made and the smaller kept.
func encodeBilevel(img *image.RGBA, threshold byte) (stream []byte, g4 bool, err error) {
	b := img.Bounds()
	rgb := make([]byte, 3*b.Dx())
	ccitt := encodeG4(func(y int, row []byte) {
		compositeRow(rgb, img.Pix[img.PixOffset(b.Min.X, b.Min.Y+y):])
		for x := range row {
			row[x] = 0
			if rgb[3*x] < threshold {
				row[x] = 1
			}
		}
	}, b.Dx(), b.Dy())
	var flate bytes.Buffer
	bw := bufio.NewWriter(&flate)
	if err := encodeFlate(bw, img, Bilevel, threshold, [4]byte{}); err != nil {
		return nil, false, err
	}
	if err := bw.Flush(); err != nil {
		return nil, false, err
	}
	if flate.Len() < len(ccitt) {
		return flate.Bytes(), false, nil
	}
	return ccitt, true, nil
}

// filterRow applies the five PNG filters to cur and returns the filtered
// row to store. It takes the filter whose bytes, read as signed, have the
// least absolute sum (libpng's heuristic), but keeps None unless that
// filter at least halves None's sum: on anti-aliased text the heuristic
// prefers predictors that turn clean runs into noise (measured at 150 dpi:
// None is 2-7 % smaller than the heuristic's choice on text pages), while
// on gradients and pictures a predictor wins by far more than 2x (5-8x
// smaller on the CBZ and PNG samples), which this rule keeps.
func filterRow(f *[5][]byte, cur, prev []byte, bpp int) []byte {
	none, sub, up, avg, paeth := f[0][1:], f[1][1:], f[2][1:], f[3][1:], f[4][1:]
	copy(none, cur)
	for i := range cur {
		var a, c byte
		if i >= bpp {
			a, c = cur[i-bpp], prev[i-bpp]
		}
		bb := prev[i]
		sub[i] = cur[i] - a
		up[i] = cur[i] - bb
		avg[i] = cur[i] - byte((int(a)+int(bb))/2)
		paeth[i] = cur[i] - paethPredictor(a, bb, c)
	}
	noneSum := absSum(none)
	best, bestSum := 0, noneSum
	for k := 1; k < len(f); k++ {
		if sum := absSum(f[k][1:]); sum < bestSum {
			best, bestSum = k, sum
		}
	}
	if 2*bestSum > noneSum {
		return f[0]
	}
	return f[best]
}

func absSum(b []byte) int {
	sum := 0
	for _, v := range b {
		sum += absSigned(v)
	}
	return sum
}

func absSigned(v byte) int {
	if v < 128 {
		return int(v)
	}
	return 256 - int(v)
}

func paethPredictor(a, b, c byte) byte {
	p := int(a) + int(b) - int(c)
	pa, pb, pc := abs(p-int(a)), abs(p-int(b)), abs(p-int(c))
	switch {
	case pa <= pb && pa <= pc:
		return a
	case pb <= pc:
		return b
	}
	return c
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

// encodeJPEG writes img composited onto white as a baseline JPEG, one
// component if gray.
func encodeJPEG(w *bufio.Writer, img *image.RGBA, gray bool, quality int) error {
	b := img.Bounds()
	var src image.Image
	row := make([]byte, 3*b.Dx())
	if gray {
		g := image.NewGray(image.Rect(0, 0, b.Dx(), b.Dy()))
		for y := range b.Dy() {
			compositeRow(row, img.Pix[img.PixOffset(b.Min.X, b.Min.Y+y):])
			for x := range b.Dx() {
				g.Pix[y*g.Stride+x] = row[3*x]
			}
		}
		src = g
	} else {
		o := image.NewRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
		for y := range b.Dy() {
			compositeRow(row, img.Pix[img.PixOffset(b.Min.X, b.Min.Y+y):])
			d := o.Pix[y*o.Stride:]
			for x := range b.Dx() {
				d[4*x], d[4*x+1], d[4*x+2], d[4*x+3] = row[3*x], row[3*x+1], row[3*x+2], 255
			}
		}
		src = o
	}
	return jpeg.Encode(w, src, &jpeg.Options{Quality: quality})
}
