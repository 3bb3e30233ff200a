// Package doclimits holds the render limits of one document. It is its own
// package, without cgo, so that the broker side (package
// backend/sandboxed), which decides the limits and checks renderers'
// answers against them, does not link MuPDF; package render, inside the
// renderer, applies them (render.Limits is an alias of Limits).
package doclimits

import "time"

// Limits bound what one document may cost. The sandbox adds rlimits and a
// seccomp filter on top; these limits are what turns a hostile document into
// a clear error instead of a killed renderer.
type Limits struct {
	// MaxPages: documents claiming more pages are refused (not capped):
	// a silently truncated safe PDF would be worse than an error, and real
	// documents of that size are rare enough to raise the limit for.
	MaxPages int
	// MaxPixelsPerPage: a page larger than this at the requested DPI is
	// drawn at the highest lower DPI that fits, if that is >= MinDPI.
	MaxPixelsPerPage int64
	// MaxInputBytes: larger documents are refused before MuPDF sees them.
	MaxInputBytes int64
	// MaxHeapBytes caps every allocation MuPDF makes for the document
	// (parsing, fonts, images, caches); the page pixels are not included.
	MaxHeapBytes int64
	// MinDPI is the floor below which a page is refused rather than shrunk.
	MinDPI float64
	// MaxDPI bounds the requested DPI.
	MaxDPI float64
	// MaxContentBytes bounds what a PDF page's content streams may decode
	// to; checked before drawing, so a compression bomb fails fast and
	// deterministically instead of running into MaxRenderTime.
	MaxContentBytes int64
	// MaxRenderTime bounds one page's drawing; past it MuPDF is told to
	// abort and the page fails with ErrOverBudget.
	MaxRenderTime time.Duration
}

// Default fits a desktop viewer: 1000 pages, 32 Mpx a page (about
// 128 MiB of RGBA, A4 at ~580 dpi), 128 MiB in, 512 MiB of MuPDF heap,
// 128 MiB of decoded content per PDF page, 20 s to draw a page.
func Default() Limits {
	return Limits{
		MaxPages:         1000,
		MaxPixelsPerPage: 32 << 20,
		MaxInputBytes:    128 << 20,
		MaxHeapBytes:     512 << 20,
		MinDPI:           36,
		MaxDPI:           1200,
		MaxContentBytes:  128 << 20,
		MaxRenderTime:    20 * time.Second,
	}
}

// MaxSide bounds either side of a page in pixels, whatever its area: MuPDF
// uses int coordinates and a 1-pixel-high strip of 30 M pixels helps nobody.
const MaxSide = 1 << 15

// MaxPageBytes is the size of the largest page buffer the limits allow:
// 4 bytes (RGBA) per pixel.
func (l Limits) MaxPageBytes() int64 { return 4 * l.MaxPixelsPerPage }
