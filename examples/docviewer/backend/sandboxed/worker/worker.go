// Package worker is the renderer side of the sandboxed backend: the
// methods a docviewer renderer serves, inside the sandbox, with MuPDF
// (package render). A program that re-executes itself as its renderer
// starts with
//
//	if renderer.Requested() {
//		renderer.Main(worker.Register)
//	}
//
// The renderer holds at most one document, the one the broker hands it
// with Open, for its whole life (one renderer per document). It reads the
// document from the descriptor the broker opened, never from a path. Pages
// cross in one shared region (ipc/shm.Region) per renderer: MuPDF draws
// each page straight into it and Render answers with the geometry only.
// The broker copies the page out once and uses only its copy, so nothing
// this side writes to the region later can change a page already taken.
// The region is sized to the pages drawn: a page that does not fit is not
// drawn, Render says so (needs_region), and the broker sends Region with a
// larger size, which replaces the region.
package worker

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/sandkit/sandkit/ipc"
	"github.com/sandkit/sandkit/ipc/shm"
	"github.com/sandkit/sandkit/renderer"

	"github.com/sandkit/sandkit/examples/docviewer/docerr"
	"github.com/sandkit/sandkit/examples/docviewer/docipc"
	"github.com/sandkit/sandkit/examples/docviewer/doclimits"
	"github.com/sandkit/sandkit/examples/docviewer/docpb"
	"github.com/sandkit/sandkit/examples/docviewer/render"
)

// Register adds the docviewer methods to mux. It runs before lockdown and
// does nothing that needs the filesystem: MuPDF's fonts are built in, and
// its context is created per document, in Open.
func Register(s *renderer.Session, mux *ipc.Mux) error {
	w := New(s)
	ipc.Handle(mux, docipc.Open, w.Open)
	ipc.Handle(mux, docipc.Render, w.Render)
	ipc.Handle(mux, docipc.Region, w.Region)
	return nil
}

// New returns the worker of the renderer session s, for programs (and
// tests) that register its handlers themselves.
func New(s *renderer.Session) *Worker { return &Worker{session: s} }

// Worker serves one renderer's document.
type Worker struct {
	session *renderer.Session

	// mu serializes Open and Render. MuPDF draws one page at a time per
	// document anyway (render.Document locks), and there is one region to
	// draw into. (The broker also sends one page request at a time per
	// renderer and copies the page out before the next, so an honest
	// renderer never overwrites a page being copied.)
	mu     sync.Mutex
	doc    *render.Document
	limits doclimits.Limits
	region *shm.Region // nil until the first Region
}

// Open reads the document from the attached descriptor, at most
// MaxInputBytes of it, parses it and returns its page count.
func (w *Worker) Open(ctx context.Context, req *docpb.OpenRequest, fds []*os.File) (*docpb.OpenResponse, []*os.File, error) {
	f := fds[0]
	defer f.Close()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.doc != nil {
		// The broker sends the document again when it gave up waiting
		// for the first Open (its caller went away) after the renderer
		// had parsed it. A renderer is bound to one document, so it can
		// only be the same one: answer as the first time.
		return w.opened(), nil, nil
	}
	limits := docipc.LimitsFromProto(req.GetLimits())
	data, err := readBounded(f, limits.MaxInputBytes)
	if err != nil {
		return nil, nil, docipc.ToStatus(err)
	}
	doc, err := render.Open(data, limits)
	if err != nil {
		return nil, nil, docipc.ToStatus(err)
	}
	w.doc, w.limits = doc, limits
	return w.opened(), nil, nil
}

func (w *Worker) opened() *docpb.OpenResponse {
	return &docpb.OpenResponse{Pages: int32(w.doc.PageCount()), Format: w.doc.Format()}
}

// Region replaces the page region with one of exactly req.Size bytes of
// size-sealed, pre-faulted memfd from the broker, and returns a duplicate
// of its descriptor (ipc closes what a handler returns, once sent; the
// region keeps its own). The old region is dropped first, so that only
// one is ever mapped here (the memory limit counts mappings).
func (w *Worker) Region(ctx context.Context, req *docpb.RegionRequest, _ []*os.File) (*docpb.RegionResponse, []*os.File, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.doc == nil {
		return nil, nil, ipc.Errorf(ipc.CodeFailedPrecondition, "no document open")
	}
	size := req.GetSize()
	if size <= 0 || size > w.limits.MaxPageBytes() {
		return nil, nil, ipc.Errorf(ipc.CodeOutOfRange, "page region of %d bytes: want 1 to %d", size, w.limits.MaxPageBytes())
	}
	if w.region != nil {
		w.region.Close()
		w.region = nil
	}
	region, err := w.session.NewRegion(ctx, int(size))
	if err != nil {
		return nil, nil, ipc.Errorf(ipc.CodeInternal, "page region of %d bytes: %v", size, err)
	}
	f, err := region.Share()
	if err != nil {
		region.Close()
		return nil, nil, ipc.Errorf(ipc.CodeInternal, "page region: %v", err)
	}
	w.region = region
	return &docpb.RegionResponse{}, []*os.File{f}, nil
}

// readBounded reads f whole, refusing more than max bytes without reading
// them: the size is checked first, then at most max+1 bytes are read in
// case the file grew since.
func readBounded(f *os.File, max int64) ([]byte, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat document: %w", err)
	}
	if st.Size() > max {
		return nil, docerr.New(docerr.ErrOverBudget, nil, "document is %d bytes, limit %d", st.Size(), max)
	}
	var buf bytes.Buffer
	buf.Grow(int(st.Size()) + bytes.MinRead)
	if _, err := buf.ReadFrom(io.LimitReader(f, max+1)); err != nil {
		return nil, fmt.Errorf("read document: %w", err)
	}
	if int64(buf.Len()) > max {
		return nil, docerr.New(docerr.ErrOverBudget, nil, "document is larger than %d bytes", max)
	}
	return buf.Bytes(), nil
}

// Render plans the page under the pixel budget (a lower DPI, or a typed
// refusal), lets MuPDF draw it straight into the start of the region and
// returns the page's geometry and byte length; no descriptor.
func (w *Worker) Render(ctx context.Context, req *docpb.RenderRequest, _ []*os.File) (*docpb.RenderResponse, []*os.File, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.doc == nil {
		return nil, nil, ipc.Errorf(ipc.CodeFailedPrecondition, "no document open")
	}
	plan, err := w.doc.Plan(int(req.GetPage()), req.GetDpi())
	if err != nil {
		return nil, nil, docipc.ToStatus(err)
	}
	_, doc := w.session.Origin()
	resp := &docpb.RenderResponse{
		Width:    int32(plan.Width),
		Height:   int32(plan.Height),
		Stride:   int32(plan.Stride()),
		Dpi:      plan.DPI,
		Document: doc,
		Length:   int64(plan.Size()),
	}
	var mem []byte
	if w.region != nil {
		mem = w.region.Bytes()
	}
	if plan.Size() > len(mem) {
		// Plan keeps pages within MaxPixelsPerPage, the broker's bound
		// for the region it asks for.
		resp.NeedsRegion = true
		return resp, nil, nil
	}
	res, err := w.doc.RenderInto(ctx, plan, mem[:plan.Size()])
	if err != nil {
		return nil, nil, docipc.ToStatus(err)
	}
	resp.Errors = int32(res.Errors)
	return resp, nil, nil
}
