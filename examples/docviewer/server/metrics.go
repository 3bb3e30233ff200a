package server

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sandkit/sandkit/examples/docviewer/backend"
	"github.com/sandkit/sandkit/examples/docviewer/docerr"
)

// metrics are the viewer's Prometheus metrics, served at /metrics (behind
// the same Host check as every page). A registry of the server's own, not
// the client library's global one: no package-level state, and two
// servers in one process (tests) do not collide.
type metrics struct {
	reg         *prometheus.Registry
	pages       *prometheus.CounterVec
	conversions *prometheus.CounterVec
	pageSeconds prometheus.Histogram
	handler     http.Handler
}

func newMetrics(be backend.Backend) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		pages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "docviewer_pages_total",
			Help: "Page requests to the backend, by outcome (ok, or the error kind).",
		}, []string{"outcome"}),
		conversions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "docviewer_conversions_total",
			Help: "Documents opened for conversion to pixels (page count requests), by outcome (ok, or the error kind).",
		}, []string{"outcome"}),
		pageSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "docviewer_page_duration_seconds",
			Help:    "Time to get a page from the backend, queueing included, for pages drawn.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
	}
	m.reg.MustRegister(m.pages, m.conversions, m.pageSeconds,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if lr, ok := be.(backend.LoadReporter); ok {
		m.reg.MustRegister(loadCollector{lr})
	}
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: nil})
	return m
}

func (s *Server) metricsPage(w http.ResponseWriter, r *http.Request) {
	s.met.handler.ServeHTTP(w, r)
}

// outcome names err for a metric label: "ok" or its kind, never its text
// (labels must stay few).
func outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, docerr.ErrNotFound):
		return "not_found"
	case errors.Is(err, docerr.ErrUnsupported):
		return "unsupported"
	case errors.Is(err, docerr.ErrCorrupt):
		return "corrupt"
	case errors.Is(err, docerr.ErrOverBudget):
		return "over_budget"
	case errors.Is(err, docerr.ErrInvalid):
		return "invalid"
	case errors.Is(err, docerr.ErrSandbox):
		return "renderer_failure"
	case errors.Is(err, docerr.ErrBusy):
		return "busy"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "error"
}

// instrumented is the backend as the server calls it: every page and page
// count is counted by outcome, and drawn pages are timed.
type instrumented struct {
	backend.Backend
	m *metrics
}

func (b instrumented) PageCount(ctx context.Context, doc string) (int, error) {
	n, err := b.Backend.PageCount(ctx, doc)
	b.m.conversions.WithLabelValues(outcome(err)).Inc()
	return n, err
}

func (b instrumented) RenderPage(ctx context.Context, doc string, page int, dpi float64) (*backend.Page, error) {
	start := time.Now()
	p, err := b.Backend.RenderPage(ctx, doc, page, dpi)
	if err == nil {
		b.m.pageSeconds.Observe(time.Since(start).Seconds())
	}
	b.m.pages.WithLabelValues(outcome(err)).Inc()
	return p, err
}

// loadCollector exports a backend's Load, read once per scrape.
type loadCollector struct{ be backend.LoadReporter }

var (
	descAlive      = prometheus.NewDesc("docviewer_renderers_alive", "Live renderers, bound to a document or warm.", nil, nil)
	descSpawned    = prometheus.NewDesc("docviewer_renderers_spawned_total", "Renderers that started and locked down.", nil, nil)
	descEvicted    = prometheus.NewDesc("docviewer_renderer_evictions_total", "Idle renderers ended to make room for another document (MaxRenderers).", nil, nil)
	descExits      = prometheus.NewDesc("docviewer_renderer_exits_total", "Renderer ends, by reason.", []string{"reason"}, nil)
	descViolations = prometheus.NewDesc("docviewer_sandbox_violations_total", "Renderers killed for a system call outside the allowlist, by system call.", []string{"syscall"}, nil)
	descQueued     = prometheus.NewDesc("docviewer_queue_length", "Requests waiting for their turn at a renderer.", nil, nil)
	descActive     = prometheus.NewDesc("docviewer_requests_active", "Requests being served by a renderer.", nil, nil)
	descRejected   = prometheus.NewDesc("docviewer_requests_rejected_total", "Requests refused because the queue was full (HTTP 503).", nil, nil)
	descPoolReady  = prometheus.NewDesc("docviewer_warm_pool_ready", "Renderers locked down and waiting for a document.", nil, nil)
	descPoolFails  = prometheus.NewDesc("docviewer_warm_pool_refill_failures_total", "Failed refills of the warm pool.", nil, nil)
)

func (c loadCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAlive, descSpawned, descEvicted, descExits, descViolations, descQueued, descActive, descRejected, descPoolReady, descPoolFails} {
		ch <- d
	}
}

func (c loadCollector) Collect(ch chan<- prometheus.Metric) {
	l := c.be.Load()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(descAlive, float64(l.RenderersAlive))
	counter(descSpawned, float64(l.RenderersSpawned))
	counter(descEvicted, float64(l.Evicted))
	for reason, n := range l.Exits {
		counter(descExits, float64(n), reason)
	}
	for name, n := range l.Violations {
		counter(descViolations, float64(n), name)
	}
	gauge(descQueued, float64(l.Queued))
	gauge(descActive, float64(l.Active))
	counter(descRejected, float64(l.Rejected))
	if p := l.WarmPool; p != nil {
		gauge(descPoolReady, float64(p.Ready))
		counter(descPoolFails, float64(p.Failures))
	}
}
