// Package backend is the seam between the viewer's front ends (the web UI,
// convert) and whatever renders documents: the in-process backend of
// package inprocess (tests, benchmarks, development) or the sandboxed
// broker the integrator adds. It has no cgo and does not link MuPDF.
package backend

import (
	"context"
	"image"
	"slices"
	"sync"
	"time"
)

// Backend renders listed documents. A document (its library id) is the
// origin: an implementation starts at most one renderer session per
// document, on first use, and reuses it. Pages count from 0. Every method
// is safe for concurrent use.
//
// Errors carry a docerr kind (errors.Is(err, docerr.ErrCorrupt), ...):
// ErrNotFound for an unknown id or page, ErrUnsupported/ErrCorrupt/
// ErrOverBudget for the document, ErrSandbox when a renderer died, and the
// context's error when ctx ended first.
type Backend interface {
	// PageCount starts (or reuses) the session of doc and returns its
	// number of pages.
	PageCount(ctx context.Context, doc string) (int, error)
	// RenderPage draws one page at dpi. The pixels are the caller's own:
	// the sandboxed backend checked the geometry and copied them out of
	// the renderer's region once before returning them. The page may come
	// back at a lower DPI than asked (Page.DPI) when it would exceed the
	// pixel budget. Callers done with the page may Release it.
	RenderPage(ctx context.Context, doc string, page int, dpi float64) (*Page, error)
	// Status describes every live renderer session.
	Status(ctx context.Context) []RendererStatus
	// Events returns recent violation and limit events, oldest first.
	Events() []Event
}

// Forgetter is implemented by backends that can drop a document at once:
// Forget ends its renderer session, if any, and everything the backend
// keeps for it (a remembered error, its page region). The server calls it
// when an upload expires, so that neither its renderer nor its entry
// outlives the file; a later request for doc starts afresh (and finds
// nothing, the file being gone).
type Forgetter interface {
	Forget(doc string)
}

// Page is one rendered page.
type Page struct {
	Image        *image.RGBA // origin (0,0), opaque
	DPI          float64     // the DPI actually used
	RequestedDPI float64
	// PID is the process that drew the page: its renderer, as the
	// broker sees it, or the viewer itself for the in-process backend.
	// Tests use it to check that a document's pages come only from that
	// document's renderer.
	PID int
	// Free, if set by the backend, takes Image's pixel buffer back for
	// reuse; callers use Release instead.
	Free func()
}

// Release hands the page's pixel buffer back to its backend for reuse, if
// the backend reuses buffers (the sandboxed one does); the caller must not
// use Image afterwards (Release sets it to nil). Releasing is optional:
// a page never released is garbage collected as usual. Release is
// idempotent.
func (p *Page) Release() {
	if p == nil {
		return
	}
	p.Image = nil
	if f := p.Free; f != nil {
		p.Free = nil
		f()
	}
}

// RendererStatus is one live renderer session.
type RendererStatus struct {
	Doc     string        `json:"doc"`  // library id
	Name    string        `json:"name"` // document name, display only
	PID     int           `json:"pid"`
	Started time.Time     `json:"started"`
	Uptime  time.Duration `json:"uptime_ns"`
	// Layers are the sandbox layers in force, e.g. "userns", "netns",
	// "landlock", "seccomp", "rlimits"; the in-process backend reports
	// "none: in-process, not sandboxed".
	Layers []string `json:"layers"`
	Pages  int      `json:"pages"`
}

// Event is a violation or limit event: a renderer refused a document, hit a
// limit, was killed, or broke the protocol.
type Event struct {
	Time   time.Time `json:"time"`
	Doc    string    `json:"doc"`
	Name   string    `json:"name"`
	PID    int       `json:"pid"`
	Kind   string    `json:"kind"` // docerr kind text, e.g. "document over budget"
	Reason string    `json:"reason"`
}

// EventLog keeps the last N events for Backend.Events implementations.
type EventLog struct {
	mu     sync.Mutex
	max    int
	events []Event
}

// NewEventLog keeps at most max events.
func NewEventLog(max int) *EventLog { return &EventLog{max: max} }

// Add records e, dropping the oldest event when full.
func (l *EventLog) Add(e Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.events) == l.max {
		l.events = slices.Delete(l.events, 0, 1)
	}
	l.events = append(l.events, e)
}

// List returns the events, oldest first.
func (l *EventLog) List() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.events)
}
