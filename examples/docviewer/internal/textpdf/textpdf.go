// Package textpdf generates a text-heavy PDF like a typeset paper: Letter
// pages of justified-looking 10 pt Times body text with section headings
// and a page number, one compressed content stream per page and base-14
// fonts (not embedded, so the file is smaller than a pdfTeX paper of the
// same length: ratios against it are conservative). Deterministic: the
// same page count gives the same bytes. It measures safe-PDF sizes
// (convert's tests, and `go run ./internal/gen -paper N`).
package textpdf

import (
	"bytes"
	"compress/zlib"
	"fmt"
	"math/rand/v2"
	"strings"
)

var words = strings.Fields(`the a of and to in is that for on with as by this we are be from
an which it at or our not these can each page renderer sandbox broker document pixels
process policy seccomp namespace memory limit untrusted parser kernel system call
filter result results figure table section method approach evaluation performance
security isolation overhead throughput latency measured shows compared baseline model
analysis proof theorem lemma algorithm input output bound error value function`)

// Generate returns a pages-page PDF.
func Generate(pages int) []byte {
	rng := rand.New(rand.NewPCG(84, uint64(pages)))
	objs := []string{"<< /Type /Catalog /Pages 2 0 R >>", ""}
	fonts := "<< /F1 << /Type /Font /Subtype /Type1 /BaseFont /Times-Roman >> /F2 << /Type /Font /Subtype /Type1 /BaseFont /Times-Bold >> >>"
	var kids []string
	for p := 1; p <= pages; p++ {
		var c strings.Builder
		y := 720
		for y > 90 {
			if rng.IntN(6) == 0 {
				fmt.Fprintf(&c, "BT /F2 12 Tf 72 %d Td (%d.%d %s %s) Tj ET\n", y, p, rng.IntN(9)+1, title(words[rng.IntN(len(words))]), words[rng.IntN(len(words))])
				y -= 18
			}
			for range 4 + rng.IntN(8) {
				if y <= 90 {
					break
				}
				fmt.Fprintf(&c, "BT /F1 10 Tf 72 %d Td (%s) Tj ET\n", y, line(rng, 95))
				y -= 12
			}
			y -= 6
		}
		fmt.Fprintf(&c, "BT /F1 10 Tf 300 50 Td (%d) Tj ET\n", p)
		var z bytes.Buffer
		zw, _ := zlib.NewWriterLevel(&z, zlib.BestCompression)
		zw.Write([]byte(c.String()))
		zw.Close()
		n := len(objs) + 1
		objs = append(objs,
			fmt.Sprintf("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font %s >> /Contents %d 0 R >>", fonts, n+1),
			fmt.Sprintf("<< /Filter /FlateDecode /Length %d >>\nstream\n%s\nendstream", z.Len(), z.Bytes()))
		kids = append(kids, fmt.Sprintf("%d 0 R", n))
	}
	objs[1] = fmt.Sprintf("<< /Type /Pages /Kids [%s] /Count %d >>", strings.Join(kids, " "), pages)

	var b bytes.Buffer
	b.WriteString("%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
	offs := make([]int, len(objs))
	for i, o := range objs {
		offs[i] = b.Len()
		fmt.Fprintf(&b, "%d 0 obj\n%s\nendobj\n", i+1, o)
	}
	xref := b.Len()
	fmt.Fprintf(&b, "xref\n0 %d\n0000000000 65535 f\r\n", len(objs)+1)
	for _, o := range offs {
		fmt.Fprintf(&b, "%010d 00000 n\r\n", o)
	}
	fmt.Fprintf(&b, "trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n", len(objs)+1, xref)
	return b.Bytes()
}

func title(w string) string { return strings.ToUpper(w[:1]) + w[1:] }

// line is about n characters of words, with the odd comma or period.
func line(rng *rand.Rand, n int) string {
	var s strings.Builder
	for s.Len() < n {
		if s.Len() > 0 {
			s.WriteByte(' ')
		}
		s.WriteString(words[rng.IntN(len(words))])
		switch rng.IntN(12) {
		case 0:
			s.WriteByte(',')
		case 1:
			s.WriteByte('.')
		}
	}
	return s.String()
}
