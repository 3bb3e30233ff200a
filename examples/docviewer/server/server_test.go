package server

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/png"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/renderer"

	"github.com/sandkit/sandkit/examples/docviewer/backend"
	"github.com/sandkit/sandkit/examples/docviewer/backend/sandboxed"
	"github.com/sandkit/sandkit/examples/docviewer/backend/sandboxed/worker"
	"github.com/sandkit/sandkit/examples/docviewer/library"
)

// TestMain doubles as the renderer: the sandboxed backend under test
// re-executes this test binary.
func TestMain(m *testing.M) {
	if renderer.Requested() {
		renderer.Main(worker.Register)
	}
	os.Exit(m.Run())
}

const addr = "127.0.0.1:8080"

// docsDir copies samples into a temp dir, plus a dotfile and a symlink to
// a file outside it that must never be listed or served.
func docsDir(t *testing.T, samples ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, s := range samples {
		b, err := os.ReadFile(filepath.Join("..", "testdata", s))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, filepath.Base(s)), b, 0o644))
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, ".hidden.pdf"), []byte("%PDF-1.4"), 0o644))
	outside := filepath.Join(t.TempDir(), "secret.pdf")
	require.NoError(t, os.WriteFile(outside, []byte("secret"), 0o644))
	require.NoError(t, os.Symlink(outside, filepath.Join(dir, "link.pdf")))
	return dir
}

// countingBackend wraps a backend and records which documents were asked for.
type countingBackend struct {
	backend.Backend
	mu    sync.Mutex
	calls []string
}

func (c *countingBackend) PageCount(ctx context.Context, doc string) (int, error) {
	c.mu.Lock()
	c.calls = append(c.calls, doc)
	c.mu.Unlock()
	return c.Backend.PageCount(ctx, doc)
}

func (c *countingBackend) RenderPage(ctx context.Context, doc string, page int, dpi float64) (*backend.Page, error) {
	c.mu.Lock()
	c.calls = append(c.calls, doc)
	c.mu.Unlock()
	return c.Backend.RenderPage(ctx, doc, page, dpi)
}

