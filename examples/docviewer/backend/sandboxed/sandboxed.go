// Package sandboxed is the viewer's production Backend: every document is
// opened and drawn by a renderer process of its own (sandkit broker,
// PerDocument model: the document is the origin), locked down with
// Policy before it reads a byte of the document, and only checked pixels
// come back.
//
// The broker side (this package) opens the document through the library
// and hands the renderer a read-only descriptor; it never serves or writes
// the document's bytes anywhere. It has no cgo and does not link MuPDF:
// the renderer side is package worker, in the same executable, which the
// broker re-executes.
//
// Everything a renderer answers is treated as hostile: page geometry is
// checked against the limits; pixels cross in one shared region per
// renderer (ipc/shm.Region: size-sealed, sized by the broker to the pages
// drawn, at most 4*MaxPixelsPerPage bytes, checked by ipc and
// shm.OpenRegion), which the
// renderer may rewrite at any time, so the broker copies each page out of
// it exactly once, into an image of its own, and checks and uses only that
// copy; error kinds come back as ipc status codes and their text is
// cleaned. A
// renderer that breaks any of that is killed and the request fails with
// docerr.ErrSandbox; so does a renderer the sandkit broker kills (seccomp
// violation, memory or CPU limit, call timeout), with the broker's reason.
// Either way only that document is affected.
package sandboxed

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"image"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/ipc/shm"
	"github.com/sandkit/sandkit/policy"

	"github.com/sandkit/sandkit/examples/docviewer/backend"
	"github.com/sandkit/sandkit/examples/docviewer/docerr"
	"github.com/sandkit/sandkit/examples/docviewer/docipc"
	"github.com/sandkit/sandkit/examples/docviewer/doclimits"
	"github.com/sandkit/sandkit/examples/docviewer/docpb"
	"github.com/sandkit/sandkit/examples/docviewer/library"
	"github.com/sandkit/sandkit/examples/docviewer/office"
)

// Policy returns the renderer policy for documents under limits:
// policy.Strict() plus exactly what MuPDF needs. Every exception:
//
//   - Limits.Memory = MaxHeapBytes + 2*MaxInputBytes + MaxPageBytes +
//     256 MiB: MuPDF's capped heap, the document read into Go memory and
//     its copy in C memory (render.Open copies it), the page region (a
//     shared memfd mapping, which the memory limit's RLIMIT_AS counts),
//     and room for the Go heap's growth and glibc. The runtime's start-up
//     reservations are not in it: the renderer adds its address space at
//     lockdown to RLIMIT_AS (measured: 1.34 GiB for this renderer, MuPDF
//     linked in). With doclimits.Default this is 1.125 GiB. (Dropped in
//     binaries built with -race, which cannot run under a memory rlimit;
//     tests only.)
//   - Limits.SharedMemory (0 in Strict) = twice the largest page buffer,
//     2*4*MaxPixelsPerPage: the renderer's page regions, which it asks
//     the broker for (a renderer cannot make shared memory itself). A
//     region is sized to the pages drawn, from 1 MiB up, and replaced by
//     a larger one when a page does not fit; sizes are halvings of the
//     largest (see regionSize), each larger than the last, so all the
//     regions of a renderer's life add up to less than twice the largest.
//     The broker cannot know that the renderer dropped an old region,
//     so each stays charged.
//     Limits.FileSize stays 0: it writes no file.
//   - Limits.CallTimeout = MaxRenderTime + 10 s: the per-page timeout. A
//     page that runs past MaxRenderTime is aborted by MuPDF's cookie and
//     fails with a typed ErrOverBudget first; the kill is the backstop
//     for code that does not check the cookie (parsing, some decoders).
//   - Limits.CPUTime (RLIMIT_CPU) = 10 min for the renderer's whole life,
//     up from 60 s: a renderer lives as long as its document is being
//     viewed (IdleTimeout ends it), and a 1000-page document at print
//     resolution takes minutes of CPU. Each page is bounded by the call
//     timeout anyway; this only stops a renderer that spins between calls.
//   - Seccomp.Allow "sysinfo": glibc's qsort, which MuPDF calls, asks for
//     the physical memory size to pick its algorithm. Harmless: it reveals
//     memory and load figures, nothing else.
//
// MuPDF needs nothing else beyond the base allowlist (see the README: no
// file, socket or process syscalls once the document is in memory, no
// threads of its own; malloc uses brk/mmap/munmap/mprotect/mremap/madvise,
// all in the base list).
func Policy(l doclimits.Limits) *policy.Policy {
	p := policy.Strict()
	p.Limits.Memory = uint64(l.MaxHeapBytes + 2*l.MaxInputBytes + l.MaxPageBytes() + runtimeHeadroom)
	p.Limits.SharedMemory = uint64(2 * l.MaxPageBytes())
	p.Limits.CallTimeout = l.MaxRenderTime + callSlack
	p.Limits.CPUTime = 10 * time.Minute
	p.Seccomp.Allow = append(p.Seccomp.Allow, "sysinfo")
	if raceDetector {
		p.Limits.Memory = 0 // see race.go: tests only
	}
	return p
}

