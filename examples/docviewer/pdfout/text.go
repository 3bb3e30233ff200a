package pdfout

import (
	"bytes"
	"compress/zlib"
	"fmt"
	"image"
	"strings"
)

// Word is one recognised word of a page (from OCR), in the pixel
// coordinates of the page's image: Box is the word, Line the line it
// belongs to (Box if unknown). The text layer places the word at Box's
// left, on Line's baseline, at Line's height, so that the words of a line
// share a baseline and text extraction keeps them on one line.
type Word struct {
	Text      string
	Box, Line image.Rectangle
}

// The text layer's font: Courier, one of the 14 standard fonts every
// reader has (nothing embedded, nothing parsed), in WinAnsiEncoding.
// Its glyphs are all 600/1000 em wide, so a word's width needs no
// metrics table: horizontal scaling (Tz) stretches it to its box.
const (
	textFont       = "<< /Type /Font /Subtype /Type1 /BaseFont /Courier /Encoding /WinAnsiEncoding >>"
	textGlyphWidth = 0.6
	// textDescent is the share of a line's height below the baseline.
	textDescent = 0.2
	// maxTextWords bounds the words drawn on one page: more than any
	// page of text holds at the largest DPI.
	maxTextWords = 20000
	maxWordBytes = 256
)

// AddPageText is AddPage with an invisible text layer (text render mode
// 3: neither filled nor stroked) of words over the image: readers find,
// select and copy the words, and the page looks exactly as AddPage's.
// Words are clamped to the image; text is written in WinAnsiEncoding,
// runes it lacks become '?'. An empty words is AddPage.
func (p *Writer) AddPageText(img *image.RGBA, dpi float64, words []Word) error {
	if len(words) == 0 {
		return p.AddPage(img, dpi)
	}
	if len(words) > maxTextWords {
		return fmt.Errorf("pdfout: %d words on a page: at most %d", len(words), maxTextWords)
	}
	if p.err != nil {
		return p.err
	}
	wpt, hpt, err := p.pageSize(img, dpi)
	if err != nil {
		return err
	}
	text, err := textLayer(img.Bounds(), dpi, wpt, hpt, words)
	if err != nil {
		return err
	}
	if p.font == 0 {
		if len(p.pages) == 0 {
			p.header()
		}
		p.font = len(p.offs) + 1
		p.begin(p.font)
		p.printf("%s\nendobj\n", textFont)
	}
	p.text = text
	defer func() { p.text = nil }()
	return p.AddPage(img, dpi)
}

// textLayer returns the compressed content stream of a page that shows
// its image (bounds b, at dpi, wpt x hpt points) and draws words over it,
// invisibly.
func textLayer(b image.Rectangle, dpi, wpt, hpt float64, words []Word) ([]byte, error) {
	s := 72 / dpi
	var c strings.Builder
	fmt.Fprintf(&c, "q %s 0 0 %s 0 0 cm /Im0 Do Q\nBT 3 Tr\n", num(wpt), num(hpt))
	for _, w := range words {
		box := w.Box.Intersect(b)
		line := w.Line.Intersect(b)
		if line.Empty() {
			line = box
		}
		t, glyphs := winAnsi(w.Text)
		if box.Empty() || glyphs == 0 {
			continue
		}
		size := float64(line.Dy()) * s
		x := float64(box.Min.X-b.Min.X) * s
		y := (float64(b.Max.Y-line.Max.Y) + textDescent*float64(line.Dy())) * s
		scale := 100 * float64(box.Dx()) * s / (textGlyphWidth * size * float64(glyphs))
		fmt.Fprintf(&c, "/F0 %s Tf %s Tz 1 0 0 1 %s %s Tm (%s) Tj\n", num(size), num(min(max(scale, 1), 1000)), num(x), num(y), t)
	}
	c.WriteString("ET\n")
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	if _, err := zw.Write([]byte(c.String())); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return z.Bytes(), nil
}

// winAnsi returns s as the body of a PDF literal string in
// WinAnsiEncoding: printable ASCII as is (with ( ) \ escaped), Latin-1
// letters and signs as octal escapes, typographic quotes, dashes and
// ligatures as their ASCII spelling, anything else (controls included)
// as '?'; and how many glyphs it shows. At most maxWordBytes bytes of s
// are used.
func winAnsi(s string) (string, int) {
	if len(s) > maxWordBytes {
		s = s[:maxWordBytes]
	}
	var b strings.Builder
	glyphs := 0
	for _, r := range s {
		glyphs++
		switch {
		case r == '(' || r == ')' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r >= 0x20 && r < 0x7f:
			b.WriteRune(r)
		case r >= 0xa0 && r <= 0xff:
			fmt.Fprintf(&b, "\\%03o", r)
		case r == '‘' || r == '’':
			b.WriteByte('\'')
		case r == '“' || r == '”':
			b.WriteByte('"')
		case r == '–' || r == '—':
			b.WriteByte('-')
		case r == 'ﬁ':
			b.WriteString("fi")
			glyphs++
		case r == 'ﬂ':
			b.WriteString("fl")
			glyphs++
		default:
			b.WriteByte('?')
		}
	}
	return b.String(), glyphs
}