func newTestServer(t *testing.T, samples ...string) (*Server, *countingBackend, *library.Library) {
	t.Helper()
	lib, err := library.Open(docsDir(t, samples...))
	require.NoError(t, err)
	sb, err := sandboxed.New(context.Background(), sandboxed.Config{Library: lib, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(func() { sb.Close() })
	cb := &countingBackend{Backend: sb}
	s, err := New(lib, cb, addr)
	require.NoError(t, err)
	return s, cb, lib
}

func do(s http.Handler, method, target, host string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, nil)
	req.Host = host
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	return rec
}

func assertSecurityHeaders(t *testing.T, rec *httptest.ResponseRecorder, what string) {
	t.Helper()
	h := rec.Header()
	assert.Equal(t, CSP, h.Get("Content-Security-Policy"), what)
	assert.Equal(t, "nosniff", h.Get("X-Content-Type-Options"), what)
	assert.Equal(t, "no-referrer", h.Get("Referrer-Policy"), what)
	assert.Equal(t, "same-origin", h.Get("Cross-Origin-Opener-Policy"), what)
	assert.Equal(t, "same-origin", h.Get("Cross-Origin-Resource-Policy"), what)
}

func TestHostCheck(t *testing.T) {
	s, _, _ := newTestServer(t, "valid/picture.png")
	tests := []struct {
		host string
		want int
	}{
		{"127.0.0.1:8080", http.StatusOK},
		{"localhost:8080", http.StatusOK},
		{"LOCALHOST:8080", http.StatusOK},
		{"evil.example:8080", http.StatusMisdirectedRequest},
		{"evil.example", http.StatusMisdirectedRequest},
		{"127.0.0.1:9999", http.StatusMisdirectedRequest},
		{"127.0.0.1", http.StatusMisdirectedRequest},
		{"", http.StatusMisdirectedRequest},
	}
	for _, tt := range tests {
		rec := do(s, "GET", "/", tt.host)
		assert.Equal(t, tt.want, rec.Code, "Host %q", tt.host)
		assertSecurityHeaders(t, rec, tt.host)
	}
}

func TestNewRejectsAddresses(t *testing.T) {
	for _, a := range []string{"0.0.0.0:8080", "[::]:8080", "127.0.0.1:0", "example.com:80", "127.0.0.1"} {
		_, err := New(nil, nil, a)
		assert.Error(t, err, a)
	}
	s, err := New(nil, nil, "[::1]:8080")
	require.NoError(t, err)
	assert.Contains(t, s.hosts, "[::1]:8080")
}

func TestHeadersOnEveryResponse(t *testing.T) {
	s, _, lib := newTestServer(t, "valid/picture.png", "hostile/random.pdf")
	id := library.IDOf("picture.png")
	require.NotEmpty(t, lib.List())
	for _, target := range []string{
		"/", "/doc/" + id, "/doc/" + id + "/page/1.png", "/doc/" + id + "/page/9.png",
		"/doc/" + library.IDOf("random.pdf"), "/doc/" + library.IDOf("random.pdf") + "/page/1.png",
		"/status", "/status.json", "/static/app.js", "/static/style.css", "/nope", "/doc/0000000000000000",
	} {
		rec := do(s, "GET", target, addr)
		assertSecurityHeaders(t, rec, target)
	}
	assertSecurityHeaders(t, do(s, "POST", "/", addr), "POST")
}

func TestMethods(t *testing.T) {
	s, _, _ := newTestServer(t, "valid/picture.png")
	for _, m := range []string{"POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "PROPFIND"} {
		rec := do(s, m, "/", addr)
		assert.Equal(t, http.StatusMethodNotAllowed, rec.Code, m)
		assert.Equal(t, "GET, HEAD", rec.Header().Get("Allow"), m)
	}
	assert.Equal(t, http.StatusOK, do(s, "HEAD", "/", addr).Code)
}

func TestIndexListsOnlyDocuments(t *testing.T) {
	s, _, _ := newTestServer(t, "valid/picture.png", "valid/multipage.pdf")
	body := do(s, "GET", "/", addr).Body.String()
	assert.Contains(t, body, "picture.png")
	assert.Contains(t, body, "/doc/"+library.IDOf("multipage.pdf"))
	assert.NotContains(t, body, "hidden")
	assert.NotContains(t, body, "link.pdf")
}

func TestNotFoundWithoutTouchingDocuments(t *testing.T) {
	s, cb, _ := newTestServer(t, "valid/picture.png")
	targets := []string{
		"/doc/..%2f..%2fetc%2fpasswd",
		"/doc/..%2F..%2Fetc%2Fpasswd/page/1.png",
		"/doc/../../etc/passwd",
		"/doc/%2fetc%2fpasswd",
		"/doc//etc/passwd",
		"/doc/%2e%2e/%2e%2e/etc/passwd",
		"/doc/picture.png",
		"/doc/" + library.IDOf(".hidden.pdf"),
		"/doc/" + library.IDOf("link.pdf"),
		"/doc/" + library.IDOf("../../etc/passwd"),
		"/doc/" + library.IDOf("/etc/passwd"),
		"/doc/0123456789abcdef",
		"/doc/0123456789ABCDEF",
		"/doc/" + library.IDOf("picture.png") + "/page/0.png",
		"/doc/" + library.IDOf("picture.png") + "/page/01.png",
		"/doc/" + library.IDOf("picture.png") + "/page/1.jpg",
		"/doc/" + library.IDOf("picture.png") + "/page/..%2f1.png",
		"/static/../server.go",
		"/static/%2e%2e%2fserver.go",
		"/etc/passwd",
		"//etc/passwd",
	}
	for _, target := range targets {
		rec := do(s, "GET", target, addr)
		assert.Equal(t, http.StatusNotFound, rec.Code, target)
		assert.NotContains(t, rec.Body.String(), "root:", target)
	}
	assert.Empty(t, cb.calls, "the backend was asked for a document")
}

func TestDocumentPageAndPNG(t *testing.T) {
	s, _, _ := newTestServer(t, "valid/multipage.pdf")
	id := library.IDOf("multipage.pdf")
	rec := do(s, "GET", "/doc/"+id, addr)
	require.Equal(t, http.StatusOK, rec.Code)
	body := rec.Body.String()
	assert.Contains(t, body, `<span id="pages">20 pages</span>`)
	// No page is requested by the HTML itself: each is a placeholder of
	// the first page's size (Letter, 816x1056 CSS px at 100 %) that
	// app.js fills once it nears the viewport.
	assert.Contains(t, body, `<img class="page" id="page-20" width="816" height="1056" alt="page 20">`)
	assert.Contains(t, body, `data-wpt="612" data-hpt="792"`)
	assert.NotContains(t, body, `src="/doc/`+id+`/page/`)
	assert.NotContains(t, body, "<script>", "no inline script")
	assert.NotContains(t, body, "style=", "no inline style")

	rec = do(s, "GET", "/doc/"+id+"/page/2.png", addr)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	assert.Equal(t, "image/png", rec.Header().Get("Content-Type"))
	img, err := png.Decode(bytes.NewReader(rec.Body.Bytes()))
	require.NoError(t, err)
	assert.Equal(t, image.Rect(0, 0, 935, 1210), img.Bounds()) // Letter at 110 dpi

	assert.Equal(t, http.StatusNotFound, do(s, "GET", "/doc/"+id+"/page/21.png", addr).Code)
}

func TestHostileDocumentsShowErrors(t *testing.T) {
	s, _, _ := newTestServer(t, "hostile/random.pdf", "hostile/manypages.pdf", "hostile/random.bin", "hostile/cycle.pdf", "valid/picture.png")
	tests := []struct{ name, kind string }{
		{"random.pdf", "corrupt document"},
		{"manypages.pdf", "document over budget"},
		{"random.bin", "unsupported document"},
	}
	for _, tt := range tests {
		rec := do(s, "GET", "/doc/"+library.IDOf(tt.name), addr)
		require.Equal(t, http.StatusOK, rec.Code, tt.name)
		assert.Contains(t, rec.Body.String(), `id="doc-error"`, tt.name)
		assert.Contains(t, rec.Body.String(), tt.kind, tt.name)
	}
	// cycle.pdf opens; its page fails with a 422 whose text explains why.
	rec := do(s, "GET", "/doc/"+library.IDOf("cycle.pdf")+"/page/1.png", addr)
	assert.Equal(t, http.StatusUnprocessableEntity, rec.Code)
	assert.Contains(t, rec.Body.String(), "cycle in page tree")
	assert.Equal(t, "text/plain; charset=utf-8", rec.Header().Get("Content-Type"))

	rec = do(s, "GET", "/status.json", addr)
	var st statusData
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &st))
	assert.GreaterOrEqual(t, len(st.Events), 4)
	var reasons []string
	for _, e := range st.Events {
		reasons = append(reasons, e.Name+": "+e.Kind)
	}
	assert.Contains(t, reasons, "manypages.pdf: document over budget")

	// The others are served as before.
	rec = do(s, "GET", "/doc/"+library.IDOf("picture.png")+"/page/1.png", addr)
	assert.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	assert.Equal(t, "image/png", rec.Header().Get("Content-Type"))
}

