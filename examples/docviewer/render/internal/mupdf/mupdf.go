// Package mupdf is the minimal cgo binding to MuPDF that package render
// needs. It links the static MuPDF libraries bundled by
// github.com/gen2brain/go-fitz (imported for that side effect only) and
// compiles shim.h against a copy of the matching MuPDF headers in include/.
//
// Why not go-fitz's own Go API: at v1.24.15 it calls MuPDF functions that
// can throw (fz_count_pages, fz_bound_page, fz_new_pixmap_with_bbox,
// fz_close_device) outside fz_try, and an uncaught MuPDF error calls exit()
// on the whole process; a PDF with "/Count -1" is enough. Its ImageDPI copies
// 4*x1*y1 bytes from a w*h pixmap, an over-read when a page does not start at
// the origin. It keeps a Go pointer to the document inside C past the call
// (against the cgo rules), cannot draw into a caller's buffer, cannot abort a
// render and cannot cap MuPDF's heap. shim.h does all of that in ~250 lines
// of C that a reviewer can read in one sitting.
//
// A Doc is not safe for concurrent use, except Abort.
package mupdf

/*
#cgo CFLAGS: -I${SRCDIR}/include -O2 -DNDEBUG
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"image"
	"unsafe"

	// The bundled static MuPDF 1.24.9 (libmupdf + third-party libs) and their
	// LDFLAGS. include/ is a copy of the headers of this exact version; the
	// version check in fz_new_context rejects a mismatch at run time.
	_ "github.com/gen2brain/go-fitz"
)

// Version is the MuPDF version the headers (and so the library) carry.
const Version = C.FZ_VERSION

// Code is MuPDF's error class (FZ_ERROR_*).
type Code int

// MuPDF error classes that callers distinguish.
const (
	CodeSystem      Code = C.FZ_ERROR_SYSTEM
	CodeLibrary     Code = C.FZ_ERROR_LIBRARY
	CodeArgument    Code = C.FZ_ERROR_ARGUMENT
	CodeLimit       Code = C.FZ_ERROR_LIMIT
	CodeUnsupported Code = C.FZ_ERROR_UNSUPPORTED
	CodeFormat      Code = C.FZ_ERROR_FORMAT
	CodeSyntax      Code = C.FZ_ERROR_SYNTAX
	CodeAbort       Code = C.FZ_ERROR_ABORT
)

// Error is a MuPDF failure as caught by the shim.
type Error struct {
	Op   string
	Code Code
	Msg  string
	// HeapCapHit is true when an allocation was refused because it would
	// have taken MuPDF's heap past the cap given to New.
	HeapCapHit bool
}

func (e *Error) Error() string {
	s := fmt.Sprintf("mupdf %s: %s (code %d)", e.Op, e.Msg, e.Code)
	if e.HeapCapHit {
		s += " [heap cap reached]"
	}
	return s
}

// ErrContext means MuPDF could not create a context: out of memory under the
// heap cap, or headers and library of different versions.
var ErrContext = errors.New("mupdf: cannot create context")

// Doc is one open document and its private MuPDF context, allocator and
// store. Each Doc is independent: no MuPDF state is shared between Docs.
type Doc struct {
	d *C.sk_doc
}

// Open copies data into C memory (MuPDF reads it in place for the
// document's life) and opens it. magic is a MIME type or extension hint.
// heapCap bounds every byte MuPDF allocates for this document (the pixels
// Render draws into are the caller's and are not counted); storeMax bounds
// MuPDF's resource cache inside that.
func Open(data []byte, magic string, heapCap, storeMax int64) (*Doc, error) {
	if len(data) == 0 {
		return nil, &Error{Op: "open", Code: CodeFormat, Msg: "empty document"}
	}
	d := C.sk_new(C.size_t(heapCap), C.size_t(storeMax))
	if d == nil {
		return nil, ErrContext
	}
	doc := &Doc{d: d}
	d.data = (*C.uchar)(C.malloc(C.size_t(len(data))))
	if d.data == nil {
		doc.Close()
		return nil, &Error{Op: "open", Code: CodeSystem, Msg: "cannot allocate document copy"}
	}
	d.len = C.size_t(len(data))
	copy(unsafe.Slice((*byte)(unsafe.Pointer(d.data)), len(data)), data)
	cmagic := C.CString(magic)
	defer C.free(unsafe.Pointer(cmagic))
	if C.sk_open(d, cmagic) == 0 {
		err := doc.err("open")
		doc.Close()
		return nil, err
	}
	return doc, nil
}

func (d *Doc) err(op string) error {
	return &Error{
		Op:         op,
		Code:       Code(d.d.st.code),
		Msg:        C.GoString(&d.d.st.msg[0]),
		HeapCapHit: d.d.st.alloc_refused != 0,
	}
}

// Format is MuPDF's name of the document's format, e.g. "PDF 1.7", "EPUB".
func (d *Doc) Format() (string, error) {
	var buf [64]C.char
	if C.sk_format(d.d, &buf[0], C.int(len(buf))) == 0 {
		return "", d.err("format")
	}
	return C.GoString(&buf[0]), nil
}

// CountPages returns the number of pages. For reflowable formats (EPUB,
// FB2, MOBI) this lays out the whole document.
func (d *Doc) CountPages() (int, error) {
	var n C.int
	if C.sk_count(d.d, &n) == 0 {
		return 0, d.err("count pages")
	}
	if n < 0 {
		return 0, &Error{Op: "count pages", Code: CodeFormat, Msg: "negative page count"}
	}
	return int(n), nil
}

// Rect is a rectangle in points (1/72 inch).
type Rect struct{ X0, Y0, X1, Y1 float64 }

// Bound returns the page's bounds in points.
func (d *Doc) Bound(page int) (Rect, error) {
	var r C.fz_rect
	if C.sk_bound(d.d, C.int(page), &r) == 0 {
		return Rect{}, d.err("bound page")
	}
	return Rect{float64(r.x0), float64(r.y0), float64(r.x1), float64(r.y1)}, nil
}

// Plan returns the pixel box Render will fill for page at zoom (dpi/72).
func (d *Doc) Plan(page int, zoom float64) (image.Rectangle, error) {
	var b C.fz_irect
	if C.sk_plan(d.d, C.int(page), C.float(zoom), &b) == 0 {
		return image.Rectangle{}, d.err("plan page")
	}
	return image.Rect(int(b.x0), int(b.y0), int(b.x1), int(b.y1)), nil
}

// ResetAbort clears the abort flag; call it before arming anything that may
// call Abort for the next Render.
func (d *Doc) ResetAbort() { C.sk_reset_cookie(d.d) }

// Abort makes a running Render stop at MuPDF's next check. Safe to call from
// any goroutine while Render runs.
func (d *Doc) Abort() { C.sk_abort(d.d) }

// Render draws page at zoom into pix (RGBA, premultiplied, over white).
// box must be what Plan returned for the same page and zoom; pix must hold
// stride*box.Dy() bytes with stride >= 4*box.Dx(). It returns how many
// errors MuPDF recovered from while drawing (a partly broken page still
// renders what it can). A PDF page whose content streams decode to more than
// maxContent bytes fails with CodeLimit before anything is drawn.
func (d *Doc) Render(page int, zoom float64, box image.Rectangle, pix []byte, stride int, maxContent int64) (int, error) {
	w, h := box.Dx(), box.Dy()
	if w <= 0 || h <= 0 || stride < 4*w || int64(len(pix)) < int64(stride)*int64(h) || int64(stride)*int64(h) > 1<<31-1 {
		return 0, &Error{Op: "render", Code: CodeArgument, Msg: "pixel buffer does not fit the page box"}
	}
	cb := C.fz_irect{x0: C.int(box.Min.X), y0: C.int(box.Min.Y), x1: C.int(box.Max.X), y1: C.int(box.Max.Y)}
	if C.sk_render(d.d, C.int(page), C.float(zoom), cb, (*C.uchar)(unsafe.Pointer(&pix[0])), C.int(stride), C.size_t(maxContent)) == 0 {
		return 0, d.err("render")
	}
	return int(C.sk_render_errors(d.d)), nil
}

// Warnings returns how many warnings MuPDF reported so far and the first one.
// MuPDF's default of printing them to stderr is switched off.
func (d *Doc) Warnings() (int, string) {
	return int(d.d.st.warnings), C.GoString(&d.d.st.warn[0])
}

// HeapPeak is the most MuPDF has had allocated at once for this document.
func (d *Doc) HeapPeak() int64 { return int64(d.d.st.peak) }

// Close frees everything the document holds. The Doc must not be used after.
func (d *Doc) Close() {
	if d.d != nil {
		C.sk_close(d.d)
		d.d = nil
	}
}
