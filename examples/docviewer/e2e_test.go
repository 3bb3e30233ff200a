package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"image/png"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/examples/docviewer/backend/sandboxed"
	"github.com/sandkit/sandkit/examples/docviewer/library"
	"github.com/sandkit/sandkit/examples/docviewer/server"
)

const chromiumPath = "/usr/bin/chromium"

// requestLog records every request the server receives, as the browser
// made it (path and query), so a test can tell which pages were asked for.
type requestLog struct {
	mu   sync.Mutex
	uris []string
}

func (l *requestLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		l.uris = append(l.uris, r.URL.RequestURI())
		l.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

// matching returns the logged requests that match re.
func (l *requestLog) matching(re string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, u := range l.uris {
		if regexp.MustCompile(re).MatchString(u) {
			out = append(out, u)
		}
	}
	return out
}

// startServer serves copies of the samples through the sandboxed backend
// on 127.0.0.1:0, with web mode on if uploads; it returns the base URL.
func startServer(t *testing.T, samples []string, uploads bool) (string, *requestLog) {
	t.Helper()
	dir := t.TempDir()
	for _, s := range samples {
		b, err := os.ReadFile(filepath.Join("testdata", s))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, filepath.Base(s)), b, 0o644))
	}
	quiet := slog.New(slog.DiscardHandler)
	lib, err := library.Open(dir)
	require.NoError(t, err)
	be, err := sandboxed.New(context.Background(), sandboxed.Config{Library: lib, Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(func() { be.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	opts := []server.Option{server.WithLogger(quiet)}
	if uploads {
		up, err := server.NewUploads(context.Background(), server.UploadConfig{Dir: t.TempDir(), Logger: quiet})
		require.NoError(t, err)
		t.Cleanup(func() { up.Close() })
		upBE, err := sandboxed.New(context.Background(), sandboxed.Config{Library: up.Library(), Logger: quiet})
		require.NoError(t, err)
		t.Cleanup(func() { upBE.Close() })
		opts = append(opts, server.WithUploads(up, upBE))
	}
	h, err := server.New(lib, be, ln.Addr().String(), opts...)
	require.NoError(t, err)
	log := &requestLog{}
	srv := &http.Server{Handler: log.wrap(h), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String(), log
}

// newBrowser starts headless Chromium with a 1200x800 window; the
// returned context is bounded to two minutes.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skip("chromium not installed at " + chromiumPath + " (apt-get install chromium); CI installs it")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("force-device-scale-factor", "1"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1200, 800),
	}
	// Chromium's own sandbox cannot run as root; as an ordinary user it
	// stays on.
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox)
	}
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	// The first Do starts the browser; its context must carry no timeout.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate("about:blank")))
	ctx, cancel = context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	require.NoError(t, err, expr)
	return v
}

// poll waits until expr is true, across navigations (the page's own, e.g.
// after an upload, end a poll early).
func poll(t *testing.T, ctx context.Context, expr string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(time.Until(deadline))))
		if err != nil && (strings.Contains(err.Error(), "navigated or closed") || strings.Contains(err.Error(), "Cannot find context")) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		require.NoError(t, err, "waiting for %s", expr)
		return
	}
}

// loaded is the script test that page n's image has arrived.
func loaded(n int) string {
	return fmt.Sprintf(`(() => { const i = document.getElementById("page-%d"); return i.complete && i.naturalWidth > 0; })()`, n)
}

// screenshot saves the window to $DOCVIEWER_SCREENSHOTS/name, if set.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("DOCVIEWER_SCREENSHOTS")
	if dir == "" {
		return
	}
	shot, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, name), shot, 0o644))
	t.Logf("screenshot saved to %s", filepath.Join(dir, name))
}

