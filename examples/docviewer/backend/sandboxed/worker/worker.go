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
// document from the descriptor the broker opened, never from a path, and
// returns pixels in sealed memfds it drew into directly.
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
	"github.com/sandkit/sandkit/examples/docviewer/docpb"
	"github.com/sandkit/sandkit/examples/docviewer/render"
)

// Register adds the docviewer methods to mux. It runs before lockdown and
// does nothing that needs the filesystem: MuPDF's fonts are built in, and
// its context is created per document, in Open.
func Register(s *renderer.Session, mux *ipc.Mux) {
	w := New(s)
	ipc.Handle(mux, docipc.Open, w.Open)
	ipc.Handle(mux, docipc.Render, w.Render)
}

// New returns the worker of the renderer session s, for programs (and
// tests) that register its handlers themselves.
func New(s *renderer.Session) *Worker { return &Worker{session: s} }

// Worker serves one renderer's document.
type Worker struct {
	session *renderer.Session

	// mu serializes Open and Render. MuPDF draws one page at a time per
	// document anyway (render.Document locks); holding mu from planning
	// to sealing also means at most one page buffer exists in this
	// process at a time, so concurrent page requests cannot multiply the
	// shared memory a renderer holds.
	mu  sync.Mutex
	doc *render.Document
}

// Open reads the document from the attached descriptor, at most
// MaxInputBytes of it, and parses it.
func (w *Worker) Open(_ context.Context, req *docpb.OpenRequest, fds []*os.File) (*docpb.OpenResponse, []*os.File, error) {
	f := fds[0]
	defer f.Close()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.doc != nil {
		// The broker sends the document again when it gave up waiting
		// for the first Open (its caller went away) after the renderer
		// had parsed it. A renderer is bound to one document, so it can
		// only be the same one: answer as the first time.
		return &docpb.OpenResponse{Pages: int32(w.doc.PageCount()), Format: w.doc.Format()}, nil, nil
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
	w.doc = doc
	return &docpb.OpenResponse{Pages: int32(doc.PageCount()), Format: doc.Format()}, nil, nil
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
// refusal), creates a memfd of exactly the planned size, lets MuPDF draw
// straight into its mapping, seals it and returns it with the page's
// geometry. ipc closes the returned descriptor once it is sent.
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
	buf, err := shm.Create("page", plan.Size())
	if err != nil {
		return nil, nil, ipc.Errorf(ipc.CodeInternal, "page buffer of %d bytes: %v", plan.Size(), err)
	}
	defer buf.Close() // no-op once sealed
	res, err := w.doc.RenderInto(ctx, plan, buf.Bytes())
	if err != nil {
		return nil, nil, docipc.ToStatus(err)
	}
	f, err := buf.Seal()
	if err != nil {
		return nil, nil, ipc.Errorf(ipc.CodeInternal, "seal page: %v", err)
	}
	_, doc := w.session.Origin()
	return &docpb.RenderResponse{
		Width:    int32(plan.Width),
		Height:   int32(plan.Height),
		Stride:   int32(plan.Stride()),
		Dpi:      plan.DPI,
		Errors:   int32(res.Errors),
		Document: doc,
	}, []*os.File{f}, nil
}