const (
	// runtimeHeadroom is the renderer's memory beyond MuPDF, the document
	// and the page region: the Go heap's growth, goroutine stacks, glibc.
	runtimeHeadroom = 256 << 20
	// callSlack is how much longer than MaxRenderTime a page call may
	// take before the broker kills the renderer.
	callSlack = 10 * time.Second
)

// Config configures New. Library is required.
type Config struct {
	Library *library.Library
	// Limits are the render limits, sent to each renderer and used to
	// check its answers. Zero means doclimits.Default().
	Limits doclimits.Limits
	// Policy overrides Policy(Limits), e.g. for tests under the race
	// detector, which cannot run with a memory limit.
	Policy *policy.Policy
	// MaxRenderers bounds live renderers (documents open at once); the
	// longest-idle one is ended to make room. Zero means 8. It also
	// bounds the requests served at once (see MaxQueue).
	MaxRenderers int
	// MaxQueue bounds the requests waiting for their turn. At most
	// MaxRenderers requests (opening a document or drawing a page) are
	// served at once; the others queue, first come first served, so that
	// a document without a renderer gets one as soon as one falls idle,
	// instead of waiting behind busy documents' endless queues. Past
	// MaxQueue waiting, a request fails at once with docerr.ErrBusy.
	// Zero means 256; negative means no bound.
	MaxQueue int
	// FreeMemoryWhenIdle returns the Go heap's free memory to the system
	// each time the last renderer ends: a burst grows the heap (page
	// copies, their encoding), which the runtime otherwise gives back
	// only over minutes. For long-running servers.
	FreeMemoryWhenIdle bool
	// OnEvent, when set, also receives every broker event (see
	// broker.Config.OnEvent: it must not block).
	OnEvent func(broker.Event)
	// IdleTimeout ends a renderer whose document has not been used for
	// that long. Zero means 2 minutes; negative means never.
	IdleTimeout time.Duration
	// WarmPool keeps that many renderers locked down and waiting, so that
	// opening a document does not wait for a spawn.
	WarmPool int
	// Office converts the library's Office documents (office.Is, by
	// name) to PDF, in LibreOffice's sandbox, when one is first opened;
	// the PDF, as untrusted as the document, then goes to a MuPDF
	// renderer like any other. Nil refuses them (docerr.ErrUnsupported,
	// with what to install).
	Office *office.Converter
	// Path and Args select the renderer executable; empty Path means this
	// program, which must call renderer.Main(worker.Register) when
	// renderer.Requested() (see package worker).
	Path string
	Args []string
	// Logger receives the backend's and the broker's logs, renderers'
	// stderr included. Nil means slog.Default().
	Logger *slog.Logger
	// Configure, when set, is applied to the broker's Config last, just
	// before the broker starts: how package learn runs the viewer's
	// samples in learn mode or under a policy to check.
	Configure func(*broker.Config)
}

// Backend implements backend.Backend with one sandboxed renderer per
// document.
type Backend struct {
	lib    *library.Library
	limits doclimits.Limits
	wire   *docpb.Limits
	b      *broker.Broker
	log    *slog.Logger
	events *backend.EventLog // refusals and broker-side check failures
	turns  *admission
	stats  *stats
	office *officePDFs

	freeWhenIdle bool
	conns        sync.WaitGroup // goroutines that close a conn when its renderer ends
	liveConns    atomic.Int64

	mu       sync.Mutex
	sessions map[string]*session
}

var _ backend.Backend = (*Backend)(nil)

