package pdfout

// CCITT Group 4 (ITU-T T.6) encoding of bilevel pages, for PDF's
// CCITTFaxDecode filter with /K -1, which every PDF reader decodes. Each
// row is coded against the one above, as the positions where its colour
// changes relative to the changes above: an edge that continues straight
// down costs one bit. On text pages at 150 dpi, thresholded, it is 10-30 %
// smaller than the 1-bit rows under Flate with predictors (measured on
// the 12 first pages of shared-mime-info-spec.pdf: 204 KB against 249
// KB); glyph edges at that resolution are too ragged for the larger gains
// it has on scans at 300 dpi.

// code is a variable-length code: its low len bits, most significant
// first.
type code struct {
	bits uint16
	len  uint8
}

// Modes (T.6 table 1).
var (
	codePass       = code{0b0001, 4}
	codeHorizontal = code{0b001, 3}
	// codeVertical[d+3] codes a1 - b1 = d, for d in -3..3.
	codeVertical = [7]code{
		{0b0000010, 7}, {0b000010, 6}, {0b010, 3},
		{0b1, 1},
		{0b011, 3}, {0b000011, 6}, {0b0000011, 7},
	}
	codeEOL = code{0b000000000001, 12}
)

// Run lengths (T.4 tables 2 and 3): terminating codes for 0..63, make-up
// codes for multiples of 64 up to 1728 by colour, and up to 2560 shared.
var (
	whiteTerm = [64]code{
		{0b00110101, 8}, {0b000111, 6}, {0b0111, 4}, {0b1000, 4}, {0b1011, 4}, {0b1100, 4}, {0b1110, 4}, {0b1111, 4},
		{0b10011, 5}, {0b10100, 5}, {0b00111, 5}, {0b01000, 5}, {0b001000, 6}, {0b000011, 6}, {0b110100, 6}, {0b110101, 6},
		{0b101010, 6}, {0b101011, 6}, {0b0100111, 7}, {0b0001100, 7}, {0b0001000, 7}, {0b0010111, 7}, {0b0000011, 7}, {0b0000100, 7},
		{0b0101000, 7}, {0b0101011, 7}, {0b0010011, 7}, {0b0100100, 7}, {0b0011000, 7}, {0b00000010, 8}, {0b00000011, 8}, {0b00011010, 8},
		{0b00011011, 8}, {0b00010010, 8}, {0b00010011, 8}, {0b00010100, 8}, {0b00010101, 8}, {0b00010110, 8}, {0b00010111, 8}, {0b00101000, 8},
		{0b00101001, 8}, {0b00101010, 8}, {0b00101011, 8}, {0b00101100, 8}, {0b00101101, 8}, {0b00000100, 8}, {0b00000101, 8}, {0b00001010, 8},
		{0b00001011, 8}, {0b01010010, 8}, {0b01010011, 8}, {0b01010100, 8}, {0b01010101, 8}, {0b00100100, 8}, {0b00100101, 8}, {0b01011000, 8},
		{0b01011001, 8}, {0b01011010, 8}, {0b01011011, 8}, {0b01001010, 8}, {0b01001011, 8}, {0b00110010, 8}, {0b00110011, 8}, {0b00110100, 8},
	}
	blackTerm = [64]code{
		{0b0000110111, 10}, {0b010, 3}, {0b11, 2}, {0b10, 2}, {0b011, 3}, {0b0011, 4}, {0b0010, 4}, {0b00011, 5},
		{0b000101, 6}, {0b000100, 6}, {0b0000100, 7}, {0b0000101, 7}, {0b0000111, 7}, {0b00000100, 8}, {0b00000111, 8}, {0b000011000, 9},
		{0b0000010111, 10}, {0b0000011000, 10}, {0b0000001000, 10}, {0b00001100111, 11}, {0b00001101000, 11}, {0b00001101100, 11}, {0b00000110111, 11}, {0b00000101000, 11},
		{0b00000010111, 11}, {0b00000011000, 11}, {0b000011001010, 12}, {0b000011001011, 12}, {0b000011001100, 12}, {0b000011001101, 12}, {0b000001101000, 12}, {0b000001101001, 12},
		{0b000001101010, 12}, {0b000001101011, 12}, {0b000011010010, 12}, {0b000011010011, 12}, {0b000011010100, 12}, {0b000011010101, 12}, {0b000011010110, 12}, {0b000011010111, 12},
		{0b000001101100, 12}, {0b000001101101, 12}, {0b000011011010, 12}, {0b000011011011, 12}, {0b000001010100, 12}, {0b000001010101, 12}, {0b000001010110, 12}, {0b000001010111, 12},
		{0b000001100100, 12}, {0b000001100101, 12}, {0b000001010010, 12}, {0b000001010011, 12}, {0b000000100100, 12}, {0b000000110111, 12}, {0b000000111000, 12}, {0b000000100111, 12},
		{0b000000101000, 12}, {0b000001011000, 12}, {0b000001011001, 12}, {0b000000101011, 12}, {0b000000101100, 12}, {0b000001011010, 12}, {0b000001100110, 12}, {0b000001100111, 12},
	}
	// Make-up codes for 64, 128, ... 1728: index n/64 - 1.
	whiteMakeup = [27]code{
		{0b11011, 5}, {0b10010, 5}, {0b010111, 6}, {0b0110111, 7}, {0b00110110, 8}, {0b00110111, 8}, {0b01100100, 8}, {0b01100101, 8},
		{0b01101000, 8}, {0b01100111, 8}, {0b011001100, 9}, {0b011001101, 9}, {0b011010010, 9}, {0b011010011, 9}, {0b011010100, 9}, {0b011010101, 9},
		{0b011010110, 9}, {0b011010111, 9}, {0b011011000, 9}, {0b011011001, 9}, {0b011011010, 9}, {0b011011011, 9}, {0b010011000, 9}, {0b010011001, 9},
		{0b010011010, 9}, {0b011000, 6}, {0b010011011, 9},
	}
	blackMakeup = [27]code{
		{0b0000001111, 10}, {0b000011001000, 12}, {0b000011001001, 12}, {0b000001011011, 12}, {0b000000110011, 12}, {0b000000110100, 12}, {0b000000110101, 12}, {0b0000001101100, 13},
		{0b0000001101101, 13}, {0b0000001001010, 13}, {0b0000001001011, 13}, {0b0000001001100, 13}, {0b0000001001101, 13}, {0b0000001110010, 13}, {0b0000001110011, 13}, {0b0000001110100, 13},
		{0b0000001110101, 13}, {0b0000001110110, 13}, {0b0000001110111, 13}, {0b0000001010010, 13}, {0b0000001010011, 13}, {0b0000001010100, 13}, {0b0000001010101, 13}, {0b0000001011010, 13},
		{0b0000001011011, 13}, {0b0000001100100, 13}, {0b0000001100101, 13},
	}
	// Make-up codes for 1792, 1856, ... 2560, either colour: index
	// n/64 - 28.
	sharedMakeup = [13]code{
		{0b00000001000, 11}, {0b00000001100, 11}, {0b00000001101, 11}, {0b000000010010, 12}, {0b000000010011, 12}, {0b000000010100, 12}, {0b000000010101, 12},
		{0b000000010110, 12}, {0b000000010111, 12}, {0b000000011100, 12}, {0b000000011101, 12}, {0b000000011110, 12}, {0b000000011111, 12},
	}
)

