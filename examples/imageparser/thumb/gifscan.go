package thumb

import "fmt"

// countGIFFrames walks the GIF block structure and counts image descriptors
// without decompressing any pixel data and without allocating, so that a file
// with millions of tiny frames is refused in O(len(data)) time. It stops as
// soon as the count exceeds b.MaxFrames.
//
// The walk follows the GIF89a grammar: header and logical screen descriptor
// (13 bytes), optional global colour table, then blocks until the trailer
// (0x3B): extensions (0x21, label, data sub-blocks) and images (0x2C, 9-byte
// descriptor, optional local colour table, LZW code size, data sub-blocks).
// Like browsers, and unlike image/gif.DecodeAll, a stream that ends cleanly
// at a block boundary after at least one image is accepted without trailer;
// a stream that ends inside a block is corrupt.
func countGIFFrames(data []byte, b Budget) (int, error) {
	const (
		hdrLen       = 13
		extension    = 0x21
		imageDesc    = 0x2C
		trailer      = 0x3B
		hasColorTbl  = 0x80
		colorTblBits = 0x07
	)
	truncated := func(what string) error {
		return fmt.Errorf("%w: gif: truncated %s", ErrCorrupt, what)
	}
	if len(data) < hdrLen {
		return 0, truncated("header")
	}
	pos := hdrLen
	if f := data[10]; f&hasColorTbl != 0 {
		pos += 3 << (1 + f&colorTblBits)
	}
	// skipSubBlocks advances past a sequence of length-prefixed sub-blocks
	// ending with a zero length.
	skipSubBlocks := func() bool {
		for {
			if pos >= len(data) {
				return false
			}
			n := int(data[pos])
			pos++
			if n == 0 {
				return true
			}
			pos += n
		}
	}
	frames := 0
	for {
		if pos > len(data) {
			return 0, truncated("colour table")
		}
		if pos == len(data) {
			if frames == 0 {
				return 0, fmt.Errorf("%w: gif: no image data", ErrCorrupt)
			}
			return frames, nil
		}
		c := data[pos]
		pos++
		switch c {
		case extension:
			pos++ // label
			if !skipSubBlocks() {
				return 0, truncated("extension")
			}
		case imageDesc:
			if len(data)-pos < 9 {
				return 0, truncated("image descriptor")
			}
			f := data[pos+8]
			pos += 9
			if f&hasColorTbl != 0 {
				pos += 3 << (1 + f&colorTblBits)
			}
			pos++ // LZW minimum code size
			if !skipSubBlocks() {
				return 0, truncated("image data")
			}
			frames++
			if err := b.checkFrames(frames); err != nil {
				return 0, err
			}
		case trailer:
			if frames == 0 {
				return 0, fmt.Errorf("%w: gif: no image data", ErrCorrupt)
			}
			return frames, nil
		default:
			return 0, fmt.Errorf("%w: gif: unknown block type 0x%02x at offset %d", ErrCorrupt, c, pos-1)
		}
	}
}
