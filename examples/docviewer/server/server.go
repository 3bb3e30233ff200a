// Package server is the web UI of `docviewer serve`: a document list, a
// document page whose pages stream in as PNG images, and a status page of
// the live renderers. It renders nothing itself: every document goes
// through a backend.Backend (in-process for tests, the sandboxed broker in
// production), and the only bytes it sends are HTML of its own, two static
// files, and PNGs it encodes from the backend's validated RGBA. Document
// bytes are never served.
//
// With WithUploads it is also a web service (web mode, upload.go): people
// upload documents into a private store and view them the same way.
//
// Security: requests must carry the exact Host the server is bound to
// (defeats DNS rebinding against a loopback server; 421 otherwise), only GET
// and HEAD are allowed (405), and POST for the upload, which must also come
// from this origin; every response carries a strict CSP with no inline
// script or style, and URLs name documents by their library id, matched
// against the listing; a URL never becomes a path.
package server

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sandkit/sandkit/examples/docviewer/backend"
	"github.com/sandkit/sandkit/examples/docviewer/docerr"
	"github.com/sandkit/sandkit/examples/docviewer/library"
)

// CSP is sent with every response. No inline script or style: app.js and
// style.css are served from 'self'. connect-src and form-action 'self':
// app.js uploads documents and polls a safe PDF's progress on this
// server only, and the upload form (without script) posts to it.
const CSP = "default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// DefaultDPI is the resolution pages are drawn at for the screen.
const DefaultDPI = 110

// Timeouts for one backend call made on behalf of a request.
const (
	openTimeout   = 30 * time.Second
	renderTimeout = 60 * time.Second
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static/app.js static/style.css
var staticFS embed.FS

// Server is the http.Handler of the web UI.
type Server struct {
	lib   *library.Library
	be    backend.Backend
	hosts []string // accepted Host header values
	// allowed are further accepted Host values (WithAllowedHosts).
	allowed []string
	health  healthCache
	dpi     float64
	tmpl    *template.Template
	log     *slog.Logger
	safe    *safeJobs
	// uploads, if set, is web mode's store, rendered by upBE.
	uploads *Uploads
	upBE    backend.Backend
	met     *metrics
	// raw is the backend as given; be is raw, instrumented (metrics.go).
	raw backend.Backend
}

// Option configures New.
type Option func(*Server)

// WithDPI sets the resolution pages are drawn at (default DefaultDPI).
func WithDPI(dpi float64) Option { return func(s *Server) { s.dpi = dpi } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(s *Server) { s.log = l } }

// New returns the UI for the documents of lib, rendered by be, for a
// server listening on addr (host:port as bound, e.g. 127.0.0.1:8080, after
// resolving port 0). addr must be a specific address: its host:port is the
// only Host header accepted (plus localhost:port when it is a loopback
// address).
func New(lib *library.Library, be backend.Backend, addr string, opts ...Option) (*Server, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("server address %q: %w", addr, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return nil, fmt.Errorf("server address %q: need the bound port, not %q", addr, port)
	}
	s := &Server{lib: lib, raw: be, dpi: DefaultDPI, log: slog.Default(), safe: newSafeJobs(), met: newMetrics(be)}
	s.be = instrumented{be, s.met}
	for _, o := range opts {
		o(s)
	}
	ip := net.ParseIP(host)
	switch {
	case ip != nil && ip.IsUnspecified() && len(s.allowed) > 0:
		// Every address (a container's): only the named hosts.
	case host == "localhost":
		s.hosts = []string{"localhost:" + port, "127.0.0.1:" + port, "[::1]:" + port}
	case ip == nil:
		return nil, fmt.Errorf("server address %q: host must be an IP address or localhost", addr)
	case ip.IsUnspecified():
		return nil, fmt.Errorf("server address %q: bind a specific address, or name the accepted hosts (WithAllowedHosts): the Host check needs them", addr)
	default:
		s.hosts = []string{net.JoinHostPort(ip.String(), port)}
		if ip.IsLoopback() {
			s.hosts = append(s.hosts, "localhost:"+port)
		}
	}
	s.hosts = append(s.hosts, s.allowed...)
	s.tmpl, err = template.New("").Funcs(template.FuncMap{
		"pages": func(n int) []int {
			p := make([]int, n)
			for i := range p {
				p[i] = i + 1
			}
			return p
		},
		"size":   humanSize,
		"plural": plural,
	}).ParseFS(templateFS, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("templates: %w", err)
	}
	return s, nil
}

func humanSize(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%d B", n)
	}
}

// setSecurityHeaders runs first for every response, errors included.
func setSecurityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cache-Control", "no-store")
}

var (
	idRE   = regexp.MustCompile(`^[0-9a-f]{16}$`)
	pageRE = regexp.MustCompile(`^([1-9][0-9]{0,5})\.png$`)
)