// TestBrowserViewer drives the viewer in headless Chromium against a real
// server and the sandboxed backend:
//   - only the pages near the viewport are requested (the server's log has
//     no request for page 20 of 20 until the page box jumps to it);
//   - the page box jumps (page 20 comes into view and is requested), and
//     the keyboard moves between pages;
//   - thumbnails appear;
//   - zooming in re-renders: the page's image comes back with a larger
//     natural width, from a request at the higher resolution;
//   - the first page, as the browser received it, has ink on it;
//   - a page that fails shows as failed and is not counted as drawn;
//   - "1 page", not "1 pages".
func TestBrowserViewer(t *testing.T) {
	ctx := newBrowser(t)
	base, log := startServer(t, []string{"valid/multipage.pdf", "valid/drawing.svg", "hostile/cycle.pdf"}, false)
	id := library.IDOf("multipage.pdf")

	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(base+"/")))
	title, err := chromedp.Run(ctx, chromedp.Title())
	require.NoError(t, err)
	assert.Contains(t, title, "Documents")
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`a[href="/doc/`+id+`"]`)),
		chromedp.WaitVisible(chromedp.ID("viewer")),
	))
	poll(t, ctx, loaded(1))
	poll(t, ctx, `document.querySelectorAll("a.thumb.drawn").length >= 3`)
	assert.Equal(t, "20 pages", eval[string](t, ctx, `document.getElementById("pages").textContent`))

	// Only the pages near the view were asked for: page 20 is not, in
	// the view or the sidebar.
	// Let every image asked for so far arrive (the browser queues them
	// on six connections), then read the server's log.
	poll(t, ctx, `Array.from(document.images).every(i => !i.getAttribute("src") || i.complete)`)
	assert.Nil(t, eval[any](t, ctx, `document.getElementById("page-20").getAttribute("src")`))
	pageReq := `^/doc/` + id + `/page/%d\.png\?dpi=[0-9]+$`
	require.NotEmpty(t, log.matching(fmt.Sprintf(pageReq, 1)))
	assert.Empty(t, log.matching(fmt.Sprintf(pageReq, 20)), "page 20 requested before it was scrolled to")
	assert.Less(t, len(log.matching(`^/doc/`+id+`/page/`)), 2*20, "every page requested at once")
	assert.False(t, eval[bool](t, ctx, loaded(20)))

	// The first page as the browser received it: drawn to a canvas (same
	// origin, so not tainted), exported as PNG, has ink on it.
	dataURL := eval[string](t, ctx, `(() => {
		const img = document.getElementById("page-1");
		const c = document.createElement("canvas");
		c.width = img.naturalWidth; c.height = img.naturalHeight;
		c.getContext("2d").drawImage(img, 0, 0);
		return c.toDataURL("image/png");
	})()`)
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(dataURL, "data:image/png;base64,"))
	require.NoError(t, err)
	img, err := png.Decode(bytes.NewReader(raw))
	require.NoError(t, err)
	inked := 0
	for y := 0; y < img.Bounds().Dy(); y += 3 {
		for x := 0; x < img.Bounds().Dx(); x += 3 {
			r, g, b, _ := img.At(x, y).RGBA()
			if r < 0xf000 || g < 0xf000 || b < 0xf000 {
				inked++
			}
		}
	}
	assert.Greater(t, inked, 500, "first page is blank")
	screenshot(t, ctx, "viewer.png")

	// The page box jumps to page 20, which is requested only now.
	eval[bool](t, ctx, `(document.getElementById("pagebox").select(), true)`)
	require.NoError(t, chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("pagebox"), "20"+kb.Enter)))
	poll(t, ctx, loaded(20))
	assert.NotEmpty(t, log.matching(fmt.Sprintf(pageReq, 20)))
	assert.True(t, eval[bool](t, ctx, `(() => {
		const l = document.getElementById("page-list").getBoundingClientRect();
		const p = document.getElementById("page-20").getBoundingClientRect();
		return p.top < l.bottom && p.bottom > l.top;
	})()`), "page 20 is not in view after the jump")
	poll(t, ctx, `document.getElementById("pagebox").value === "20"`)
	assert.True(t, eval[bool](t, ctx, `document.querySelector('a.thumb[data-page="20"]').classList.contains("current")`))

	// Keyboard: Home goes to the first page, j to the next.
	require.NoError(t, chromedp.Do(ctx, chromedp.KeyEvent(kb.Home)))
	poll(t, ctx, `document.getElementById("pagebox").value === "1"`)
	require.NoError(t, chromedp.Do(ctx, chromedp.KeyEvent("j")))
	poll(t, ctx, `document.getElementById("pagebox").value === "2"`)
	require.NoError(t, chromedp.Do(ctx, chromedp.KeyEvent(kb.Home)))
	poll(t, ctx, `document.getElementById("pagebox").value === "1"`)

	// Zoom to 200 %: page 1 comes back sharper, from a request at
	// 2 x 96 = 192 dpi (the window's device pixel ratio is 1).
	fitWidth := eval[float64](t, ctx, `document.getElementById("page-1").naturalWidth`)
	shown := eval[float64](t, ctx, `document.getElementById("page-1").width`)
	eval[bool](t, ctx, `(() => {
		const z = document.getElementById("zoom");
		z.value = "2";
		return z.dispatchEvent(new Event("change"));
	})()`)
	poll(t, ctx, `document.getElementById("page-1").complete && document.getElementById("page-1").naturalWidth === 1632`)
	assert.NotEmpty(t, log.matching(`^/doc/`+id+`/page/1\.png\?dpi=192$`))
	assert.Greater(t, 1632.0, 1.5*fitWidth, "zoomed page not sharper than at fit width")
	assert.Equal(t, 1632.0, eval[float64](t, ctx, `document.getElementById("page-1").width`), "shown width at 200 %")
	// "+" zooms further in: the next step, 250 %, 240 dpi.
	require.NoError(t, chromedp.Do(ctx, chromedp.KeyEvent("+")))
	poll(t, ctx, `document.getElementById("page-1").naturalWidth === 2040`)
	assert.NotEmpty(t, log.matching(`^/doc/`+id+`/page/1\.png\?dpi=240$`))
	// Back to fit width: the sharper image is kept, shown at the fit size.
	require.NoError(t, chromedp.Do(ctx, chromedp.KeyEvent("w")))
	poll(t, ctx, fmt.Sprintf(`document.getElementById("page-1").width === %d`, int(shown)))
	assert.Equal(t, "fit-width", eval[string](t, ctx, `document.getElementById("zoom").value`))

	// A page that fails is marked failed and not counted as drawn.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(base+"/doc/"+library.IDOf("cycle.pdf")),
		chromedp.WaitVisible(chromedp.CSS(`p.page-err`)),
	))
	assert.Equal(t, "0", eval[string](t, ctx, `document.getElementById("progress").textContent`))
	assert.Equal(t, "1", eval[string](t, ctx, `document.getElementById("failed-count").textContent`))
	assert.False(t, eval[bool](t, ctx, `document.getElementById("failed").hidden`))

	// One page is "1 page".
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(base+"/doc/"+library.IDOf("drawing.svg"))))
	poll(t, ctx, loaded(1))
	poll(t, ctx, `document.getElementById("progress").textContent === "1"`)
	assert.Equal(t, "1 page", eval[string](t, ctx, `document.getElementById("pages").textContent`))

	// The status page lists the renderers with their sandbox layers.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(base+"/status")))
	statusText, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("main")))
	require.NoError(t, err)
	assert.Contains(t, statusText, "multipage.pdf")
	assert.Contains(t, statusText, "seccomp-monitor")
	assert.Contains(t, statusText, "landlock-filesystem")
}