// session is what the backend knows of one document's renderer.
type session struct {
	// mu serializes opening, so concurrent first requests for a document
	// start one renderer and parse the document once.
	mu sync.Mutex
	// c is the renderer that has the document open, with its page
	// region; a different renderer from Acquire (the old one died or was
	// evicted) must be given the document again.
	c     *conn
	pages int
	// err is a document error from Open (corrupt, unsupported, over
	// budget, or a renderer killed while parsing it): kept so a hostile
	// document is parsed once, not once per page request.
	err error
	// fatalPages are pages whose drawing killed the renderer or failed
	// the broker's checks, with that error: asking again returns it
	// instead of spawning a renderer to be killed the same way.
	fatalPages map[pageKey]error
}

// conn is one renderer bound to a document and the broker's read-only
// mapping of its page region.
type conn struct {
	r *broker.Renderer
	// turn serializes page calls (one page at a time per renderer, so an
	// honest renderer never draws over a page being copied out) and
	// guards region and closed.
	turn chan struct{}
	// region is nil until the first page, and replaced by a larger one
	// when a page does not fit (grow).
	region *shm.RegionReader
	// closed: the renderer is gone and region unmapped.
	closed bool
}

func newConn(r *broker.Renderer) *conn {
	return &conn{r: r, turn: make(chan struct{}, 1)}
}

