package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// syncBuffer is a bytes.Buffer that serve's logger and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// serve -allowed-hosts accepts the named Host values (a Service's name)
// beside the bound address, refuses others, and /healthz checks a real
// renderer.
func TestServeAllowedHosts(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "-addr", "127.0.0.1:0", "-allowed-hosts", "docviewer,docviewer.default.svc", "testdata/valid"}, &stderr)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop")
		}
	})
	urlRE := regexp.MustCompile(`url=(http://127\.0\.0\.1:\d+)/`)
	var base string
	for deadline := time.Now().Add(time.Minute); base == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if m := urlRE.FindStringSubmatch(stderr.String()); m != nil {
			base = m[1]
		}
	}
	require.NotEmpty(t, base, "serve did not start:\n%s", stderr.String())
	get := func(path, host string) (int, string) {
		req, err := http.NewRequestWithContext(ctx, "GET", base+path, nil)
		require.NoError(t, err)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	bound := strings.TrimPrefix(base, "http://")
	for host, want := range map[string]int{
		"docviewer":             http.StatusOK,
		"docviewer.default.svc": http.StatusOK,
		bound:                   http.StatusOK,
		"docviewer.evil":        http.StatusMisdirectedRequest,
	} {
		code, _ := get("/readyz", host)
		assert.Equal(t, want, code, "Host %q", host)
	}
	code, body := get("/healthz", "docviewer")
	assert.Equal(t, http.StatusOK, code, body)
	assert.Contains(t, body, "ok: renderer spawned and locked; layers in force: ")
}

func TestServeEveryAddressNeedsAllowedHosts(t *testing.T) {
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"serve", "-addr", "0.0.0.0:0", "testdata/valid"}, &stderr)
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr.String(), "or the names with -allowed-hosts")
}