func TestStatus(t *testing.T) {
	s, _, _ := newTestServer(t, "valid/picture.png")
	id := library.IDOf("picture.png")
	require.Equal(t, http.StatusOK, do(s, "GET", "/doc/"+id, addr).Code)

	rec := do(s, "GET", "/status.json", addr)
	require.Equal(t, http.StatusOK, rec.Code)
	assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	var st statusData
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &st))
	require.Len(t, st.Renderers, 1)
	r := st.Renderers[0]
	assert.Equal(t, id, r.Doc)
	assert.NotEqual(t, os.Getpid(), r.PID, "rendered in a process of its own")
	assert.Positive(t, r.PID)
	assert.Equal(t, 1, r.Pages)
	// Layers read "name" or "name (detail)".
	var names []string
	for _, l := range r.Layers {
		name, _, _ := strings.Cut(l, " (")
		names = append(names, name)
	}
	for _, l := range []string{"user-namespace", "mount-namespace", "net-namespace", "landlock-filesystem", "seccomp", "seccomp-monitor", "rlimits"} {
		assert.Contains(t, names, l)
	}

	html := do(s, "GET", "/status", addr).Body.String()
	assert.Contains(t, html, "picture.png")
	assert.Contains(t, html, `<span class="layer">seccomp (`)
	assert.Contains(t, html, `<span class="layer">user-namespace</span>`)
}

func TestStaticFiles(t *testing.T) {
	s, _, _ := newTestServer(t)
	rec := do(s, "GET", "/static/app.js", addr)
	assert.Equal(t, http.StatusOK, rec.Code)
	assert.True(t, strings.HasPrefix(rec.Header().Get("Content-Type"), "text/javascript"))
	rec = do(s, "GET", "/static/style.css", addr)
	assert.Equal(t, http.StatusOK, rec.Code)
	assert.True(t, strings.HasPrefix(rec.Header().Get("Content-Type"), "text/css"))
}
