// Package pdfout writes the "safe PDF" the viewer converts documents into:
// one full-page image per page and nothing else. No fonts, no scripts, no
// links, no metadata, no forms: only what a pixel can carry survives.
//
// It is a small writer of its own rather than a general PDF library because
// a raster-only PDF needs five object kinds and an xref table, all of which
// fit on one screen and can be checked by eye; a general writer would bring
// a large dependency that parses and emits far more than is needed.
//
// Each page is stored in the smallest encoding its pixels allow without
// loss (1-bit, 8-bit gray or RGB under Flate with PNG predictors), except
// two kinds: a page of black ink on white keeps its anti-aliased edges at
// four gray levels (Text, unless Options.Lossless), and a photographic
// page, or any when the caller asks (Options.Quality), is JPEG. The
// pixels are read, never interpreted, so the choice carries no risk from
// the document.
package pdfout

import (
	"bufio"
	"errors"
	"fmt"
	"image"
	"io"
	"math"
	"strings"
)

// maxPagePoints is the largest page side PDF readers accept without
// UserUnit (PDF 32000-1, annex C: 14 400 units, 200 inches).
const maxPagePoints = 14400

// Writer streams pages to w. Each page's encoding is chosen from its own
// pixels (see Options) and the image is compressed straight into the
// output; a Flate page buffers a few rows, a JPEG page one copy of the
// page. Not safe for concurrent use.
type Writer struct {
	w      *countWriter
	bw     *bufio.Writer
	opt    Options
	seen   []uint64   // distinct-colour set for stats, reused across pages
	offs   []int64    // offsets of objects 1..n (index 0 is object 1)
	pages  []int      // object numbers of the pages
	encs   []Encoding // encoding of each page
	err    error      // first error; the writer is unusable after it
	closed bool
	font   int    // object number of the text layer's font; 0 before the first
	text   []byte // compressed text layer of the page being added (AddPageText)
}

// Object numbers: 1 is the catalog, 2 the page tree (written last, when the
// kids are known); each page then takes four: page, content, image, length.
const (
	objCatalog = 1
	objPages   = 2
)

// NewWriter starts a PDF on w with the default Options (lossless except
// photographic pages). Nothing is written until the first AddPage.
func NewWriter(w io.Writer) *Writer { return NewWriterOptions(w, Options{}) }

// NewWriterOptions starts a PDF on w whose pages are encoded as opt says.
// A Quality outside 0..100 is an error at the first AddPage.
func NewWriterOptions(w io.Writer, opt Options) *Writer {
	cw := &countWriter{w: w}
	pw := &Writer{w: cw, bw: bufio.NewWriterSize(cw, 64<<10), opt: opt}
	pw.offs = make([]int64, 2)
	if opt.Quality < 0 || opt.Quality > 100 {
		pw.err = fmt.Errorf("pdfout: JPEG quality %d: must be 1..100, or 0 for automatic", opt.Quality)
	}
	return pw
}

// Encodings returns the encoding chosen for each page added so far.
func (p *Writer) Encodings() []Encoding { return append([]Encoding(nil), p.encs...) }

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func (p *Writer) pos() int64 { return p.w.n + int64(p.bw.Buffered()) }

func (p *Writer) printf(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.bw, format, args...)
	}
}

// begin records object num's offset and writes its header.
func (p *Writer) begin(num int) {
	for len(p.offs) < num {
		p.offs = append(p.offs, 0)
	}
	p.offs[num-1] = p.pos()
	p.printf("%d 0 obj\n", num)
}

func (p *Writer) header() {
	// The binary comment tells transfer tools the file is binary.
	p.printf("%%PDF-1.4\n%%\xe2\xe3\xcf\xd3\n")
	p.begin(objCatalog)
	p.printf("<< /Type /Catalog /Pages %d 0 R >>\nendobj\n", objPages)
}

