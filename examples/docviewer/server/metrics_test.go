package server

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/examples/docviewer/backend"
	"github.com/sandkit/sandkit/examples/docviewer/backend/inprocess"
	"github.com/sandkit/sandkit/examples/docviewer/backend/sandboxed"
	"github.com/sandkit/sandkit/examples/docviewer/docerr"
	"github.com/sandkit/sandkit/examples/docviewer/library"
	"github.com/sandkit/sandkit/examples/docviewer/render"
)

// metricValue returns the value of the sample named exactly name (with
// its labels, as exposed) in a scrape, or fails.
func metricValue(t *testing.T, scrape, name string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(scrape)
	require.NotNil(t, m, "no sample %s in:\n%s", name, scrape)
	v, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	return v
}

// TestMetrics scrapes /metrics after a document view, a page and a page
// that does not exist, rendered by the sandboxed backend. The view draws
// page 1 at 36 dpi to size the placeholders, so two pages are drawn.
func TestMetrics(t *testing.T) {
	lib, err := library.Open(docsDir(t, "valid/multipage.pdf"))
	require.NoError(t, err)
	sb, err := sandboxed.New(context.Background(), sandboxed.Config{Library: lib, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(func() { sb.Close() })
	s, err := New(lib, sb, addr)
	require.NoError(t, err)
	id := library.IDOf("multipage.pdf")
	require.Equal(t, http.StatusOK, do(s, "GET", "/doc/"+id, addr).Code)
	require.Equal(t, http.StatusOK, do(s, "GET", "/doc/"+id+"/page/1.png", addr).Code)
	require.Equal(t, http.StatusNotFound, do(s, "GET", "/doc/"+id+"/page/99.png", addr).Code)

	rec := do(s, "GET", "/metrics", addr)
	require.Equal(t, http.StatusOK, rec.Code)
	assert.Contains(t, rec.Header().Get("Content-Type"), "text/plain")
	assertSecurityHeaders(t, rec, "/metrics")
	scrape := rec.Body.String()
	for name, want := range map[string]float64{
		`docviewer_conversions_total{outcome="ok"}`:         1,
		`docviewer_pages_total{outcome="ok"}`:               2,
		`docviewer_pages_total{outcome="not_found"}`:        1,
		`docviewer_page_duration_seconds_count`:             2,
		`docviewer_renderers_alive`:                         1,
		`docviewer_renderers_spawned_total`:                 1,
		`docviewer_queue_length`:                            0,
		`docviewer_requests_active`:                         0,
		`docviewer_requests_rejected_total`:                 0,
		`docviewer_renderer_evictions_total`:                0,
		`docviewer_page_duration_seconds_bucket{le="+Inf"}`: 2,
	} {
		assert.Equal(t, want, metricValue(t, scrape, name), name)
	}
	assert.Positive(t, metricValue(t, scrape, "process_resident_memory_bytes"))
	assert.Equal(t, http.StatusMisdirectedRequest, do(s, "GET", "/metrics", "evil.example:8080").Code, "behind the Host check")

	// /status.json carries the same load.
	var st statusData
	require.NoError(t, json.Unmarshal(do(s, "GET", "/status.json", addr).Body.Bytes(), &st))
	require.NotNil(t, st.Load)
	assert.Equal(t, 1, st.Load.RenderersAlive)
	assert.Equal(t, 8, st.Load.MaxActive)
	assert.Equal(t, 256, st.Load.MaxQueue)
}

// loadBackend is an in-process backend that reports a fixed load and
// answers every page with a given error.
type loadBackend struct {
	backend.Backend
	load    backend.Load
	pageErr error
}

func (b loadBackend) Load() backend.Load { return b.load }

func (b loadBackend) RenderPage(ctx context.Context, doc string, page int, dpi float64) (*backend.Page, error) {
	if b.pageErr != nil {
		return nil, b.pageErr
	}
	return b.Backend.RenderPage(ctx, doc, page, dpi)
}

// TestMetricsExportLoad: violations by system call, exits by reason and
// the warm pool come from the backend's Load, as it reports them.
func TestMetricsExportLoad(t *testing.T) {
	lib, err := library.Open(docsDir(t, "valid/picture.png"))
	require.NoError(t, err)
	be := loadBackend{Backend: inprocess.New(lib, render.DefaultLimits(), slog.New(slog.DiscardHandler)), load: backend.Load{
		Queued: 3, Active: 8, Rejected: 5, Evicted: 7, RenderersAlive: 9, RenderersSpawned: 40,
		Exits:      map[string]uint64{"sandbox violation": 2, "idle timeout": 30},
		Violations: map[string]uint64{"socket": 2},
		WarmPool:   &backend.WarmPool{Target: 2, Ready: 1, Failures: 4},
	}}
	s, err := New(lib, be, addr)
	require.NoError(t, err)
	scrape := do(s, "GET", "/metrics", addr).Body.String()
	for name, want := range map[string]float64{
		`docviewer_sandbox_violations_total{syscall="socket"}`:       2,
		`docviewer_renderer_exits_total{reason="sandbox violation"}`: 2,
		`docviewer_renderer_exits_total{reason="idle timeout"}`:      30,
		`docviewer_queue_length`:                                     3,
		`docviewer_requests_active`:                                  8,
		`docviewer_requests_rejected_total`:                          5,
		`docviewer_renderer_evictions_total`:                         7,
		`docviewer_renderers_alive`:                                  9,
		`docviewer_renderers_spawned_total`:                          40,
		`docviewer_warm_pool_ready`:                                  1,
		`docviewer_warm_pool_refill_failures_total`:                  4,
	} {
		assert.Equal(t, want, metricValue(t, scrape, name), name)
	}
}

// TestBusyIs503WithRetryAfter: a page refused because the queue is full
// is a 503 that tells the client when to come back, and counts as busy.
func TestBusyIs503WithRetryAfter(t *testing.T) {
	lib, err := library.Open(docsDir(t, "valid/picture.png"))
	require.NoError(t, err)
	be := loadBackend{Backend: inprocess.New(lib, render.DefaultLimits(), slog.New(slog.DiscardHandler)),
		pageErr: docerr.New(docerr.ErrBusy, nil, "picture.png: 256 requests already wait for a renderer")}
	s, err := New(lib, be, addr)
	require.NoError(t, err)
	rec := do(s, "GET", "/doc/"+library.IDOf("picture.png")+"/page/1.png", addr)
	assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
	assert.Equal(t, retryAfter, rec.Header().Get("Retry-After"))
	assert.Contains(t, rec.Body.String(), "requests already wait for a renderer")
	assert.Equal(t, float64(1), metricValue(t, do(s, "GET", "/metrics", addr).Body.String(), `docviewer_pages_total{outcome="busy"}`))
}

// TestAccessLog: one structured record per request, with what an
// operator needs and without the query string.
func TestAccessLog(t *testing.T) {
	lib, err := library.Open(docsDir(t, "valid/picture.png"))
	require.NoError(t, err)
	s, err := New(lib, inprocess.New(lib, render.DefaultLimits(), slog.New(slog.DiscardHandler)), addr)
	require.NoError(t, err)
	var buf bytes.Buffer
	h := AccessLog(s, slog.New(slog.NewJSONHandler(&buf, nil)))
	rec := do(h, "GET", "/doc/0123456789abcdef?token=secret", addr)
	require.Equal(t, http.StatusNotFound, rec.Code)
	var e map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &e), buf.String())
	assert.Equal(t, "http", e["msg"])
	assert.Equal(t, "INFO", e["level"])
	assert.Equal(t, "GET", e["method"])
	assert.Equal(t, "/doc/0123456789abcdef", e["path"])
	assert.Equal(t, float64(http.StatusNotFound), e["status"])
	assert.Equal(t, float64(rec.Body.Len()), e["bytes"])
	assert.Contains(t, e, "duration")
	assert.Equal(t, "192.0.2.1:1234", e["remote"])
	assert.NotContains(t, buf.String(), "secret")
}
