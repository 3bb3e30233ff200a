package server

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/examples/docviewer/backend/sandboxed"
	"github.com/sandkit/sandkit/examples/docviewer/library"
)

// newUploadServer is newTestServer with web mode on: a store configured
// by cfg and a sandboxed backend of its own over the store's library.
func newUploadServer(t *testing.T, cfg UploadConfig) (*Server, *Uploads) {
	t.Helper()
	lib, err := library.Open(docsDir(t, "valid/multipage.pdf"))
	require.NoError(t, err)
	quiet := slog.New(slog.DiscardHandler)
	be, err := sandboxed.New(context.Background(), sandboxed.Config{Library: lib, Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(func() { be.Close() })
	cfg.Dir = t.TempDir()
	cfg.Logger = quiet
	up, err := NewUploads(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { up.Close() })
	upBE, err := sandboxed.New(context.Background(), sandboxed.Config{Library: up.Library(), Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(func() { upBE.Close() })
	s, err := New(lib, be, addr, WithUploads(up, upBE), WithLogger(quiet))
	require.NoError(t, err)
	return s, up
}

// uploadReq builds a POST /upload of body as the file name, from client
// (an IP address), with the given headers.
func uploadReq(t *testing.T, name string, body []byte, client string, hdr map[string]string) *http.Request {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, err := mw.CreateFormFile("file", name)
	require.NoError(t, err)
	fw.Write(body)
	require.NoError(t, mw.Close())
	req := httptest.NewRequest("POST", "/upload", &buf)
	req.Host = addr
	req.RemoteAddr = client + ":40000"
	req.Header.Set("Content-Type", mw.FormDataContentType())
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return req
}

func serve(s http.Handler, req *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	return rec
}

var sameOrigin = map[string]string{"Origin": "http://" + addr}

func sample(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", name))
	require.NoError(t, err)
	return b
}

// storeFiles lists the files in the upload store.
func storeFiles(t *testing.T, up *Uploads) []string {
	t.Helper()
	ents, err := os.ReadDir(up.dir)
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestUploadOriginCheck: an upload is stored only when its Origin is
// this server under an accepted host; a page of another site posting to
// it (CSRF), a request without Origin, or one a browser marks cross-site
// is refused with 403 before a byte is stored.
func TestUploadOriginCheck(t *testing.T) {
	s, up := newUploadServer(t, UploadConfig{})
	pdf := sample(t, "valid/multipage.pdf")
	tests := []struct {
		name string
		hdr  map[string]string
		want int
	}{
		{"no Origin", nil, http.StatusForbidden},
		{"other site", map[string]string{"Origin": "http://evil.example"}, http.StatusForbidden},
		{"other port", map[string]string{"Origin": "http://127.0.0.1:9999"}, http.StatusForbidden},
		{"null", map[string]string{"Origin": "null"}, http.StatusForbidden},
		{"same origin, cross-site fetch", map[string]string{"Origin": "http://" + addr, "Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"same origin", sameOrigin, http.StatusSeeOther},
		{"localhost alias", map[string]string{"Origin": "http://localhost:8080", "Sec-Fetch-Site": "same-origin"}, http.StatusSeeOther},
	}
	stored := 0
	for _, tt := range tests {
		rec := serve(s, uploadReq(t, "a.pdf", pdf, "192.0.2.1", tt.hdr))
		assert.Equal(t, tt.want, rec.Code, "%s: %s", tt.name, rec.Body.String())
		assertSecurityHeaders(t, rec, tt.name)
		if tt.want == http.StatusSeeOther {
			stored++
			assert.Regexp(t, `^/u/[0-9a-f]{16}$`, rec.Header().Get("Location"), tt.name)
		}
		assert.Len(t, storeFiles(t, up), stored, tt.name)
	}
	// The Host check still comes first.
	req := uploadReq(t, "a.pdf", pdf, "192.0.2.1", map[string]string{"Origin": "http://evil.example:8080"})
	req.Host = "evil.example:8080"
	assert.Equal(t, http.StatusMisdirectedRequest, serve(s, req).Code)
	// Without web mode there is no upload route at all.
	plain, _, _ := newTestServer(t, "valid/picture.png")
	rec := serve(plain, uploadReq(t, "a.pdf", pdf, "192.0.2.1", sameOrigin))
	assert.Equal(t, http.StatusMethodNotAllowed, rec.Code)
	assert.Equal(t, http.StatusNotFound, do(plain, "GET", "/upload", addr).Code)
}

// TestUploadLimits meets each bound as a client would: a document one
// byte over the size limit (413, nothing kept), a client past its count
// (429 with Retry-After, while another client still may upload), and a
// full store (503 with Retry-After).
func TestUploadLimits(t *testing.T) {
	s, up := newUploadServer(t, UploadConfig{MaxBytes: 4096, MaxPerClient: 2, MaxUploads: 3})
	small := bytes.Repeat([]byte("x"), 4096)

	rec := serve(s, uploadReq(t, "big.pdf", append(small, 'y'), "192.0.2.1", sameOrigin))
	assert.Equal(t, http.StatusRequestEntityTooLarge, rec.Code, rec.Body.String())
	assert.Contains(t, rec.Body.String(), "larger than 4.0 KiB")
	assert.Empty(t, storeFiles(t, up))

	rec = serve(s, uploadReq(t, "empty.pdf", nil, "192.0.2.1", sameOrigin))
	assert.Equal(t, http.StatusBadRequest, rec.Code, rec.Body.String())
	assert.Empty(t, storeFiles(t, up))

	for i := range 2 {
		rec = serve(s, uploadReq(t, "a.pdf", small, "192.0.2.1", sameOrigin))
		require.Equal(t, http.StatusSeeOther, rec.Code, "upload %d: %s", i, rec.Body.String())
	}
	rec = serve(s, uploadReq(t, "a.pdf", small, "192.0.2.1", sameOrigin))
	assert.Equal(t, http.StatusTooManyRequests, rec.Code, rec.Body.String())
	assert.Contains(t, rec.Body.String(), "2 documents per client")
	assert.NotEmpty(t, rec.Header().Get("Retry-After"))

	rec = serve(s, uploadReq(t, "a.pdf", small, "192.0.2.2", sameOrigin))
	assert.Equal(t, http.StatusSeeOther, rec.Code, "another client: %s", rec.Body.String())
	rec = serve(s, uploadReq(t, "a.pdf", small, "192.0.2.3", sameOrigin))
	assert.Equal(t, http.StatusServiceUnavailable, rec.Code, rec.Body.String())
	assert.NotEmpty(t, rec.Header().Get("Retry-After"))
	assert.Len(t, storeFiles(t, up), 3)

	// Not multipart, or the wrong field: refused, nothing kept.
	req := httptest.NewRequest("POST", "/upload", strings.NewReader("%PDF-1.4"))
	req.Host, req.RemoteAddr = addr, "192.0.2.9:1"
	req.Header.Set("Origin", "http://"+addr)
	req.Header.Set("Content-Type", "application/pdf")
	assert.Equal(t, http.StatusUnsupportedMediaType, serve(s, req).Code)
	assert.Len(t, storeFiles(t, up), 3)
}

// TestUploadViewAndExpiry: an upload opens in the viewer from its own
// sandboxed renderer, its pages and safe PDF come back, its bytes never
// do; after the TTL the file is deleted and every route of it is 404.
func TestUploadViewAndExpiry(t *testing.T) {
	s, up := newUploadServer(t, UploadConfig{TTL: 2 * time.Second})
	svg := sample(t, "valid/drawing.svg")
	rec := serve(s, uploadReq(t, `..\evil\"<i>drawing".svg`, svg, "192.0.2.1", map[string]string{"Origin": "http://" + addr, "Accept": "application/json"}))
	require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())
	var got struct{ URL string }
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &got))
	require.Regexp(t, `^/u/[0-9a-f]{16}$`, got.URL)
	require.Len(t, storeFiles(t, up), 1)
	info, err := os.Stat(filepath.Join(up.dir, storeFiles(t, up)[0]))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())
	dirInfo, err := os.Stat(up.dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), dirInfo.Mode().Perm())

	page := do(s, "GET", got.URL, addr)
	require.Equal(t, http.StatusOK, page.Code)
	body := page.Body.String()
	assert.Contains(t, body, `data-pages="1"`)
	assert.Contains(t, body, "1 page<")
	// The client's name is shown only as escaped text, without its path.
	assert.Contains(t, body, "&#34;&lt;i&gt;drawing&#34;.svg")
	assert.NotContains(t, body, "<i>drawing")
	assert.NotContains(t, body, "evil")

	img := do(s, "GET", got.URL+"/page/1.png?dpi=72", addr)
	require.Equal(t, http.StatusOK, img.Code, img.Body.String())
	pic, err := png.Decode(img.Body)
	require.NoError(t, err)
	assert.Equal(t, 400, pic.Bounds().Dx()) // the SVG is 400 pt wide
	pdf := do(s, "GET", got.URL+"/safe.pdf", addr)
	require.Equal(t, http.StatusOK, pdf.Code, pdf.Body.String())
	assert.True(t, bytes.HasPrefix(pdf.Body.Bytes(), []byte("%PDF-")))
	assert.Contains(t, pdf.Header().Get("Content-Disposition"), "attachment")

	// No route returns the document itself.
	for _, target := range []string{got.URL + "/", got.URL + "/file", got.URL + "/raw", got.URL + "/page/1.svg", "/u/" + storeFiles(t, up)[0]} {
		rec := do(s, "GET", target, addr)
		assert.Equal(t, http.StatusNotFound, rec.Code, target)
		assert.False(t, bytes.Contains(rec.Body.Bytes(), svg[:64]), target)
	}

	require.Eventually(t, func() bool { return len(storeFiles(t, up)) == 0 }, 20*time.Second, 50*time.Millisecond, "expired upload not deleted")
	for _, target := range []string{got.URL, got.URL + "/page/1.png", got.URL + "/safe.pdf"} {
		assert.Equal(t, http.StatusNotFound, do(s, "GET", target, addr).Code, target)
	}
	_, listed := up.Library().Lookup(strings.TrimPrefix(got.URL, "/u/"))
	assert.False(t, listed, "expired upload still in the store's listing")
}

// TestUploadPageTurns: a client holds at most maxClientPages page
// requests of uploaded documents at once; the next waits and gets its
// turn when one ends, other clients are not held up, and an idle
// client's slots are forgotten.
func TestUploadPageTurns(t *testing.T) {
	_, up := newUploadServer(t, UploadConfig{})
	var releases []func()
	for range maxClientPages {
		rel, err := up.pageTurn(context.Background(), "192.0.2.1")
		require.NoError(t, err)
		releases = append(releases, rel)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_, err := up.pageTurn(ctx, "192.0.2.1")
	cancel()
	assert.ErrorIs(t, err, context.DeadlineExceeded)

	other, err := up.pageTurn(context.Background(), "192.0.2.2")
	require.NoError(t, err)
	other()

	got := make(chan func(), 1)
	go func() {
		rel, err := up.pageTurn(context.Background(), "192.0.2.1")
		if err == nil {
			got <- rel
		}
	}()
	releases[0]()
	select {
	case rel := <-got:
		rel()
	case <-time.After(10 * time.Second):
		t.Fatal("waiting page request never got its turn")
	}
	for _, rel := range releases[1:] {
		rel()
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	assert.Empty(t, up.pages)
}

// TestPageResolution: ?dpi=N is drawn at N within [MinPageDPI,
// MaxPageDPI] and at the nearest bound outside it; anything but a whole
// number is a 400 that reaches no renderer.
func TestPageResolution(t *testing.T) {
	s, cb, _ := newTestServer(t, "valid/multipage.pdf")
	base := "/doc/" + library.IDOf("multipage.pdf") + "/page/2.png"
	tests := []struct {
		query   string
		wantDPI string
		width   int // Letter: 8.5 in
	}{
		{"", "110", 935},
		{"?dpi=72", "72", 612},
		{"?dpi=150", "150", 1275},
		{"?dpi=1", "36", 306},
		{"?dpi=0", "36", 306},
		{"?dpi=-5", "36", 306},
		{"?dpi=100000", "600", 5100},
	}
	for _, tt := range tests {
		rec := do(s, "GET", base+tt.query, addr)
		require.Equal(t, http.StatusOK, rec.Code, "%s: %s", tt.query, rec.Body.String())
		img, err := png.Decode(rec.Body)
		require.NoError(t, err, tt.query)
		// MaxPixelsPerPage may draw the largest a little smaller.
		got := rec.Header().Get("X-Render-DPI")
		if tt.wantDPI == "600" {
			assert.InDelta(t, tt.width, img.Bounds().Dx(), 50, tt.query)
			assert.Regexp(t, `^5[89][0-9](\.[0-9]+)?$|^600$`, got, tt.query)
			continue
		}
		assert.Equal(t, tt.wantDPI, got, tt.query)
		assert.Equal(t, tt.width, img.Bounds().Dx(), tt.query)
	}
	calls := len(cb.calls)
	for _, q := range []string{"?dpi=abc", "?dpi=1.5", "?dpi=1e3", "?dpi=72&dpi=150", "?dpi=", "?dpi=1234567"} {
		rec := do(s, "GET", base+q, addr)
		assert.Equal(t, http.StatusBadRequest, rec.Code, q)
	}
	assert.Len(t, cb.calls, calls, "a bad dpi reached the backend")
}

// TestSafePDFDownload: the safe PDF of a document is an attachment named
// after it, and its progress reads "done" with the page count after; a
// document that cannot be converted answers its error.
func TestSafePDFDownload(t *testing.T) {
	s, _, _ := newTestServer(t, "valid/multipage.pdf", "hostile/cycle.pdf")
	id := library.IDOf("multipage.pdf")
	rec := do(s, "GET", "/doc/"+id+"/safe.json", addr)
	assert.JSONEq(t, `{"state":"idle","done":0,"total":0}`, rec.Body.String())
	rec = do(s, "GET", "/doc/"+id+"/safe.pdf", addr)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	assert.Equal(t, "application/pdf", rec.Header().Get("Content-Type"))
	assert.Equal(t, "attachment; filename=multipage-safe.pdf", rec.Header().Get("Content-Disposition"))
	b, _ := io.ReadAll(rec.Body)
	assert.True(t, bytes.HasPrefix(b, []byte("%PDF-")))
	assert.Equal(t, 20, bytes.Count(b, []byte("/Type /Page\n"))+bytes.Count(b, []byte("/Type /Page ")), "pages in the PDF")
	rec = do(s, "GET", "/doc/"+id+"/safe.json", addr)
	assert.JSONEq(t, `{"state":"done","done":20,"total":20}`, rec.Body.String())

	rec = do(s, "GET", "/doc/"+library.IDOf("cycle.pdf")+"/safe.pdf", addr)
	assert.Equal(t, http.StatusUnprocessableEntity, rec.Code)
	assert.Contains(t, rec.Body.String(), "cycle in page tree")
	rec = do(s, "GET", "/doc/"+library.IDOf("cycle.pdf")+"/safe.json", addr)
	assert.Contains(t, rec.Body.String(), `"state":"failed"`)
}

func TestSafeName(t *testing.T) {
	for in, want := range map[string]string{
		"report.pdf":             "report-safe.pdf",
		`a"b;c\d/e.pdf`:          "a_b_c_d_e-safe.pdf",
		".pdf":                   "document-safe.pdf",
		"Übersicht 2024.xps":     "Übersicht 2024-safe.pdf",
		"x\r\nSet-Cookie: y.pdf": "x__Set-Cookie_ y-safe.pdf",
	} {
		assert.Equal(t, want, safeName(in), in)
	}
}

// TestCrossSiteRequests: a page image or safe PDF that a browser says
// another site asked for (an <img> or link elsewhere) is refused with 403
// before any renderer is asked; the viewer's own requests, typed URLs and
// clients that send no Sec-Fetch-Site are served.
func TestCrossSiteRequests(t *testing.T) {
	s, cb, _ := newTestServer(t, "valid/drawing.svg")
	id := library.IDOf("drawing.svg")
	for _, target := range []string{"/doc/" + id + "/page/1.png?dpi=36", "/doc/" + id + "/safe.pdf"} {
		for _, tt := range []struct {
			site string
			want int
		}{
			{"cross-site", http.StatusForbidden},
			{"same-site", http.StatusForbidden},
			{"bogus", http.StatusForbidden},
			{"same-origin", http.StatusOK},
			{"none", http.StatusOK},
			{"", http.StatusOK},
		} {
			calls := len(cb.calls)
			req := httptest.NewRequest("GET", target, nil)
			req.Host = addr
			if tt.site != "" {
				req.Header.Set("Sec-Fetch-Site", tt.site)
			}
			rec := serve(s, req)
			assert.Equal(t, tt.want, rec.Code, "%s %q: %s", target, tt.site, rec.Body.String())
			if tt.want == http.StatusForbidden {
				assert.Len(t, cb.calls, calls, "%s %q reached the backend", target, tt.site)
			}
		}
	}
}

func TestClientOf(t *testing.T) {
	for remote, want := range map[string]string{
		"192.0.2.7:1234":              "192.0.2.7",
		"[::ffff:192.0.2.7]:1234":     "192.0.2.7",
		"[2001:db8:1:2:3:4:5:6]:1234": "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1]:80":   "2001:db8:1:2::/64",
		"[2001:db8:1:3::1]:80":        "2001:db8:1:3::/64",
		"not an address":              "not an address",
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = remote
		assert.Equal(t, want, clientOf(r), remote)
	}
}

// TestUploadSafeTurn: one safe PDF conversion at a time per client.
func TestUploadSafeTurn(t *testing.T) {
	_, up := newUploadServer(t, UploadConfig{})
	rel, err := up.safeTurn(context.Background(), "192.0.2.1")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_, err = up.safeTurn(ctx, "192.0.2.1")
	cancel()
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	// Page requests and other clients are not held up by it.
	pageRel, err := up.pageTurn(context.Background(), "192.0.2.1")
	require.NoError(t, err)
	pageRel()
	other, err := up.safeTurn(context.Background(), "192.0.2.2")
	require.NoError(t, err)
	other()
	rel()
	rel, err = up.safeTurn(context.Background(), "192.0.2.1")
	require.NoError(t, err)
	rel()
}
