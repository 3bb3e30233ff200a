package server

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/examples/docviewer/library"
)

// TestFolderPageTurns: in folder mode too, a client holds at most
// maxClientPages page requests and one safe PDF conversion at once. One
// that asks for more waits (here until its request ends: 429, and the
// backend never sees it) while another client is served.
func TestFolderPageTurns(t *testing.T) {
	s, cb, _ := newTestServer(t, "valid/multipage.pdf")
	id := library.IDOf("multipage.pdf")
	var held []func()
	for range maxClientPages {
		rel, err := s.turns.page(context.Background(), "192.0.2.1")
		require.NoError(t, err)
		held = append(held, rel)
	}
	safe, err := s.turns.safe(context.Background(), "192.0.2.1")
	require.NoError(t, err)
	held = append(held, safe)

	// A refused request waits only as long as its context: 300 ms. A
	// served one may take long on a loaded machine.
	from := func(client, target string, wait time.Duration) *httptest.ResponseRecorder {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		req := httptest.NewRequest("GET", target, nil).WithContext(ctx)
		req.Host, req.RemoteAddr = addr, client+":40000"
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		return rec
	}
	for _, target := range []string{"/doc/" + id + "/page/1.png?dpi=36", "/doc/" + id + "/safe.pdf"} {
		rec := from("192.0.2.1", target, 300*time.Millisecond)
		assert.Equal(t, http.StatusTooManyRequests, rec.Code, target)
		assert.NotEmpty(t, rec.Header().Get("Retry-After"), target)
	}
	assert.Empty(t, cb.calls, "a request past its client's turns reached the backend")

	rec := from("192.0.2.2", "/doc/"+id+"/page/1.png?dpi=36", time.Minute)
	assert.Equal(t, http.StatusOK, rec.Code, rec.Body.String())

	for _, rel := range held {
		rel()
	}
	assert.True(t, s.turns.idle())
	rec = from("192.0.2.1", "/doc/"+id+"/page/2.png?dpi=36", time.Minute)
	assert.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
}
