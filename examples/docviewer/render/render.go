// Package render is the code that runs inside the sandboxed renderer: it
// turns untrusted document bytes into RGBA pixels with MuPDF, under limits.
//
// It never opens a path: the renderer has no filesystem, so a document
// arrives as bytes (Open) and pixels leave through a buffer the caller owns
// (RenderInto, which MuPDF draws into directly, e.g. a shared memfd). Every
// failure is a *docerr.Error whose kind (docerr.ErrUnsupported, ErrCorrupt,
// ErrOverBudget, ErrInvalid) the broker can forward as a small enum.
//
// One Document per renderer process is the intended use. A Document
// serializes its own calls, so sharing one between goroutines is safe but
// gains nothing.
package render

import (
	"context"
	"errors"
	"fmt"
	"image"
	"math"
	"sync"
	"time"

	"github.com/sandkit/sandkit/examples/docviewer/docerr"
	"github.com/sandkit/sandkit/examples/docviewer/doclimits"
	"github.com/sandkit/sandkit/examples/docviewer/render/internal/mupdf"
)

// Aliases of the shared error kinds, so callers of render need no second
// import to test them.
var (
	ErrUnsupported = docerr.ErrUnsupported
	ErrCorrupt     = docerr.ErrCorrupt
	ErrOverBudget  = docerr.ErrOverBudget
	ErrInvalid     = docerr.ErrInvalid
)

// Limits bound what one document may cost; see doclimits.Limits. The type
// lives there, without cgo, so the broker side can share it without
// linking MuPDF.
type Limits = doclimits.Limits

// DefaultLimits fit a desktop viewer; see doclimits.Default.
func DefaultLimits() Limits { return doclimits.Default() }

// maxSide bounds either side of a page in pixels (doclimits.MaxSide).
const maxSide = doclimits.MaxSide

// minHeap is the least heap MuPDF gets: below it creating the context
// itself fails, and MuPDF prints to stderr about it.
const minHeap = 4 << 20

func validateLimits(l Limits) error {
	if l.MaxHeapBytes < minHeap {
		return docerr.New(ErrInvalid, nil, "MaxHeapBytes %d is below the %d MuPDF needs to start", l.MaxHeapBytes, minHeap)
	}
	if l.MaxPages <= 0 || l.MaxPixelsPerPage <= 0 || l.MaxInputBytes <= 0 || l.MaxHeapBytes <= 0 || l.MaxContentBytes <= 0 ||
		!(l.MinDPI > 0) || !(l.MaxDPI >= l.MinDPI) || l.MaxRenderTime <= 0 {
		return docerr.New(ErrInvalid, nil, "limits %+v: every limit must be positive and MaxDPI >= MinDPI", l)
	}
	return nil
}

// Document is one opened document.
type Document struct {
	mu     sync.Mutex
	doc    *mupdf.Doc
	limits Limits
	pages  int
	format string
	kind   string
}

// Open parses data as a document of one of the accepted formats (see
// Sniff). data is copied into C memory; the caller may reuse it. The format
// is decided from the bytes only: a renderer has no file name to trust.
func Open(data []byte, limits Limits) (*Document, error) {
	if err := validateLimits(limits); err != nil {
		return nil, err
	}
	if int64(len(data)) > limits.MaxInputBytes {
		return nil, docerr.New(ErrOverBudget, nil, "document is %d bytes, limit %d", len(data), limits.MaxInputBytes)
	}
	kind, magic := Sniff(data)
	if magic == "" {
		return nil, docerr.New(ErrUnsupported, nil, "not a format this viewer accepts (PDF, EPUB, XPS, CBZ, FB2, MOBI, SVG, PNG, JPEG, GIF, BMP, TIFF)")
	}
	// The resource store (MuPDF's cache) gets a quarter of the heap, so a
	// cache that fills up is evicted long before the cap fails a parse.
	doc, err := mupdf.Open(data, magic, limits.MaxHeapBytes, limits.MaxHeapBytes/4)
	if err != nil {
		return nil, classify(err, "open "+kind)
	}
	d := &Document{doc: doc, limits: limits, kind: kind}
	if d.format, err = doc.Format(); err != nil {
		d.Close()
		return nil, classify(err, "read format")
	}
	n, err := doc.CountPages()
	if err != nil {
		d.Close()
		return nil, classify(err, "count pages")
	}
	switch {
	case n == 0:
		d.Close()
		return nil, docerr.New(ErrCorrupt, nil, "document has no pages")
	case n > limits.MaxPages:
		d.Close()
		return nil, docerr.New(ErrOverBudget, nil, "document has %d pages, limit %d", n, limits.MaxPages)
	}
	d.pages = n
	return d, nil
}

