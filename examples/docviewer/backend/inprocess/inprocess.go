// Package inprocess is a Backend that runs package render in the calling
// process, with render's limits but WITHOUT any sandbox: a MuPDF bug hit by
// a hostile document is a bug in this process. It exists for tests, for the
// in-process benchmark, and as the reference behaviour the sandboxed
// backend must match; never serve untrusted documents with it.
package inprocess

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sandkit/sandkit/examples/docviewer/backend"
	"github.com/sandkit/sandkit/examples/docviewer/docerr"
	"github.com/sandkit/sandkit/examples/docviewer/library"
	"github.com/sandkit/sandkit/examples/docviewer/render"
)

// NotSandboxed is what Status reports as the sandbox layers in force.
const NotSandboxed = "none: in-process, not sandboxed"

// MaxSessions is how many documents stay open at once; the least recently
// used one is closed past that.
const MaxSessions = 8

// Backend implements backend.Backend in-process.
type Backend struct {
	lib    *library.Library
	limits render.Limits
	events *backend.EventLog
	log    *slog.Logger

	mu       sync.Mutex
	sessions map[string]*session
	clock    int64 // LRU clock
	closed   bool
}

type session struct {
	once    sync.Once
	ready   atomic.Bool // once has run: the fields below are set
	doc     *render.Document
	err     error
	name    string
	started time.Time
	used    int64
}

// New returns a backend over the documents of lib.
func New(lib *library.Library, limits render.Limits, log *slog.Logger) *Backend {
	if log == nil {
		log = slog.Default()
	}
	return &Backend{lib: lib, limits: limits, events: backend.NewEventLog(100), log: log, sessions: map[string]*session{}}
}

var _ backend.Backend = (*Backend)(nil)

// session returns doc's session, opening it on first use. A document that
// fails to open keeps its error (until evicted), so a hostile document is
// parsed once, not once per page request.
func (b *Backend) session(doc string) (*session, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, docerr.New(docerr.ErrInvalid, nil, "backend closed")
	}
	b.clock++
	s, ok := b.sessions[doc]
	if !ok {
		s = &session{}
		b.sessions[doc] = s
		b.evictLocked()
	}
	s.used = b.clock
	b.mu.Unlock()

	s.once.Do(func() {
		s.started = time.Now()
		data, d, err := b.lib.ReadDocument(doc, b.limits.MaxInputBytes)
		s.name = d.Name
		if err == nil {
			s.doc, err = render.Open(data, b.limits)
		}
		s.err = err
		if err != nil {
			b.record(doc, s.name, err)
		}
		s.ready.Store(true)
	})
	return s, s.err
}

var _ backend.Forgetter = (*Backend)(nil)

// Forget closes doc's session, if it has one.
func (b *Backend) Forget(doc string) {
	b.mu.Lock()
	s, ok := b.sessions[doc]
	delete(b.sessions, doc)
	b.mu.Unlock()
	if ok {
		go closeSession(s)
	}
}

// closeSession closes s's document once a render in progress is done
// (render.Document locks).
func closeSession(s *session) {
	s.once.Do(func() { s.err = docerr.New(docerr.ErrInvalid, nil, "closed") })
	if s.doc != nil {
		s.doc.Close()
	}
}

func (b *Backend) evictLocked() {
	for len(b.sessions) > MaxSessions {
		var oldest string
		var min int64 = -1
		for id, s := range b.sessions {
			if min < 0 || s.used < min {
				oldest, min = id, s.used
			}
		}
		s := b.sessions[oldest]
		delete(b.sessions, oldest)
		go closeSession(s)
	}
}

// record logs a limit or violation event; a cancelled request is not one.
func (b *Backend) record(doc, name string, err error) {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return
	}
	kind := docerr.KindOf(err)
	if kind == nil || kind == docerr.ErrNotFound || kind == docerr.ErrInvalid {
		return
	}
	b.events.Add(backend.Event{Time: time.Now(), Doc: doc, Name: name, PID: os.Getpid(), Kind: kind.Error(), Reason: err.Error()})
	b.log.Warn("document refused", "doc", doc, "name", name, "err", err)
}

// PageCount implements backend.Backend.
func (b *Backend) PageCount(ctx context.Context, doc string) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s, err := b.session(doc)
	if err != nil {
		return 0, err
	}
	return s.doc.PageCount(), nil
}

// RenderPage implements backend.Backend.
func (b *Backend) RenderPage(ctx context.Context, doc string, page int, dpi float64) (*backend.Page, error) {
	s, err := b.session(doc)
	if err != nil {
		return nil, err
	}
	img, res, err := s.doc.Render(ctx, page, dpi)
	if err != nil {
		b.record(doc, s.name, err)
		return nil, fmt.Errorf("%s: %w", s.name, err)
	}
	return &backend.Page{Image: img, DPI: res.DPI, RequestedDPI: res.RequestedDPI, PID: os.Getpid()}, nil
}

// Status implements backend.Backend: every open document, with this
// process's pid.
func (b *Backend) Status(ctx context.Context) []backend.RendererStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []backend.RendererStatus
	for id, s := range b.sessions {
		if !s.ready.Load() || s.doc == nil {
			continue
		}
		out = append(out, backend.RendererStatus{
			Doc: id, Name: s.name, PID: os.Getpid(), Started: s.started,
			Uptime: time.Since(s.started).Round(time.Millisecond), Layers: []string{NotSandboxed}, Pages: s.doc.PageCount(),
		})
	}
	return out
}

// Events implements backend.Backend.
func (b *Backend) Events() []backend.Event { return b.events.List() }

// Close closes every open document.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for id, s := range b.sessions {
		s.once.Do(func() {})
		if s.doc != nil {
			s.doc.Close()
		}
		delete(b.sessions, id)
	}
	return nil
}
