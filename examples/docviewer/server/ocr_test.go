package server

import (
	"context"
	"encoding/json"
	"image"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/examples/docviewer/backend/sandboxed"
	"github.com/sandkit/sandkit/examples/docviewer/library"
	"github.com/sandkit/sandkit/examples/docviewer/pdfout"
)

// fakeOCR "recognises" the same words on every page, counting the calls
// and the image sizes it was given.
type fakeOCR struct {
	calls atomic.Int32
	width atomic.Int32
}

func (f *fakeOCR) Words(_ context.Context, _ string, _ int, img *image.RGBA) ([]pdfout.Word, error) {
	f.calls.Add(1)
	f.width.Store(int32(img.Bounds().Dx()))
	line := image.Rect(10, 20, 200, 44)
	return []pdfout.Word{
		{Text: "sandkit", Box: image.Rect(10, 20, 90, 44), Line: line},
		{Text: `<img src=x onerror=alert(1)>`, Box: image.Rect(100, 20, 200, 44), Line: line},
	}, nil
}

func newOCRServer(t *testing.T, rec *fakeOCR, samples ...string) *Server {
	t.Helper()
	lib, err := library.Open(docsDir(t, samples...))
	require.NoError(t, err)
	be, err := sandboxed.New(context.Background(), sandboxed.Config{Library: lib, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(func() { be.Close() })
	opts := []Option{WithLogger(slog.New(slog.DiscardHandler))}
	if rec != nil {
		opts = append(opts, WithOCR(rec))
	}
	s, err := New(lib, be, addr, opts...)
	require.NoError(t, err)
	return s
}

// TestPageWords: with OCR, a page's words come back as JSON in the
// pixels of the page drawn at ocrDPI, recognised once however often they
// are asked for; the viewer is told it has a text layer. Without OCR the
// route is 404 and the viewer has none; a cross-site request is refused.
func TestPageWords(t *testing.T) {
	rec := &fakeOCR{}
	s := newOCRServer(t, rec, "valid/multipage.pdf")
	id := library.IDOf("multipage.pdf")
	target := "/doc/" + id + "/page/2.words.json"
	for range 2 {
		resp := do(s, "GET", target, addr)
		require.Equal(t, http.StatusOK, resp.Code, resp.Body.String())
		assert.Equal(t, "application/json", resp.Header().Get("Content-Type"))
		var got pageWords
		require.NoError(t, json.Unmarshal(resp.Body.Bytes(), &got))
		assert.Equal(t, float64(ocrDPI), got.DPI)
		assert.Equal(t, int(rec.width.Load()), got.Width)
		assert.Positive(t, got.Height)
		assert.Equal(t, []wordJSON{
			{Text: "sandkit", X: 10, Y: 20, W: 80, H: 24},
			{Text: `<img src=x onerror=alert(1)>`, X: 100, Y: 20, W: 100, H: 24},
		}, got.Words)
	}
	assert.Equal(t, int32(1), rec.calls.Load(), "a page is recognised once")
	assert.Contains(t, do(s, "GET", "/doc/"+id, addr).Body.String(), `data-ocr="1"`)

	req := mustRequest(t, target)
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	assert.Equal(t, http.StatusForbidden, serve(s, req).Code)
	assert.Equal(t, http.StatusNotFound, do(s, "GET", "/doc/"+id+"/page/99.words.json", addr).Code)
	assert.Equal(t, int32(1), rec.calls.Load())

	plain := newOCRServer(t, nil, "valid/multipage.pdf")
	resp := do(plain, "GET", target, addr)
	assert.Equal(t, http.StatusNotFound, resp.Code)
	assert.Contains(t, resp.Body.String(), "serve -ocr")
	assert.NotContains(t, do(plain, "GET", "/doc/"+id, addr).Body.String(), "data-ocr")
}

func mustRequest(t *testing.T, target string) *http.Request {
	t.Helper()
	req, err := http.NewRequest("GET", target, nil)
	require.NoError(t, err)
	req.Host, req.RemoteAddr = addr, "192.0.2.1:40000"
	return req
}

// TestSafePDFHasWords: with OCR, the safe PDF served carries the words as
// its text layer (pdftotext reads them), as convert -ocr writes it.
func TestSafePDFHasWords(t *testing.T) {
	pdftotext, err := exec.LookPath("pdftotext")
	if err != nil {
		t.Skip("pdftotext not installed (apt-get install poppler-utils); CI installs it")
	}
	s := newOCRServer(t, &fakeOCR{}, "valid/drawing.svg")
	resp := do(s, "GET", "/doc/"+library.IDOf("drawing.svg")+"/safe.pdf", addr)
	require.Equal(t, http.StatusOK, resp.Code, resp.Body.String())
	pdf := filepath.Join(t.TempDir(), "safe.pdf")
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(pdf, b, 0o600))
	out, err := exec.Command(pdftotext, pdf, "-").CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, strings.Fields(string(out)), "sandkit")
}

// TestUploadWordsForgotten: an expired upload's recognised words go with
// it.
func TestUploadWordsForgotten(t *testing.T) {
	s, up := newUploadServer(t, UploadConfig{})
	WithOCR(&fakeOCR{})(s)
	rec := serve(s, uploadReq(t, "drawing.svg", sample(t, "valid/drawing.svg"), "192.0.2.1", map[string]string{"Origin": "http://" + addr, "Accept": "application/json"}))
	require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())
	var got struct{ URL string }
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &got))
	resp := do(s, "GET", got.URL+"/page/1.words.json", addr)
	require.Equal(t, http.StatusOK, resp.Code, resp.Body.String())
	_, cached := s.wordCache.get(got.URL + "/1")
	require.True(t, cached)

	up.removeExpired(time.Now().Add(up.cfg.TTL + time.Second))
	_, cached = s.wordCache.get(got.URL + "/1")
	assert.False(t, cached, "an expired upload's words are still kept")
}
