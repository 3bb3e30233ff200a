// Package convert turns a document into a safe PDF: every page is rendered
// by a backend (sandboxed in production) and only its pixels are written,
// through pdfout. The output appears complete or not at all.
package convert

import (
	"context"
	"fmt"
	"image"
	"io"

	"github.com/sandkit/sandkit/examples/docviewer/backend"
	"github.com/sandkit/sandkit/examples/docviewer/pdfout"
)

// DefaultDPI is the resolution of a converted page: readable print quality
// at a moderate size (a Letter page is 1275x1650 px).
const DefaultDPI = 150

// Progress is called after each page with 1-based done and the total.
type Progress func(done, total int)

// ToPDF renders every page of doc through be at dpi and writes them as a
// raster-only PDF to out, encoded as opt says, atomically: on any error no
// file is left at out (an existing out is left as it was). It returns the
// number of pages written.
func ToPDF(ctx context.Context, be backend.Backend, doc string, out string, dpi float64, opt pdfout.Options, progress Progress) (int, error) {
	return ToPDFText(ctx, be, doc, out, dpi, opt, nil, progress)
}

// Recognizer finds the words of a page image (OCR), for the invisible
// text layer of the safe PDF; see package ocr.
type Recognizer interface {
	Words(ctx context.Context, doc string, page int, img *image.RGBA) ([]pdfout.Word, error)
}

// ToPDFText is ToPDF with an invisible text layer on each page, from the
// words rec finds in the page's pixels (the checked image the PDF shows,
// never the document). A nil rec is ToPDF. A page rec fails on fails the
// conversion, as a page the renderer fails on does.
func ToPDFText(ctx context.Context, be backend.Backend, doc string, out string, dpi float64, opt pdfout.Options, rec Recognizer, progress Progress) (int, error) {
	n, err := be.PageCount(ctx, doc)
	if err != nil {
		return 0, fmt.Errorf("open document: %w", err)
	}
	err = pdfout.WriteFileAtomic(out, func(w io.Writer) error {
		pw := pdfout.NewWriterOptions(w, opt)
		for i := range n {
			p, err := be.RenderPage(ctx, doc, i, dpi)
			if err != nil {
				return fmt.Errorf("page %d/%d: %w", i+1, n, err)
			}
			// The page size follows the DPI actually used, so a page drawn
			// at a lower DPI to fit the budget keeps its physical size.
			var words []pdfout.Word
			if rec != nil {
				words, err = rec.Words(ctx, doc, i, p.Image)
				if err != nil {
					p.Release()
					return fmt.Errorf("page %d/%d: %w", i+1, n, err)
				}
			}
			err = pw.AddPageText(p.Image, p.DPI, words) // compresses and writes it
			p.Release()
			if err != nil {
				return fmt.Errorf("page %d/%d: %w", i+1, n, err)
			}
			if progress != nil {
				progress(i+1, n)
			}
		}
		return pw.Close()
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}