// acquire waits for c's turn; it fails only when ctx ends.
func (c *conn) acquire(ctx context.Context) error {
	select {
	case c.turn <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *conn) release() { <-c.turn }

// close unmaps the region once no page is being copied from it.
func (c *conn) close() {
	c.turn <- struct{}{}
	defer c.release()
	c.closed = true
	if c.region != nil {
		c.region.Close()
		c.region = nil
	}
}

type pageKey struct {
	page int
	dpi  float64
}

// New starts the broker (and its warm pool). It fails when the kernel
// lacks a layer the policy needs.
func New(ctx context.Context, cfg Config) (*Backend, error) {
	if cfg.Library == nil {
		return nil, errors.New("sandboxed: Config.Library is required")
	}
	if cfg.Limits == (doclimits.Limits{}) {
		cfg.Limits = doclimits.Default()
	}
	p := cfg.Policy
	if p == nil {
		p = Policy(cfg.Limits)
	}
	if cfg.MaxRenderers == 0 {
		cfg.MaxRenderers = 8
	}
	switch {
	case cfg.IdleTimeout == 0:
		cfg.IdleTimeout = 2 * time.Minute
	case cfg.IdleTimeout < 0:
		cfg.IdleTimeout = 0
	}
	switch {
	case cfg.MaxQueue == 0:
		cfg.MaxQueue = 256
	case cfg.MaxQueue < 0:
		cfg.MaxQueue = math.MaxInt
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	st := newStats(log, cfg.OnEvent)
	bcfg := broker.Config{
		Path:         cfg.Path,
		Args:         cfg.Args,
		Policy:       p,
		Model:        broker.PerDocument,
		MaxRenderers: cfg.MaxRenderers,
		IdleTimeout:  cfg.IdleTimeout,
		WarmPool:     cfg.WarmPool,
		Logger:       log,
		OnEvent:      st.onEvent,
	}
	if cfg.Configure != nil {
		cfg.Configure(&bcfg)
	}
	b, err := broker.New(ctx, bcfg)
	if err != nil {
		return nil, fmt.Errorf("start sandbox: %w", err)
	}
	if raceDetector {
		log.Warn("race detector build: renderers run without a memory limit")
	}
	return &Backend{
		lib:          cfg.Library,
		limits:       cfg.Limits,
		wire:         docipc.LimitsToProto(cfg.Limits),
		b:            b,
		log:          log,
		events:       backend.NewEventLog(100),
		turns:        newAdmission(cfg.MaxRenderers, cfg.MaxQueue, log),
		stats:        st,
		office:       newOfficePDFs(cfg.Office),
		freeWhenIdle: cfg.FreeMemoryWhenIdle,
		sessions:     map[string]*session{},
	}, nil
}

// Close ends every renderer and waits for them, and for their page
// regions to be unmapped.
func (b *Backend) Close() error {
	err := b.b.Close()
	b.conns.Wait()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range b.sessions {
		s.mu.Lock()
		if s.c != nil {
			s.c.close()
			s.c = nil
		}
		s.mu.Unlock()
	}
	return errors.Join(err, b.office.close())
}

// Policy returns the policy the renderers apply.
func (b *Backend) Policy() *policy.Policy { return b.b.Policy() }

func (b *Backend) session(doc string) *session {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.sessions[doc]
	if s == nil {
		s = &session{}
		b.sessions[doc] = s
	}
	return s
}

var _ backend.Forgetter = (*Backend)(nil)

// Forget ends doc's renderer, if one has it open, and drops its session:
// the session map would otherwise keep an entry for every document ever
// opened, which in web mode is every upload. A page being copied out of
// the renderer's region when it ends finishes first (closeWhenGone).
func (b *Backend) Forget(doc string) {
	b.mu.Lock()
	s := b.sessions[doc]
	delete(b.sessions, doc)
	b.mu.Unlock()
	if s == nil {
		return
	}
	s.mu.Lock()
	c := s.c
	s.c, s.pages, s.err = nil, 0, nil
	b.office.forget(doc)
	s.mu.Unlock()
	if c != nil {
		c.r.Close()
	}
}

// benign reports whether a renderer ended for a reason that says nothing
// about its document (idle, evicted, released, shutdown): the request
// that ran into it is retried once with a fresh renderer.
func benign(err error) bool {
	var ee *broker.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	switch ee.Reason {
	case broker.ExitClean, broker.ExitIdle, broker.ExitReleased:
		return true
	}
	return false
}

// documentFault reports whether an error opening a document is the
// document's own doing, to be remembered: refused by MuPDF or the limits,
// or a renderer killed (not routinely ended) while parsing it. A file
// that vanished from the directory, a cancelled request or an idle
// renderer are not.
func documentFault(err error) bool {
	switch docerr.KindOf(err) {
	case docerr.ErrUnsupported, docerr.ErrCorrupt, docerr.ErrOverBudget:
		return true
	case docerr.ErrSandbox:
		return !benign(err)
	}
	return false
}

// open returns a renderer that has doc open, held (broker.Renderer.Hold)
// until the caller calls release, and its page count: the one from last
// time if it still lives, or a fresh one given the document. The hold
// keeps the renderer from being ended as idle while the caller waits for
// its turn: under load that wait is the renderer's work, not idleness.
func (b *Backend) open(ctx context.Context, d library.Doc) (c *conn, pages int, release func(), err error) {
	s := b.session(d.ID)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, 0, nil, s.err
	}
	if office.Is(d.Name) && s.c == nil {
		// Convert before taking a renderer: LibreOffice takes seconds,
		// which a held renderer would spend idle. A session whose
		// renderer has the document needs no conversion, nor the open
		// and fstat that check the kept PDF, on each page request.
		f, err := b.office.open(ctx, b.lib, d)
		if err != nil {
			if ctx.Err() == nil && documentFault(err) {
				s.err = err
				b.record(d, err)
			}
			return nil, 0, nil, err
		}
		f.Close()
	}
	var r *broker.Renderer
	for {
		// Origin and document are both the library id: in the
		// PerDocument model a renderer is bound to exactly this
		// document for its life.
		r, err = b.b.Acquire(ctx, d.ID, d.ID)
		if err != nil {
			if ctx.Err() != nil {
				return nil, 0, nil, fmt.Errorf("%s: %w", d.Name, ctx.Err())
			}
			return nil, 0, nil, docerr.New(docerr.ErrSandbox, err, "%s: start renderer", d.Name)
		}
		if release, err = r.Hold(); err == nil {
			break
		}
		// Being ended (evicted the moment before, or killed): once it
		// is gone, Acquire starts another.
		select {
		case <-r.Done():
		case <-ctx.Done():
			return nil, 0, nil, fmt.Errorf("%s: %w", d.Name, ctx.Err())
		}
	}
	if s.c != nil && r == s.c.r {
		return s.c, s.pages, release, nil
	}
	if s.c != nil {
		// Unmap the old renderer's region once a page still being
		// copied from it is done.
		go s.c.close()
	}
	s.c, s.pages = nil, 0
	pages, err = b.sendDocument(ctx, r, d)
	if err != nil {
		release()
		if ctx.Err() == nil && documentFault(err) {
			// The document is at fault (or killed its renderer while
			// being parsed): remember, and free the renderer.
			s.err = err
			b.record(d, err)
			r.Close()
		}
		return nil, 0, nil, err
	}
	s.c, s.pages = newConn(r), pages
	b.closeWhenGone(s, s.c)
	return s.c, pages, release, nil
}

// closeWhenGone unmaps c's page region as soon as its renderer ends
// (evicted, idle, killed, shut down), not when the document is next
// opened: a region is the largest single allocation of the viewer, and
// a document may never be opened again.
func (b *Backend) closeWhenGone(s *session, c *conn) {
	b.liveConns.Add(1)
	b.conns.Add(1)
	go func() {
		defer b.conns.Done()
		<-c.r.Done()
		s.mu.Lock()
		if s.c == c {
			s.c, s.pages = nil, 0
		}
		s.mu.Unlock()
		c.close()
		if b.liveConns.Add(-1) == 0 && b.freeWhenIdle {
			// Twice: the first collection moves released page
			// buffers (pixPool) to the pool's victim cache, the
			// second frees them.
			debug.FreeOSMemory()
			debug.FreeOSMemory()
		}
	}()
}

// sendDocument opens the document and hands the descriptor to r, which
// reads and parses it and returns its page count. The page region comes
// with the first page (grow).
func (b *Backend) sendDocument(ctx context.Context, r *broker.Renderer, d library.Doc) (int, error) {
	f, err := b.openDocument(ctx, d)
	if err != nil {
		return 0, err
	}
	resp, _, err := broker.Call(ctx, r, docipc.Open, &docpb.OpenRequest{Limits: b.wire}, f)
	f.Close()
	if err != nil {
		return 0, b.callError(ctx, err, d, "open")
	}
	n := int(resp.GetPages())
	if n < 1 || n > b.limits.MaxPages {
		return 0, b.misbehaved(r, d, fmt.Sprintf("open: renderer claims %d pages (limit %d)", n, b.limits.MaxPages))
	}
	return n, nil
}

// openDocument opens d for a renderer: the file itself, or for an Office
// document the PDF LibreOffice made of it.
func (b *Backend) openDocument(ctx context.Context, d library.Doc) (*os.File, error) {
	if office.Is(d.Name) {
		return b.office.open(ctx, b.lib, d)
	}
	f, _, err := b.lib.OpenDocument(d.ID)
	return f, err
}

// minRegion is the smallest page region asked for: a Letter page at 72
// dpi is 1.9 MB, so smaller steps would only add round trips.
const minRegion = 1 << 20

// regionSize is the size of the region asked for a page of need bytes:
// the largest region the limits allow, max, halved while the half still
// holds the page and minRegion, then rounded up to whole memory pages.
// Sizes come from that one ladder and each region is larger than the
// one it replaces, so a renderer's regions add up to less than 2*max
// (Policy's Limits.SharedMemory).
func regionSize(need, max int64) int64 {
	s := max
	for s/2 >= need && s/2 >= minRegion {
		s /= 2
	}
	if s < max {
		page := int64(os.Getpagesize())
		s = min((s+page-1)/page*page, max)
	}
	return s
}

// grow gives c's renderer a page region that holds the page resp
// describes, which the renderer said does not fit the one it has: it
// asks for a region of regionSize bytes, maps it read-only, and unmaps
// the old one. callErr is a failed call; badErr an answer that failed the
// checks. c's turn is held.
func (b *Backend) grow(ctx context.Context, c *conn, d library.Doc, resp *docpb.RenderResponse, dpi float64) (callErr, badErr error) {
	if err := b.checkGeometry(d, resp, dpi); err != nil {
		return nil, err
	}
	need := resp.GetLength()
	if c.region != nil && need <= int64(c.region.Size()) {
		return nil, fmt.Errorf("asks for a larger region for %d bytes; its region holds %d", need, c.region.Size())
	}
	size := regionSize(need, b.limits.MaxPageBytes())
	_, fds, err := broker.Call(ctx, c.r, docipc.Region, &docpb.RegionRequest{Size: size})
	if err != nil {
		return err, nil
	}
	// ipc checked the kind (ipc.SharedRegion: size-sealed memfd);
	// OpenRegion checks the exact size before mapping.
	region, err := shm.OpenRegion(fds[0], int(size))
	fds[0].Close()
	if err != nil {
		return nil, fmt.Errorf("page region: %v", err)
	}
	if c.region != nil {
		c.region.Close()
	}
	c.region = region
	return nil, nil
}

// callError turns a failed call into the error the front ends see.
func (b *Backend) callError(ctx context.Context, err error, d library.Doc, what string) error {
	var ee *broker.ExitError
	switch {
	case errors.As(err, &ee):
		// The renderer is gone: killed by the sandbox (violation, limit,
		// timeout) or for breaking the protocol.
		return docerr.New(docerr.ErrSandbox, ee, "%s: %s: renderer %s", d.Name, what, ee.Short())
	case ctx.Err() != nil:
		return fmt.Errorf("%s: %s: %w", d.Name, what, ctx.Err())
	}
	// The renderer's page errors name the page already.
	prefix := what
	if what != "open" {
		prefix = ""
	}
	if kerr, ok := docipc.FromStatus(err, prefix); ok {
		if errors.Is(kerr, context.Canceled) || errors.Is(kerr, context.DeadlineExceeded) {
			return fmt.Errorf("%s: %s: %w", d.Name, what, kerr)
		}
		return fmt.Errorf("%s: %w", d.Name, kerr)
	}
	return docerr.New(docerr.ErrSandbox, err, "%s: %s", d.Name, what)
}

// misbehaved ends a renderer whose answer failed the broker's checks: it
// is treated as compromised and never used again.
func (b *Backend) misbehaved(r *broker.Renderer, d library.Doc, detail string) error {
	err := docerr.New(docerr.ErrSandbox, nil, "%s: renderer %d misbehaved: %s", d.Name, r.PID(), detail)
	b.events.Add(backend.Event{Time: time.Now(), Doc: d.ID, Name: d.Name, PID: r.PID(), Kind: docerr.ErrSandbox.Error(), Reason: "killed: misbehaved: " + detail})
	b.log.Warn("renderer misbehaved, killed", "doc", d.ID, "name", d.Name, "pid", r.PID(), "detail", detail)
	r.Kill(detail) // the broker records it as a bad message, not a release
	return err
}

// record logs a document refusal as an event. Renderer deaths come from
// the broker's own events (see Events); cancellations are not events.
func (b *Backend) record(d library.Doc, err error) {
	kind := docerr.KindOf(err)
	if kind == nil || kind == docerr.ErrNotFound || kind == docerr.ErrInvalid || kind == docerr.ErrSandbox {
		return
	}
	b.events.Add(backend.Event{Time: time.Now(), Doc: d.ID, Name: d.Name, Kind: kind.Error(), Reason: err.Error()})
	b.log.Warn("document refused", "doc", d.ID, "name", d.Name, "err", err)
}

func (b *Backend) lookup(doc string) (library.Doc, error) {
	d, ok := b.lib.Lookup(doc)
	if !ok {
		return library.Doc{}, docerr.New(docerr.ErrNotFound, nil, "no document %q", doc)
	}
	return d, nil
}

// PageCount implements backend.Backend.
func (b *Backend) PageCount(ctx context.Context, doc string) (int, error) {
	d, err := b.lookup(doc)
	if err != nil {
		return 0, err
	}
	done, err := b.turns.enter(ctx, d)
	if err != nil {
		return 0, err
	}
	defer done()
	for attempt := 0; ; attempt++ {
		_, n, release, err := b.open(ctx, d)
		if err == nil {
			release()
		}
		if err != nil && attempt == 0 && benign(err) {
			continue
		}
		return n, err
	}
}

// RenderPage implements backend.Backend.
func (b *Backend) RenderPage(ctx context.Context, doc string, page int, dpi float64) (*backend.Page, error) {
	d, err := b.lookup(doc)
	if err != nil {
		return nil, err
	}
	if !(dpi >= b.limits.MinDPI && dpi <= b.limits.MaxDPI) {
		return nil, docerr.New(docerr.ErrInvalid, nil, "dpi %g outside [%g, %g]", dpi, b.limits.MinDPI, b.limits.MaxDPI)
	}
	done, err := b.turns.enter(ctx, d)
	if err != nil {
		return nil, err
	}
	defer done()
	for attempt := 0; ; attempt++ {
		p, err := b.renderOnce(ctx, d, page, dpi)
		if err != nil && attempt == 0 && benign(err) {
			// The renderer was ended for idleness between Acquire and
			// the call: not the document's fault.
			continue
		}
		return p, err
	}
}

func (b *Backend) renderOnce(ctx context.Context, d library.Doc, page int, dpi float64) (*backend.Page, error) {
	key := pageKey{page, dpi}
	s := b.session(d.ID)
	if err := s.fatal(key); err != nil {
		return nil, err
	}
	var c *conn
	for {
		var pages int
		var release func()
		var err error
		c, pages, release, err = b.open(ctx, d)
		if err != nil {
			return nil, err
		}
		if page < 0 || page >= pages {
			release()
			return nil, docerr.New(docerr.ErrNotFound, nil, "%s: page %d of %d", d.Name, page+1, pages)
		}
		if err := c.acquire(ctx); err != nil {
			release()
			return nil, fmt.Errorf("%s: page %d: %w", d.Name, page+1, err)
		}
		if !c.closed {
			defer release()
			break
		}
		// The renderer was replaced while we waited: use the new one.
		c.release()
		release()
	}
	defer c.release()
	r := c.r
	req := &docpb.RenderRequest{Page: int32(page), Dpi: dpi}
	resp, _, err := broker.Call(ctx, r, docipc.Render, req)
	if err == nil && resp.GetNeedsRegion() {
		var bad error
		if err, bad = b.grow(ctx, c, d, resp, dpi); err == nil && bad == nil {
			resp, _, err = broker.Call(ctx, r, docipc.Render, req)
			if err == nil && resp.GetNeedsRegion() {
				bad = fmt.Errorf("asks for a larger region again, for %d bytes", resp.GetLength())
			}
		}
		if bad != nil {
			err = b.misbehaved(r, d, fmt.Sprintf("page %d: %v", page+1, bad))
			s.setFatal(key, err)
			return nil, err
		}
	}
	if err != nil {
		kill := killedByPage(err)
		err = b.callError(ctx, err, d, fmt.Sprintf("page %d", page+1))
		b.record(d, err)
		if kill {
			s.setFatal(key, err)
		}
		return nil, err
	}
	img, usedDPI, err := b.checkPage(d, resp, dpi, c.region)
	if err != nil {
		err = b.misbehaved(r, d, fmt.Sprintf("page %d: %v", page+1, err))
		s.setFatal(key, err)
		return nil, err
	}
	return &backend.Page{Image: img, DPI: usedDPI, RequestedDPI: dpi, PID: r.PID(), Free: func() { putPix(img.Pix) }}, nil
}

// checkPage validates a renderer's page against the request and the
// limits, then copies the pixels out of the renderer's region, once, into
// an image of the broker's own, which is all it returns. The renderer can
// write to the region at any time (only its size is sealed): whatever it
// writes after the copy changes nothing here, and what it writes during
// the copy only tears this page's pixels, which come from it anyway. The
// region is never read again for this page.
//
// The copy costs about a millisecond for a Letter page at 150 dpi (see
// docs/benchmarks.md); it is also what lets callers (PNG encoding, pdfout)
// keep and pass the image freely.
func (b *Backend) checkPage(d library.Doc, resp *docpb.RenderResponse, dpi float64, region *shm.RegionReader) (*image.RGBA, float64, error) {
	if err := b.checkGeometry(d, resp, dpi); err != nil {
		return nil, 0, err
	}
	if resp.GetLength() > int64(region.Size()) {
		return nil, 0, fmt.Errorf("length %d beyond the %d-byte region", resp.GetLength(), region.Size())
	}
	w, h := int64(resp.GetWidth()), int64(resp.GetHeight())
	n := int(4 * w * h)
	pix := getPix(n)
	if err := region.CopyOut(pix, 0); err != nil {
		putPix(pix)
		return nil, 0, err
	}
	img := &image.RGBA{Pix: pix, Stride: int(4 * w), Rect: image.Rect(0, 0, int(w), int(h))}
	return img, resp.GetDpi(), nil
}

// checkGeometry validates a page's geometry against the request and the
// limits: what checkPage checks before it reads the region, and grow
// before it asks for a region of that size.
func (b *Backend) checkGeometry(d library.Doc, resp *docpb.RenderResponse, dpi float64) error {
	w, h := int64(resp.GetWidth()), int64(resp.GetHeight())
	switch {
	case w <= 0 || h <= 0 || w > doclimits.MaxSide || h > doclimits.MaxSide:
		return fmt.Errorf("size %dx%d out of bounds (1..%d a side)", w, h, doclimits.MaxSide)
	case w*h > b.limits.MaxPixelsPerPage:
		return fmt.Errorf("%dx%d px is over the budget of %d", w, h, b.limits.MaxPixelsPerPage)
	case int64(resp.GetStride()) != 4*w:
		return fmt.Errorf("stride %d for width %d, want %d", resp.GetStride(), w, 4*w)
	case resp.GetLength() != 4*w*h:
		return fmt.Errorf("length %d for %dx%d px, want %d", resp.GetLength(), w, h, 4*w*h)
	case !(resp.GetDpi() >= b.limits.MinDPI && resp.GetDpi() <= dpi):
		return fmt.Errorf("drawn at %g dpi, asked for %g (floor %g)", resp.GetDpi(), dpi, b.limits.MinDPI)
	case resp.GetDocument() != d.ID:
		return fmt.Errorf("renderer is bound to %q, not %q", docipc.Clean(resp.GetDocument()), d.ID)
	}
	return nil
}

// pixPool holds page buffers callers released (backend.Page.Release), so
// that a page costs one copy instead of allocating and zeroing megabytes
// first. Buffers are not cleared between pages, or documents: CopyOut
// overwrites every byte of the page, and the image is cut to the page's
// length and capacity so nothing beyond it is reachable.
var pixPool sync.Pool // of *[]byte

// getPix returns an n-byte buffer with unspecified contents.
func getPix(n int) []byte {
	if bp, ok := pixPool.Get().(*[]byte); ok && cap(*bp) >= n {
		return (*bp)[:n:n]
	}
	// Too small (or none): a page size this backend has not seen much.
	return make([]byte, n)
}

// putPix offers buf back for later pages.
func putPix(buf []byte) {
	pixPool.Put(&buf)
}

// killedByPage reports whether err says the renderer died drawing the
// page: a sandbox violation, the memory limit, the call timeout, a crash or
// a protocol breach. Not the CPU limit, which is for the renderer's whole
// life, nor routine ends.
func killedByPage(err error) bool {
	var ee *broker.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	switch ee.Reason {
	case broker.ExitViolation, broker.ExitMemoryLimit, broker.ExitTimeout, broker.ExitCrash, broker.ExitBadMessage:
		return true
	}
	return false
}

func (s *session) fatal(k pageKey) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fatalPages[k]
}