// AddPage appends a page showing img at dpi: the page is
// pixels*72/dpi points on each side. Alpha is composited onto white and
// dropped; the pixels are stored in the encoding the Options choose for
// them (bilevel, gray or RGB under Flate, or JPEG).
func (p *Writer) AddPage(img *image.RGBA, dpi float64) error {
	if p.err != nil {
		return p.err
	}
	wpt, hpt, err := p.pageSize(img, dpi)
	if err != nil {
		return err
	}
	b := img.Bounds()
	if len(p.pages) == 0 {
		p.header()
	}
	page := len(p.offs) + 1
	content, xobj, length := page+1, page+2, page+3
	p.pages = append(p.pages, page)

	p.begin(page)
	font := ""
	if p.text != nil {
		font = fmt.Sprintf(" /Font << /F0 %d 0 R >>", p.font)
	}
	p.printf("<< /Type /Page /Parent %d 0 R /MediaBox [0 0 %s %s] /Resources << /XObject << /Im0 %d 0 R >>%s >> /Contents %d 0 R >>\nendobj\n",
		objPages, num(wpt), num(hpt), xobj, font, content)

	draw := fmt.Sprintf("q %s 0 0 %s 0 0 cm /Im0 Do Q\n", num(wpt), num(hpt))
	p.begin(content)
	if p.text != nil {
		// The image, then the invisible text (AddPageText), in one
		// compressed stream.
		draw = string(p.text)
		p.printf("<< /Filter /FlateDecode /Length %d >>\nstream\n%s\nendstream\nendobj\n", len(draw), draw)
	} else {
		p.printf("<< /Length %d >>\nstream\n%sendstream\nendobj\n", len(draw), draw)
	}

	if p.seen == nil {
		p.seen = make([]uint64, 1<<24/64)
	}
	st := stats(img, p.seen)
	enc := choose(st, p.opt)
	p.encs = append(p.encs, enc)
	var bilevel []byte
	g4 := false
	if enc == Bilevel && p.err == nil {
		bilevel, g4, p.err = encodeBilevel(img, SmallThreshold)
	}
	p.begin(xobj)
	p.printf("<< %s /Length %d 0 R >>\nstream\n", imageDict(enc, st, b.Dx(), b.Dy(), g4), length)
	start := p.pos()
	if enc == Bilevel {
		if p.err == nil {
			_, p.err = p.bw.Write(bilevel)
		}
	} else {
		p.writePixels(img, enc, st)
	}
	n := p.pos() - start
	p.printf("\nendstream\nendobj\n")

	p.begin(length)
	p.printf("%d\nendobj\n", n)
	return p.err
}

// pageSize checks that img can be added at dpi and returns the page's
// size in points.
func (p *Writer) pageSize(img *image.RGBA, dpi float64) (wpt, hpt float64, err error) {
	if p.closed {
		return 0, 0, errors.New("pdfout: AddPage after Close")
	}
	b := img.Bounds()
	if b.Empty() {
		return 0, 0, errors.New("pdfout: empty image")
	}
	if !(dpi > 0) || math.IsInf(dpi, 0) {
		return 0, 0, fmt.Errorf("pdfout: invalid dpi %v", dpi)
	}
	wpt, hpt = float64(b.Dx())*72/dpi, float64(b.Dy())*72/dpi
	if wpt > maxPagePoints || hpt > maxPagePoints {
		return 0, 0, fmt.Errorf("pdfout: page of %.0fx%.0f pt exceeds %d pt", wpt, hpt, maxPagePoints)
	}
	return wpt, hpt, nil
}

// writePixels compresses img in encoding enc.
func (p *Writer) writePixels(img *image.RGBA, enc Encoding, st pageStats) {
	if p.err != nil {
		return
	}
	switch enc {
	case JPEG:
		q := p.opt.Quality
		if q == 0 {
			q = DefaultJPEGQuality
		}
		p.err = encodeJPEG(p.bw, img, st.gray, q)
	default:
		pal, _ := st.textPalette()
		p.err = encodeFlate(p.bw, img, enc, SmallThreshold, pal)
	}
}

// num formats a coordinate: PDF wants plain decimals, no exponents.
func num(v float64) string {
	s := fmt.Sprintf("%.4f", v)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

// Close writes the page tree, the xref table and the trailer. It does not
// close the underlying writer. A PDF needs at least one page.
func (p *Writer) Close() error {
	if p.err != nil {
		return p.err
	}
	if p.closed {
		return nil
	}
	p.closed = true
	if len(p.pages) == 0 {
		p.err = errors.New("pdfout: no pages")
		return p.err
	}
	kids := make([]string, len(p.pages))
	for i, n := range p.pages {
		kids[i] = fmt.Sprintf("%d 0 R", n)
	}
	p.begin(objPages)
	p.printf("<< /Type /Pages /Kids [%s] /Count %d >>\nendobj\n", strings.Join(kids, " "), len(p.pages))

	xref := p.pos()
	// Every entry is exactly 20 bytes: offset, generation, type, CR LF.
	p.printf("xref\n0 %d\n0000000000 65535 f\r\n", len(p.offs)+1)
	for _, off := range p.offs {
		p.printf("%010d 00000 n\r\n", off)
	}
	p.printf("trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n", len(p.offs)+1, objCatalog, xref)
	if p.err == nil {
		p.err = p.bw.Flush()
	}
	return p.err
}
