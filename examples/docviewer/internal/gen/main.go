// Command gen writes the sample documents under testdata/: valid samples of
// several formats and hostile ones that the renderer must turn into clear,
// typed errors. The outputs are committed; rerun after changing this file:
//
//	cd examples/docviewer && go run ./internal/gen
//
// Everything is deterministic (fixed seeds, fixed zip timestamps), so a rerun
// gives identical bytes.
package main

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"compress/zlib"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sandkit/sandkit/examples/docviewer/internal/textpdf"
)

func main() {
	out := flag.String("out", "testdata", "output directory")
	paper := flag.Int("paper", 0, "instead, write a text-heavy PDF of this many pages (package textpdf) to -o")
	paperOut := flag.String("o", "paper.pdf", "output file of -paper")
	flag.Parse()
	if *paper > 0 {
		if err := os.WriteFile(*paperOut, textpdf.Generate(*paper), 0o644); err != nil {
			slog.Error("gen failed", "err", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*out); err != nil {
		slog.Error("gen failed", "err", err)
		os.Exit(1)
	}
}

func run(out string) error {
	files := map[string]func() ([]byte, error){
		"valid/multipage.pdf":   func() ([]byte, error) { return multipagePDF(20), nil },
		"valid/picture.png":     func() ([]byte, error) { return pngBytes(picture(480, 320, 1)) },
		"valid/drawing.svg":     func() ([]byte, error) { return []byte(svgDoc), nil },
		"valid/book.epub":       epub,
		"valid/comic.cbz":       cbz,
		"valid/shapes.xps":      xps,
		"hostile/truncated.pdf": truncatedPDF,
		"hostile/random.bin":    func() ([]byte, error) { return randomBytes(64<<10, 1), nil },
		"hostile/random.pdf":    func() ([]byte, error) { return append([]byte("%PDF-1.7\n"), randomBytes(64<<10, 2)...), nil },
		"hostile/cycle.pdf":     func() ([]byte, error) { return cyclePDF(), nil },
		"hostile/hugepage.pdf":  func() ([]byte, error) { return hugePagePDF(), nil },
		"hostile/manypages.pdf": func() ([]byte, error) { return manyPagesPDF(), nil },
		"hostile/negcount.pdf":  func() ([]byte, error) { return negCountPDF(), nil },
		"hostile/bomb.pdf":      bombPDF,
		"hostile/imagebomb.pdf": imageBombPDF,
	}
	for name, fn := range files {
		b, err := fn()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		p := filepath.Join(out, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return err
		}
		slog.Info("wrote", "file", p, "bytes", len(b))
	}
	return nil
}

// pdf assembles a PDF from numbered object bodies (object i+1 = objs[i])
// with a correct xref table.
func pdf(objs []string, trailerExtra string) []byte {
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
	fmt.Fprintf(&b, "trailer\n<< /Size %d /Root 1 0 R %s>>\nstartxref\n%d\n%%%%EOF\n", len(objs)+1, trailerExtra, xref)
	return b.Bytes()
}

func stream(dict string, data []byte) string {
	return fmt.Sprintf("<< %s /Length %d >>\nstream\n%s\nendstream", dict, len(data), data)
}

func zlibBytes(data []byte) []byte {
	var b bytes.Buffer
	w, _ := zlib.NewWriterLevel(&b, zlib.BestCompression)
	w.Write(data)
	w.Close()
	return b.Bytes()
}

const lorem = "Untrusted documents are drawn inside a throwaway sandbox; only pixels come back."

// multipagePDF is n Letter pages of text (base-14 Helvetica/Times) and
// vector shapes, with a compressed content stream per page.
func multipagePDF(n int) []byte {
	objs := []string{"<< /Type /Catalog /Pages 2 0 R >>", ""}
	fonts := "<< /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold >> /F2 << /Type /Font /Subtype /Type1 /BaseFont /Times-Roman >> >>"
	var kids []string
	for p := 1; p <= n; p++ {
		var c strings.Builder
		hue := float64(p) / float64(n)
		fmt.Fprintf(&c, "%.3f %.3f %.3f rg 54 680 504 60 re f\n", hue, 0.4, 1-hue)
		fmt.Fprintf(&c, "BT /F1 28 Tf 1 1 1 rg 72 700 Td (Page %d of %d) Tj ET\n", p, n)
		for l := 0; l < 24; l++ {
			fmt.Fprintf(&c, "BT /F2 11 Tf 0 0 0 rg 72 %d Td (%d.%d  %s) Tj ET\n", 650-l*16, p, l+1, lorem)
		}
		// A circle from four Bezier curves and a stroked triangle.
		cx, cy, r, k := 180.0, 180.0, 80.0, 0.5523*80.0
		fmt.Fprintf(&c, "0.9 0.5 0.1 rg %g %g m %g %g %g %g %g %g c %g %g %g %g %g %g c %g %g %g %g %g %g c %g %g %g %g %g %g c f\n",
			cx+r, cy, cx+r, cy+k, cx+k, cy+r, cx, cy+r, cx-k, cy+r, cx-r, cy+k, cx-r, cy,
			cx-r, cy-k, cx-k, cy-r, cx, cy-r, cx+k, cy-r, cx+r, cy-k, cx+r, cy)
		fmt.Fprintf(&c, "4 w 0.1 0.3 0.8 RG 320 100 m 520 100 l 420 %d l h S\n", 200+p*5)
		data := zlibBytes([]byte(c.String()))
		page := len(objs) + 1
		objs = append(objs,
			fmt.Sprintf("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font %s >> /Contents %d 0 R >>", fonts, page+1),
			stream("/Filter /FlateDecode", data))
		kids = append(kids, fmt.Sprintf("%d 0 R", page))
	}
	objs[1] = fmt.Sprintf("<< /Type /Pages /Kids [%s] /Count %d >>", strings.Join(kids, " "), n)
	return pdf(objs, "")
}

func onePagePDF(mediaBox string, content []byte) []byte {
	return pdf([]string{
		"<< /Type /Catalog /Pages 2 0 R >>",
		"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
		fmt.Sprintf("<< /Type /Page /Parent 2 0 R /MediaBox %s /Contents 4 0 R >>", mediaBox),
		stream("", content),
	}, "")
}

// truncatedPDF cuts a valid one-page PDF inside its page tree: nothing
// usable is left for MuPDF's repair to find.
func truncatedPDF() ([]byte, error) {
	full := onePagePDF("[0 0 612 792]", []byte("0 0 1 rg 100 100 200 200 re f"))
	cut := bytes.Index(full, []byte("2 0 obj")) + 12
	return full[:cut], nil
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x5eed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// cyclePDF: the only page's parent chain loops, Pages -> Pages -> Pages.
func cyclePDF() []byte {
	return pdf([]string{
		"<< /Type /Catalog /Pages 2 0 R >>",
		"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
		"<< /Type /Pages /Kids [2 0 R] /Count 1 /Parent 2 0 R >>",
	}, "")
}

// hugePagePDF: a 14400 x 14400 pt page (200 in square, PDF's maximum).
func hugePagePDF() []byte {
	return onePagePDF("[0 0 14400 14400]", []byte("0 0 1 rg 0 0 14400 14400 re f"))
}

// manyPagesPDF claims a million pages through a Kids array that refers to
// its own node.
func manyPagesPDF() []byte {
	return pdf([]string{
		"<< /Type /Catalog /Pages 2 0 R >>",
		"<< /Type /Pages /Kids [2 0 R 2 0 R] /Count 1000000 >>",
	}, "")
}

// negCountPDF: "/Count -1". MuPDF throws from fz_count_pages; a binding that
// calls it outside fz_try dies with exit(1).
func negCountPDF() []byte {
	return pdf([]string{
		"<< /Type /Catalog /Pages 2 0 R >>",
		"<< /Type /Pages /Kids [3 0 R] /Count -1 >>",
		"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
	}, "")
}

// zeros streams n zero bytes.
type zeros struct{ n int64 }

func (z *zeros) Read(p []byte) (int, error) {
	if z.n <= 0 {
		return 0, io.EOF
	}
	k := min(int64(len(p)), z.n)
	clear(p[:k])
	z.n -= k
	return int(k), nil
}

// bombPDF: a content stream under two FlateDecode filters that inflates to
// 1 GiB of zeros (deflate alone tops out near 1:1000; the second pass
// squeezes the very regular first-pass output).
func bombPDF() ([]byte, error) {
	var once bytes.Buffer
	w, _ := zlib.NewWriterLevel(&once, zlib.BestCompression)
	if _, err := io.Copy(w, &zeros{n: 1 << 30}); err != nil {
		return nil, err
	}
	w.Close()
	twice := zlibBytes(once.Bytes())
	return pdf([]string{
		"<< /Type /Catalog /Pages 2 0 R >>",
		"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
		"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
		stream("/Filter [/FlateDecode /FlateDecode]", twice),
	}, ""), nil
}

// imageBombPDF: an image XObject that declares 60000 x 60000 RGB pixels
// (10 GiB decoded) behind a few bytes of data.
func imageBombPDF() ([]byte, error) {
	var once bytes.Buffer
	w, _ := zlib.NewWriterLevel(&once, zlib.BestCompression)
	if _, err := io.Copy(w, &zeros{n: 64 << 20}); err != nil {
		return nil, err
	}
	w.Close()
	twice := zlibBytes(once.Bytes())
	return pdf([]string{
		"<< /Type /Catalog /Pages 2 0 R >>",
		"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
		"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /XObject << /Im0 5 0 R >> >> /Contents 4 0 R >>",
		stream("", []byte("q 612 0 0 792 0 0 cm /Im0 Do Q")),
		stream("/Type /XObject /Subtype /Image /Width 60000 /Height 60000 /ColorSpace /DeviceRGB /BitsPerComponent 8 /Filter [/FlateDecode /FlateDecode]", twice),
	}, ""), nil
}

// picture draws something recognisable, so blank output is easy to spot.
func picture(w, h, seed int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			c := color.RGBA{uint8(x * 255 / w), uint8(y * 255 / h), uint8(128 + 60*seed), 255}
			dx, dy := x-w/2, y-h/2
			if dx*dx+dy*dy < (h/3)*(h/3) {
				c = color.RGBA{250, 250, uint8(40 * seed), 255}
			}
			img.SetRGBA(x, y, c)
		}
	}
	return img
}

func pngBytes(img image.Image) ([]byte, error) {
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// zipFiles writes entries in order; stored entries are not compressed
// (EPUB requires that of "mimetype"). Timestamps are fixed.
type entry struct {
	name   string
	data   []byte
	stored bool
}

func zipFiles(entries []entry) ([]byte, error) {
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	zw.RegisterCompressor(zip.Deflate, func(w io.Writer) (io.WriteCloser, error) {
		return flate.NewWriter(w, flate.BestCompression)
	})
	for _, e := range entries {
		m := zip.Deflate
		if e.stored {
			m = zip.Store
		}
		fw, err := zw.CreateHeader(&zip.FileHeader{Name: e.name, Method: m, Modified: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)})
		if err != nil {
			return nil, err
		}
		if _, err := fw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func epub() ([]byte, error) {
	chapter := func(n int) []byte {
		var s strings.Builder
		fmt.Fprintf(&s, `<?xml version="1.0" encoding="UTF-8"?>
<html xmlns="http://www.w3.org/1999/xhtml"><head><title>Chapter %d</title></head><body>
<h1>Chapter %d</h1>`, n, n)
		for i := range 12 {
			fmt.Fprintf(&s, "<p>%d. %s</p>\n", i+1, lorem)
		}
		s.WriteString("</body></html>\n")
		return []byte(s.String())
	}
	return zipFiles([]entry{
		{name: "mimetype", data: []byte("application/epub+zip"), stored: true},
		{name: "META-INF/container.xml", data: []byte(`<?xml version="1.0"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
<rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles>
</container>
`)},
		{name: "OEBPS/content.opf", data: []byte(`<?xml version="1.0" encoding="UTF-8"?>
<package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id">
<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:identifier id="id">sandkit-sample</dc:identifier><dc:title>Sample</dc:title><dc:language>en</dc:language></metadata>
<manifest><item id="c1" href="c1.xhtml" media-type="application/xhtml+xml"/><item id="c2" href="c2.xhtml" media-type="application/xhtml+xml"/></manifest>
<spine><itemref idref="c1"/><itemref idref="c2"/></spine>
</package>
`)},
		{name: "OEBPS/c1.xhtml", data: chapter(1)},
		{name: "OEBPS/c2.xhtml", data: chapter(2)},
	})
}

func cbz() ([]byte, error) {
	var entries []entry
	for i := 1; i <= 3; i++ {
		b, err := pngBytes(picture(300, 420, i))
		if err != nil {
			return nil, err
		}
		entries = append(entries, entry{name: fmt.Sprintf("page%02d.png", i), data: b})
	}
	return zipFiles(entries)
}

func xps() ([]byte, error) {
	page := func(n int) []byte {
		return []byte(fmt.Sprintf(`<FixedPage xmlns="http://schemas.microsoft.com/xps/2005/06" Width="816" Height="1056" xml:lang="en">
<Path Data="M 96,96 L 720,96 L 720,300 L 96,300 Z" Fill="#FF%02X4020"/>
<Path Data="M 200,500 L 600,500 L 400,%d Z" Stroke="#203080" StrokeThickness="6"/>
</FixedPage>
`, 40*n, 800+40*n))
	}
	return zipFiles([]entry{
		{name: "[Content_Types].xml", data: []byte(`<?xml version="1.0" encoding="UTF-8"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>
<Default Extension="fdseq" ContentType="application/vnd.ms-package.xps-fixeddocumentsequence+xml"/>
<Default Extension="fdoc" ContentType="application/vnd.ms-package.xps-fixeddocument+xml"/>
<Default Extension="fpage" ContentType="application/vnd.ms-package.xps-fixedpage+xml"/>
</Types>
`)},
		{name: "_rels/.rels", data: []byte(`<?xml version="1.0" encoding="UTF-8"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="r1" Type="http://schemas.microsoft.com/xps/2005/06/fixedrepresentation" Target="/FixedDocumentSequence.fdseq"/>
</Relationships>
`)},
		{name: "FixedDocumentSequence.fdseq", data: []byte(`<FixedDocumentSequence xmlns="http://schemas.microsoft.com/xps/2005/06"><DocumentReference Source="/Documents/1/FixedDocument.fdoc"/></FixedDocumentSequence>
`)},
		{name: "Documents/1/FixedDocument.fdoc", data: []byte(`<FixedDocument xmlns="http://schemas.microsoft.com/xps/2005/06"><PageContent Source="/Documents/1/Pages/1.fpage"/><PageContent Source="/Documents/1/Pages/2.fpage"/></FixedDocument>
`)},
		{name: "Documents/1/Pages/1.fpage", data: page(1)},
		{name: "Documents/1/Pages/2.fpage", data: page(2)},
	})
}

const svgDoc = `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="400" height="300" viewBox="0 0 400 300">
  <rect x="10" y="10" width="380" height="280" fill="#f0f4ff" stroke="#2040a0" stroke-width="4"/>
  <circle cx="120" cy="150" r="70" fill="#e07020"/>
  <polygon points="230,220 370,220 300,80" fill="#20a060"/>
  <text x="40" y="60" font-family="sans-serif" font-size="28" fill="#102040">sandkit SVG</text>
</svg>
`