func (s *session) setFatal(k pageKey, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fatalPages == nil {
		s.fatalPages = map[pageKey]error{}
	}
	s.fatalPages[k] = err
}

// Status implements backend.Backend: every renderer bound to a document,
// with the sandbox layers in force in it.
func (b *Backend) Status(context.Context) []backend.RendererStatus {
	now := time.Now()
	var out []backend.RendererStatus
	for _, st := range b.b.Renderers() {
		if !st.Bound {
			continue // warm pool
		}
		rs := backend.RendererStatus{
			Doc: st.Document, PID: st.PID,
			Started: now.Add(-st.Uptime), Uptime: st.Uptime.Round(time.Millisecond),
			Layers: LayerNames(st.Layers),
		}
		if d, ok := b.lib.Lookup(st.Document); ok {
			rs.Name = d.Name
		}
		b.mu.Lock()
		s := b.sessions[st.Document]
		b.mu.Unlock()
		if s != nil && s.mu.TryLock() {
			if s.c != nil && s.c.r.PID() == st.PID {
				rs.Pages = s.pages
			}
			s.mu.Unlock()
		}
		out = append(out, rs)
	}
	return out
}

// LayerNames lists the layers in force, then the requested ones that are
// not (prefixed "NOT "), with the renderer's detail in parentheses.
func LayerNames(st policy.Status) []string {
	var on, off []string
	for _, ls := range st {
		name := string(ls.Layer)
		if ls.Detail != "" {
			name += " (" + ls.Detail + ")"
		}
		if ls.Active {
			on = append(on, name)
		} else {
			off = append(off, "NOT "+name)
		}
	}
	return append(on, off...)
}

// Events implements backend.Backend: the broker's renderer deaths that
// were not routine (violations, limits, timeouts, crashes, protocol
// breaches), plus document refusals and failed broker-side checks,
// oldest first.
func (b *Backend) Events() []backend.Event {
	out := b.events.List()
	for _, e := range b.b.Events() {
		if e.Kind != broker.EventExited || e.Err == nil {
			continue
		}
		switch e.Err.Reason {
		case broker.ExitClean, broker.ExitReleased, broker.ExitIdle, broker.ExitShutdown:
			continue
		}
		ev := backend.Event{Time: e.Time, Doc: e.Document, PID: e.PID, Kind: docerr.ErrSandbox.Error(), Reason: "killed: " + e.Err.Short() + " (" + e.Err.Error() + ")"}
		if d, ok := b.lib.Lookup(e.Document); ok {
			ev.Name = d.Name
		}
		out = append(out, ev)
	}
	slices.SortStableFunc(out, func(a, b backend.Event) int { return cmp.Compare(a.Time.UnixNano(), b.Time.UnixNano()) })
	return out
}
