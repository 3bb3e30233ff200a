package server

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/examples/docviewer/backend"
	"github.com/sandkit/sandkit/examples/docviewer/backend/sandboxed"
	"github.com/sandkit/sandkit/examples/docviewer/library"
)

func TestAllowedHosts(t *testing.T) {
	lib, err := library.Open(docsDir(t, "valid/picture.png"))
	require.NoError(t, err)
	var be backend.Backend // never reached: only / and refusals are requested
	_, err = New(lib, be, "0.0.0.0:8080")
	require.ErrorContains(t, err, "bind a specific address, or name the accepted hosts")

	s, err := New(lib, be, "0.0.0.0:8080", WithAllowedHosts("docviewer", " Docviewer.default.svc:8080 ", ""))
	require.NoError(t, err)
	for host, want := range map[string]int{
		"docviewer":                  http.StatusOK,
		"DOCVIEWER":                  http.StatusOK,
		"docviewer.default.svc:8080": http.StatusOK,
		"docviewer:8080":             http.StatusMisdirectedRequest, // only as listed
		"docviewer.default.svc":      http.StatusMisdirectedRequest,
		"0.0.0.0:8080":               http.StatusMisdirectedRequest,
		"127.0.0.1:8080":             http.StatusMisdirectedRequest,
		"evil.example":               http.StatusMisdirectedRequest,
		"":                           http.StatusMisdirectedRequest,
	} {
		assert.Equal(t, want, do(s, "GET", "/", host).Code, "Host %q", host)
	}

	// On a specific address the bound one stays accepted beside the names.
	s, err = New(lib, be, "192.0.2.10:8080", WithAllowedHosts("docviewer"))
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, do(s, "GET", "/", "192.0.2.10:8080").Code)
	assert.Equal(t, http.StatusOK, do(s, "GET", "/", "docviewer").Code)
	assert.Equal(t, http.StatusMisdirectedRequest, do(s, "GET", "/healthz", "evil.example").Code)
}

// /healthz spawns and locks a real renderer.
func TestHealthzSpawnsARenderer(t *testing.T) {
	lib, err := library.Open(docsDir(t))
	require.NoError(t, err)
	sb, err := sandboxed.New(context.Background(), sandboxed.Config{Library: lib, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(func() { sb.Close() })
	s, err := New(lib, sb, addr)
	require.NoError(t, err)
	rec := do(s, "GET", "/healthz", addr)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	assert.Contains(t, rec.Body.String(), "ok: renderer spawned and locked; layers in force: ")
	assert.Contains(t, rec.Body.String(), "seccomp")
	assert.NotContains(t, rec.Body.String(), "NOT ")
	assertSecurityHeaders(t, rec, "/healthz")
}

type fakeChecker struct {
	backend.Backend
	calls atomic.Int32
	err   error
}

func (f *fakeChecker) Check(context.Context) ([]string, error) {
	f.calls.Add(1)
	return []string{"seccomp"}, f.err
}

// Probes within checkTTL reuse the last result, a failure included: a
// client hammering /healthz starts one renderer per checkTTL, no more.
func TestHealthzCachesTheResult(t *testing.T) {
	lib, err := library.Open(docsDir(t))
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		err  error
		code int
		body string
	}{
		{"ok", nil, http.StatusOK, "ok: renderer spawned and locked; layers in force: seccomp\n"},
		{"failing", errors.New("start renderer: no user namespaces"), http.StatusServiceUnavailable, "renderer check failed: start renderer: no user namespaces\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fc := &fakeChecker{err: tc.err}
			s, err := New(lib, fc, addr, WithLogger(slog.New(slog.DiscardHandler)))
			require.NoError(t, err)
			for range 5 {
				rec := do(s, "GET", "/healthz", addr)
				assert.Equal(t, tc.code, rec.Code)
				assert.Equal(t, tc.body, rec.Body.String())
			}
			assert.Equal(t, int32(1), fc.calls.Load())
			s.health.at = s.health.at.Add(-checkTTL) // the result expires
			do(s, "GET", "/healthz", addr)
			assert.Equal(t, int32(2), fc.calls.Load())
		})
	}
}

func TestReadyz(t *testing.T) {
	dir := docsDir(t, "valid/picture.png", "valid/multipage.pdf")
	lib, err := library.Open(dir)
	require.NoError(t, err)
	fc := &fakeChecker{}
	s, err := New(lib, fc, addr)
	require.NoError(t, err)
	rec := do(s, "GET", "/readyz", addr)
	assert.Equal(t, http.StatusOK, rec.Code)
	assert.Equal(t, "ready: 2 documents\n", rec.Body.String())
	assert.Zero(t, fc.calls.Load(), "/readyz must start no renderer")

	require.NoError(t, os.RemoveAll(dir))
	rec = do(s, "GET", "/readyz", addr)
	assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
	assert.Contains(t, rec.Body.String(), "documents cannot be listed: ")
}