// bitWriter packs codes, most significant bit first, into whole bytes.
type bitWriter struct {
	out  []byte
	acc  uint32 // pending bits, in the low n bits
	nacc uint8
}

func (b *bitWriter) put(c code) {
	b.acc = b.acc<<c.len | uint32(c.bits)
	b.nacc += c.len
	for b.nacc >= 8 {
		b.nacc -= 8
		b.out = append(b.out, byte(b.acc>>b.nacc))
	}
	b.acc &= 1<<b.nacc - 1
}

// flush pads the last byte with zero bits.
func (b *bitWriter) flush() []byte {
	if b.nacc > 0 {
		b.out = append(b.out, byte(b.acc<<(8-b.nacc)))
		b.acc, b.nacc = 0, 0
	}
	return b.out
}

// run codes a run of n pixels of one colour: make-up codes for 2560 while
// more than 2623 remain (T.4 4.1.1), one make-up code for the multiple of
// 64 below n, then the terminating code of the rest.
func (b *bitWriter) run(n int, black bool) {
	for n > 2560+63 {
		b.put(sharedMakeup[len(sharedMakeup)-1])
		n -= 2560
	}
	if n >= 64 {
		m := n / 64
		switch {
		case m >= 28:
			b.put(sharedMakeup[m-28])
		case black:
			b.put(blackMakeup[m-1])
		default:
			b.put(whiteMakeup[m-1])
		}
		n -= m * 64
	}
	if black {
		b.put(blackTerm[n])
	} else {
		b.put(whiteTerm[n])
	}
}

// nextChange returns the first changing element of line at or after
// start: the first x >= start whose colour differs from that of x-1, the
// pixel before the line (x = -1) being white; len(line) if there is none.
// line holds one byte per pixel, 1 for black.
func nextChange(line []byte, start int) int {
	if start < 0 {
		start = 0
	}
	for x := start; x < len(line); x++ {
		prev := byte(0)
		if x > 0 {
			prev = line[x-1]
		}
		if line[x] != prev {
			return x
		}
	}
	return len(line)
}

// encodeG4Row codes cur against ref (the row above; all white for the
// first row), both one byte per pixel, 1 for black (T.6 2.2).
func (b *bitWriter) encodeG4Row(cur, ref []byte) {
	w := len(cur)
	a0 := -1
	colour := byte(0) // a0's colour: white at the start of a row
	for a0 < w {
		a1 := nextChange(cur, a0+1)
		// b1: the first changing element on ref after a0 whose colour
		// is the opposite of a0's; b2 the next one after it.
		b1 := nextChange(ref, a0+1)
		if b1 < w && ref[b1] == colour {
			b1 = nextChange(ref, b1+1)
		}
		b2 := w
		if b1 < w {
			b2 = nextChange(ref, b1+1)
		}
		switch d := a1 - b1; {
		case b2 < a1:
			b.put(codePass)
			a0 = b2
		case d >= -3 && d <= 3:
			b.put(codeVertical[d+3])
			a0, colour = a1, 1-colour
		default:
			a2 := nextChange(cur, a1+1)
			b.put(codeHorizontal)
			b.run(a1-max(a0, 0), colour == 1)
			b.run(a2-a1, colour == 0)
			a0 = a2
		}
	}
}

// encodeG4 codes rows (each one byte per pixel, 1 for black, all of one
// width), ending with EOFB (two EOLs), as PDF's CCITTFaxDecode reads
// with /K -1 and its other parameters at their defaults (BlackIs1 false:
// the decoded 0 bits are black, DeviceGray's own reading).
func encodeG4(rows func(y int, row []byte), width, height int) []byte {
	var b bitWriter
	ref, cur := make([]byte, width), make([]byte, width)
	for y := range height {
		rows(y, cur)
		b.encodeG4Row(cur, ref)
		ref, cur = cur, ref
	}
	b.put(codeEOL)
	b.put(codeEOL)
	return b.flush()
}