// classify maps a MuPDF failure onto the shared kinds.
func classify(err error, op string) error {
	var me *mupdf.Error
	if !errors.As(err, &me) {
		if errors.Is(err, mupdf.ErrContext) {
			return docerr.New(ErrOverBudget, err, "%s", op)
		}
		return docerr.New(ErrCorrupt, err, "%s", op)
	}
	switch {
	case me.HeapCapHit:
		return docerr.New(ErrOverBudget, err, "%s: heap limit reached", op)
	case me.Code == mupdf.CodeLimit || me.Code == mupdf.CodeSystem:
		return docerr.New(ErrOverBudget, err, "%s", op)
	case me.Code == mupdf.CodeUnsupported:
		return docerr.New(ErrUnsupported, err, "%s", op)
	case me.Code == mupdf.CodeArgument:
		return docerr.New(ErrInvalid, err, "%s", op)
	default:
		return docerr.New(ErrCorrupt, err, "%s", op)
	}
}

// PageCount is the number of pages (at most Limits.MaxPages).
func (d *Document) PageCount() int { return d.pages }

// Format is MuPDF's name for the format, e.g. "PDF 1.7", "EPUB", "Image".
func (d *Document) Format() string { return d.format }

// Kind is the short kind Sniff found: "pdf", "epub", "png", ...
func (d *Document) Kind() string { return d.kind }

// Bounds is a page's rectangle in points (1/72 inch).
type Bounds struct{ X0, Y0, X1, Y1 float64 }

// Width in points.
func (b Bounds) Width() float64 { return b.X1 - b.X0 }

// Height in points.
func (b Bounds) Height() float64 { return b.Y1 - b.Y0 }

func (d *Document) checkPage(page int) error {
	if page < 0 || page >= d.pages {
		return docerr.New(docerr.ErrNotFound, nil, "page %d of %d", page+1, d.pages)
	}
	return nil
}

// PageBounds returns page's bounds (pages count from 0).
func (d *Document) PageBounds(page int) (Bounds, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.doc == nil {
		return Bounds{}, errClosed
	}
	if err := d.checkPage(page); err != nil {
		return Bounds{}, err
	}
	r, err := d.doc.Bound(page)
	if err != nil {
		return Bounds{}, classify(err, fmt.Sprintf("page %d bounds", page+1))
	}
	return Bounds(r), nil
}

var errClosed = docerr.New(ErrInvalid, nil, "document is closed")

// Plan is how a page will be drawn: its pixel size and the DPI actually
// used, which is lower than the one requested when the page would not fit
// the pixel budget.
type Plan struct {
	Page          int
	RequestedDPI  float64
	DPI           float64
	Width, Height int
	box           image.Rectangle
}

// Stride is the row length in bytes of the RGBA pixels.
func (p Plan) Stride() int { return 4 * p.Width }

// Size is the number of bytes RenderInto needs.
func (p Plan) Size() int { return p.Stride() * p.Height }

// Plan computes the pixel size of page at dpi under the limits, shrinking the
// DPI to fit MaxPixelsPerPage when needed. A broker uses it to size the
// shared buffer before asking for pixels.
func (d *Document) Plan(page int, dpi float64) (Plan, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.plan(page, dpi)
}

func (d *Document) plan(page int, dpi float64) (Plan, error) {
	if d.doc == nil {
		return Plan{}, errClosed
	}
	if err := d.checkPage(page); err != nil {
		return Plan{}, err
	}
	if !(dpi >= d.limits.MinDPI && dpi <= d.limits.MaxDPI) {
		return Plan{}, docerr.New(ErrInvalid, nil, "dpi %g outside [%g, %g]", dpi, d.limits.MinDPI, d.limits.MaxDPI)
	}
	use := dpi
	// Each step either fits or shrinks the DPI by the exact area ratio
	// (minus a hair for the rounding of the pixel box), so a few steps do.
	for range 8 {
		box, err := d.doc.Plan(page, use/72)
		if err != nil {
			return Plan{}, classify(err, fmt.Sprintf("page %d", page+1))
		}
		w, h := int64(box.Dx()), int64(box.Dy())
		if w <= 0 || h <= 0 {
			return Plan{}, docerr.New(ErrCorrupt, nil, "page %d is empty at %g dpi", page+1, use)
		}
		if w*h <= d.limits.MaxPixelsPerPage && w <= maxSide && h <= maxSide {
			return Plan{Page: page, RequestedDPI: dpi, DPI: use, Width: int(w), Height: int(h), box: box}, nil
		}
		ratio := math.Sqrt(float64(d.limits.MaxPixelsPerPage) / float64(w*h))
		ratio = math.Min(ratio, math.Min(float64(maxSide)/float64(w), float64(maxSide)/float64(h)))
		next := math.Floor(use*ratio*0.999*100) / 100
		if next < d.limits.MinDPI {
			return Plan{}, docerr.New(ErrOverBudget, nil,
				"page %d is %dx%d px at %g dpi; fitting %d px would need %.2f dpi, below the %g dpi floor",
				page+1, w, h, use, d.limits.MaxPixelsPerPage, next, d.limits.MinDPI)
		}
		use = next
	}
	return Plan{}, docerr.New(ErrOverBudget, nil, "page %d: no DPI fits the pixel budget", page+1)
}