// TestBrowserUpload drives web mode in headless Chromium: a PDF chosen
// with the file picker uploads, opens in the viewer from its own
// renderer, and its safe PDF downloads through the browser and opens in
// pdfinfo with all its pages; a hostile file dropped on the page (drag
// and drop) uploads and shows its error.
func TestBrowserUpload(t *testing.T) {
	if _, err := exec.LookPath("pdfinfo"); err != nil {
		t.Skip("pdfinfo not installed (apt-get install poppler-utils)")
	}
	ctx := newBrowser(t)
	base, log := startServer(t, nil, true)
	uploadURL := regexp.MustCompile(`^/u/[0-9a-f]{16}$`)

	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(base+"/"),
		chromedp.Click(chromedp.ID("upload-link")),
		chromedp.WaitVisible(chromedp.ID("upload-form")),
	))
	screenshot(t, ctx, "upload.png")

	pdf, err := filepath.Abs("testdata/valid/multipage.pdf")
	require.NoError(t, err)
	require.NoError(t, chromedp.Do(ctx, chromedp.SetUploadFiles(chromedp.ID("file"), []string{pdf})))
	poll(t, ctx, `/^\/u\/[0-9a-f]{16}$/.test(location.pathname) && document.getElementById("viewer") !== null`)
	poll(t, ctx, loaded(1))
	path := eval[string](t, ctx, `location.pathname`)
	require.Regexp(t, uploadURL, path)
	assert.Equal(t, "20 pages", eval[string](t, ctx, `document.getElementById("pages").textContent`))
	assert.Len(t, log.matching(`^/upload$`), 2, "GET and POST /upload")

	// Download the safe PDF as a person would: a click on the link.
	dl := t.TempDir()
	begins := chromedp.Events(ctx, browser.DownloadWillBegin)
	progress := chromedp.Events(ctx, browser.DownloadProgress)
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			_, err := chromedp.Call(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
				Behavior:      browser.SetDownloadBehaviorBehaviorAllowAndName,
				DownloadPath:  dl,
				EventsEnabled: new(true),
			})
			return err
		}),
		chromedp.Click(chromedp.ID("download")),
	))
	for ev, err := range begins {
		require.NoError(t, err)
		assert.Equal(t, "multipage-safe.pdf", ev.SuggestedFilename)
		assert.Equal(t, base+path+"/safe.pdf", ev.URL)
		break
	}
	var file string
	for ev, err := range progress {
		require.NoError(t, err)
		require.NotEqual(t, browser.DownloadProgressStateCanceled, ev.State, "download cancelled")
		if ev.State == browser.DownloadProgressStateCompleted {
			file = filepath.Join(dl, ev.GUID)
			break
		}
	}
	out, err := exec.Command("pdfinfo", file).CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Regexp(t, `(?m)^Pages:\s+20$`, string(out))
	assert.Regexp(t, `(?m)^Page size:\s+612 x 792 pts`, string(out))
	poll(t, ctx, `/safe PDF/.test(document.getElementById("safe-status").textContent)`)

	// A hostile file, dropped on the upload form, shows its error.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(base+"/upload"),
		chromedp.WaitVisible(chromedp.ID("upload-form")),
	))
	hostile, err := filepath.Abs("testdata/hostile/random.pdf")
	require.NoError(t, err)
	x := eval[float64](t, ctx, `(() => { const r = document.getElementById("upload-form").getBoundingClientRect(); return r.left + r.width / 2; })()`)
	y := eval[float64](t, ctx, `(() => { const r = document.getElementById("upload-form").getBoundingClientRect(); return r.top + r.height / 2; })()`)
	data := &input.DragData{Files: []string{hostile}, DragOperationsMask: 1}
	require.NoError(t, chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		for _, typ := range []input.DispatchDragEventType{input.DispatchDragEventTypeDragEnter, input.DispatchDragEventTypeDragOver, input.DispatchDragEventTypeDrop} {
			if _, err := chromedp.Call(ctx, input.DispatchDragEvent, input.DispatchDragEventParams{Type: typ, X: x, Y: y, Data: data}); err != nil {
				return err
			}
		}
		return nil
	})))
	poll(t, ctx, `document.getElementById("doc-error") !== null`)
	assert.Regexp(t, uploadURL, eval[string](t, ctx, `location.pathname`))
	errText := eval[string](t, ctx, `document.getElementById("doc-error").textContent`)
	assert.Contains(t, errText, "corrupt document")
	assert.Contains(t, errText, "random.pdf: corrupt document: open:", "the error names the upload as its sender did")
	assert.Equal(t, "random.pdf", eval[string](t, ctx, `document.querySelector("h1").textContent`))
}