// ServeHTTP checks Host and method, then routes on the raw (escaped) path:
// "%2f" stays inside a segment and "." or ".." are just segments that match
// no route, so nothing is cleaned, redirected or decoded into a path.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	setSecurityHeaders(w.Header())
	if !slices.Contains(s.hosts, strings.ToLower(r.Host)) {
		http.Error(w, "misdirected request: unexpected Host header", http.StatusMisdirectedRequest)
		return
	}
	seg := strings.Split(strings.TrimPrefix(r.URL.EscapedPath(), "/"), "/")
	upload := s.uploads != nil && len(seg) == 1 && seg[0] == "upload"
	if upload && r.Method == http.MethodPost {
		s.upload(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		if upload {
			w.Header().Set("Allow", "GET, HEAD, POST")
		}
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	switch {
	case upload:
		s.uploadPage(w)
	case s.uploads != nil && len(seg) >= 2 && seg[0] == "u":
		s.uploaded(w, r, seg)
	case len(seg) == 3 && seg[0] == "doc" && (seg[2] == "safe.pdf" || seg[2] == "safe.json"):
		if d, ok := s.lookup(w, r, seg[1]); ok {
			ref := s.folderDoc(d)
			if seg[2] == "safe.pdf" {
				s.safePDF(w, r, ref)
			} else {
				s.safeJSON(w, ref)
			}
		}
	case len(seg) == 1 && seg[0] == "":
		s.index(w, r)
	case len(seg) == 2 && seg[0] == "doc":
		s.document(w, r, seg[1])
	case len(seg) == 4 && seg[0] == "doc" && seg[2] == "page":
		s.page(w, r, seg[1], seg[3])
	case len(seg) == 1 && seg[0] == "healthz":
		s.healthz(w, r)
	case len(seg) == 1 && seg[0] == "readyz":
		s.readyz(w, r)
	case len(seg) == 1 && seg[0] == "status":
		s.status(w, r)
	case len(seg) == 1 && seg[0] == "status.json":
		s.statusJSON(w, r)
	case len(seg) == 1 && seg[0] == "metrics":
		s.metricsPage(w, r)
	case len(seg) == 2 && seg[0] == "static" && (seg[1] == "app.js" || seg[1] == "style.css"):
		s.static(w, seg[1])
	default:
		http.NotFound(w, r)
	}
}

// lookup maps an id from the URL to a listed document, or 404.
func (s *Server) lookup(w http.ResponseWriter, r *http.Request, id string) (library.Doc, bool) {
	if !idRE.MatchString(id) {
		http.NotFound(w, r)
		return library.Doc{}, false
	}
	d, ok := s.lib.Lookup(id)
	if !ok {
		http.NotFound(w, r)
	}
	return d, ok
}

func (s *Server) render(w http.ResponseWriter, name string, data any) {
	var buf bytes.Buffer
	if err := s.tmpl.ExecuteTemplate(&buf, name, data); err != nil {
		s.log.Error("template", "name", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(buf.Bytes())
}

func (s *Server) index(w http.ResponseWriter, r *http.Request) {
	if err := s.lib.Refresh(); err != nil {
		s.log.Warn("refresh listing", "err", err)
	}
	s.render(w, "index.html", struct {
		Docs    []library.Doc
		Uploads bool
	}{s.lib.List(), s.uploads != nil})
}

func (s *Server) document(w http.ResponseWriter, r *http.Request, id string) {
	if d, ok := s.lookup(w, r, id); ok {
		s.viewer(w, r, s.folderDoc(d), false)
	}
}

func (s *Server) page(w http.ResponseWriter, r *http.Request, id, file string) {
	if d, ok := s.lookup(w, r, id); ok {
		s.renderPage(w, r, s.folderDoc(d), file)
	}
}

func (s *Server) folderDoc(d library.Doc) docRef {
	return docRef{ID: d.ID, Name: d.Name, Base: "/doc/" + d.ID, be: s.be}
}

// statusOf maps an error kind onto an HTTP status for page requests.
func statusOf(err error) int {
	switch {
	case errors.Is(err, docerr.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, docerr.ErrUnsupported), errors.Is(err, docerr.ErrCorrupt), errors.Is(err, docerr.ErrOverBudget):
		return http.StatusUnprocessableEntity
	case errors.Is(err, docerr.ErrSandbox):
		return http.StatusBadGateway
	case errors.Is(err, docerr.ErrBusy):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	default:
		return http.StatusInternalServerError
	}
}

// retryAfter is the Retry-After of a 503 for a full queue, in seconds:
// about the time a queue of MaxQueue pages takes to drain.
const retryAfter = "2"

type statusData struct {
	Renderers []backend.RendererStatus `json:"renderers"`
	Events    []backend.Event          `json:"events"`
	// Load is the queue, the renderers' life and the warm pool, for
	// backends that report it.
	Load *backend.Load `json:"load,omitempty"`
}

func (s *Server) statusData(ctx context.Context) statusData {
	st := s.be.Status(ctx)
	slices.SortFunc(st, func(a, b backend.RendererStatus) int { return a.Started.Compare(b.Started) })
	d := statusData{Renderers: st, Events: s.be.Events()}
	if lr, ok := s.raw.(backend.LoadReporter); ok {
		l := lr.Load()
		d.Load = &l
	}
	return d
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	s.render(w, "status.html", s.statusData(r.Context()))
}

func (s *Server) statusJSON(w http.ResponseWriter, r *http.Request) {
	b, err := json.MarshalIndent(s.statusData(r.Context()), "", "  ")
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

func (s *Server) static(w http.ResponseWriter, name string) {
	b, err := staticFS.ReadFile("static/" + name)
	if err != nil {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	ct := "text/css; charset=utf-8"
	if strings.HasSuffix(name, ".js") {
		ct = "text/javascript; charset=utf-8"
	}
	w.Header().Set("Content-Type", ct)
	w.Write(b)
}