// Result reports how a page was drawn.
type Result struct {
	Plan
	// Errors MuPDF recovered from while drawing: the page may be partial.
	Errors   int
	Duration time.Duration
}

// RenderInto draws the page of plan (from Plan) into pix, which must hold
// plan.Size() bytes: RGBA, rows of plan.Stride() bytes, premultiplied,
// opaque (drawn over white). MuPDF writes straight into pix; nothing is
// copied. Cancelling ctx, or exceeding MaxRenderTime, aborts the drawing.
func (d *Document) RenderInto(ctx context.Context, plan Plan, pix []byte) (Result, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.doc == nil {
		return Result{}, errClosed
	}
	again, err := d.plan(plan.Page, plan.RequestedDPI)
	if err != nil {
		return Result{}, err
	}
	if again.box != plan.box || again.DPI != plan.DPI {
		return Result{}, docerr.New(ErrInvalid, nil, "plan for page %d is stale or forged", plan.Page+1)
	}
	if len(pix) < plan.Size() {
		return Result{}, docerr.New(ErrInvalid, nil, "buffer of %d bytes for %d needed", len(pix), plan.Size())
	}
	if err := ctx.Err(); err != nil {
		return Result{}, fmt.Errorf("page %d: %w", plan.Page+1, err)
	}

	// Arm the aborts. The guard keeps an abort that fires late from
	// touching the document after this call returned (or after Close).
	d.doc.ResetAbort()
	var (
		amu      sync.Mutex
		armed    = true
		timedOut bool
	)
	abort := func(timeout bool) {
		amu.Lock()
		defer amu.Unlock()
		if armed {
			timedOut = timedOut || timeout
			d.doc.Abort()
		}
	}
	stopCtx := context.AfterFunc(ctx, func() { abort(false) })
	timer := time.AfterFunc(d.limits.MaxRenderTime, func() { abort(true) })
	start := time.Now()
	nerr, rerr := d.doc.Render(plan.Page, plan.DPI/72, plan.box, pix, plan.Stride(), d.limits.MaxContentBytes)
	amu.Lock()
	armed = false
	amu.Unlock()
	stopCtx()
	timer.Stop()

	res := Result{Plan: plan, Errors: nerr, Duration: time.Since(start)}
	if rerr != nil {
		var me *mupdf.Error
		if errors.As(rerr, &me) && me.Code == mupdf.CodeAbort {
			if timedOut {
				return res, docerr.New(ErrOverBudget, rerr, "page %d took longer than %v", plan.Page+1, d.limits.MaxRenderTime)
			}
			if err := ctx.Err(); err != nil {
				return res, fmt.Errorf("page %d: %w", plan.Page+1, err)
			}
		}
		return res, classify(rerr, fmt.Sprintf("render page %d", plan.Page+1))
	}
	return res, nil
}

// Render plans and draws page at dpi into a new image (origin 0,0). It is
// RenderInto with a Go-allocated buffer; no other copy is made.
func (d *Document) Render(ctx context.Context, page int, dpi float64) (*image.RGBA, Result, error) {
	plan, err := d.Plan(page, dpi)
	if err != nil {
		return nil, Result{}, err
	}
	img := image.NewRGBA(image.Rect(0, 0, plan.Width, plan.Height))
	res, err := d.RenderInto(ctx, plan, img.Pix)
	if err != nil {
		return nil, res, err
	}
	return img, res, nil
}

// Stats is what the document cost MuPDF so far.
type Stats struct {
	HeapPeak     int64  // most bytes MuPDF held at once
	Warnings     int    // warnings MuPDF reported
	FirstWarning string // the first of them
}

// Stats returns the cost counters.
func (d *Document) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.doc == nil {
		return Stats{}
	}
	n, first := d.doc.Warnings()
	return Stats{HeapPeak: d.doc.HeapPeak(), Warnings: n, FirstWarning: first}
}

// Close frees the document. It is safe to call more than once.
func (d *Document) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.doc != nil {
		d.doc.Close()
		d.doc = nil
	}
	return nil
}
