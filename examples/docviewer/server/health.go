package server

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// WithAllowedHosts accepts requests whose Host header is one of hosts
// (exactly, case-insensitively: "docviewer" matches a client that sent no
// port, "docviewer:8080" one that did), besides the bound address. With
// it the server may listen on every address (0.0.0.0:8080, a container's),
// since the Host check then has the names clients use.
func WithAllowedHosts(hosts ...string) Option {
	return func(s *Server) {
		for _, h := range hosts {
			if h = strings.ToLower(strings.TrimSpace(h)); h != "" {
				s.allowed = append(s.allowed, h)
			}
		}
	}
}

// Checker is a backend that can prove it can render: the sandboxed
// backend spawns and locks a renderer and makes one call to it.
type Checker interface {
	Check(ctx context.Context) (layers []string, err error)
}

// Health check bounds: a check may take checkTimeout; its result is
// reused for checkTTL, so probes (or anyone who can reach /healthz) start
// at most one renderer per checkTTL.
const (
	checkTimeout = 20 * time.Second
	checkTTL     = 10 * time.Second
)

// healthCache holds the last check's result. Its mutex is held during a
// check, so concurrent probes wait for the one check under way.
type healthCache struct {
	mu     sync.Mutex
	at     time.Time
	layers []string
	err    error
}

func (s *Server) check(ctx context.Context) ([]string, error) {
	c, ok := s.raw.(Checker)
	if !ok {
		return nil, nil
	}
	s.health.mu.Lock()
	defer s.health.mu.Unlock()
	if !s.health.at.IsZero() && time.Since(s.health.at) < checkTTL {
		return s.health.layers, s.health.err
	}
	// Not the request's context: a probe that hangs up must not leave a
	// cancelled result cached for the others.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), checkTimeout)
	defer cancel()
	s.health.layers, s.health.err = c.Check(ctx)
	s.health.at = time.Now()
	if s.health.err != nil {
		s.log.Warn("health check failed", "err", s.health.err)
	}
	return s.health.layers, s.health.err
}

// healthz answers 200 when a renderer could be spawned, locked down and
// called within the last checkTTL, 503 with the reason otherwise. For a
// backend without a sandbox it says so.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if _, ok := s.raw.(Checker); !ok {
		fmt.Fprintln(w, "ok: in-process backend, no sandbox to check")
		return
	}
	layers, err := s.check(r.Context())
	if err != nil {
		http.Error(w, "renderer check failed: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintf(w, "ok: renderer spawned and locked; layers in force: %s\n", strings.Join(layers, ", "))
}

// readyz answers 200 while the document directory can be listed: the
// server can take requests. It starts no renderer.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err := s.lib.Refresh(); err != nil {
		http.Error(w, "documents cannot be listed: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintf(w, "ready: %d documents\n", len(s.lib.List()))
}
