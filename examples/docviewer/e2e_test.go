package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"image/png"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/examples/docviewer/backend/sandboxed"
	"github.com/sandkit/sandkit/examples/docviewer/library"
	"github.com/sandkit/sandkit/examples/docviewer/server"
)

const chromiumPath = "/usr/bin/chromium"

// TestBrowser drives headless Chromium against a real server on
// 127.0.0.1:0: it opens a document, waits for the first page image to
// load, and checks that image decodes with ink on it. With
// DOCVIEWER_SCREENSHOT=path it also saves a full-page screenshot.
func TestBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skip("chromium not installed at " + chromiumPath + " (apt-get install chromium); CI installs it")
	}
	dir := t.TempDir()
	for _, s := range []string{"valid/multipage.pdf", "valid/book.epub", "valid/drawing.svg", "hostile/cycle.pdf"} {
		b, err := os.ReadFile(filepath.Join("testdata", s))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, filepath.Base(s)), b, 0o644))
	}
	lib, err := library.Open(dir)
	require.NoError(t, err)
	be, err := sandboxed.New(context.Background(), sandboxed.Config{Library: lib, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	defer be.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	h, err := server.New(lib, be, ln.Addr().String())
	require.NoError(t, err)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	base := "http://" + ln.Addr().String()

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1000, 800),
	}
	// Chromium's own sandbox cannot run as root; as an ordinary user it
	// stays on.
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox)
	}
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	// The first Do starts the browser; its context must carry no timeout.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(base+"/")))
	ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
	defer cancel()

	title, err := chromedp.Run(ctx, chromedp.Title())
	require.NoError(t, err)
	assert.Contains(t, title, "Documents")
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`a[href="/doc/`+library.IDOf("multipage.pdf")+`"]`)),
		chromedp.WaitVisible(chromedp.ID("page-1")),
	))
	_, err = chromedp.Run(ctx, chromedp.Poll[bool](`document.getElementById("page-1").complete && document.getElementById("page-1").naturalWidth > 0`))
	require.NoError(t, err)

	// Take the first page out of the browser as it received it: draw it to
	// a canvas (same origin, so not tainted) and export PNG.
	dataURL, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(() => {
		const img = document.getElementById("page-1");
		const c = document.createElement("canvas");
		c.width = img.naturalWidth; c.height = img.naturalHeight;
		c.getContext("2d").drawImage(img, 0, 0);
		return c.toDataURL("image/png");
	})()`))
	require.NoError(t, err)
	const prefix = "data:image/png;base64,"
	require.True(t, len(dataURL) > len(prefix) && dataURL[:len(prefix)] == prefix)
	raw, err := base64.StdEncoding.DecodeString(dataURL[len(prefix):])
	require.NoError(t, err)
	img, err := png.Decode(bytes.NewReader(raw))
	require.NoError(t, err)
	assert.Equal(t, 935, img.Bounds().Dx())
	inkedPx := 0
	for y := 0; y < img.Bounds().Dy(); y += 3 {
		for x := 0; x < img.Bounds().Dx(); x += 3 {
			r, g, b, _ := img.At(x, y).RGBA()
			if r < 0xf000 || g < 0xf000 || b < 0xf000 {
				inkedPx++
			}
		}
	}
	assert.Greater(t, inkedPx, 1000, "first page is blank")

	// Wait for the eager pages, then the screenshot if asked for.
	_, err = chromedp.Run(ctx, chromedp.Poll[bool](`Number(document.getElementById("progress").textContent) >= 3`))
	require.NoError(t, err)
	if path := os.Getenv("DOCVIEWER_SCREENSHOT"); path != "" {
		// A full-page screenshot of a one-page document keeps the image a
		// sensible size for the README (20 pages would be 15000 px tall).
		require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(base+"/doc/"+library.IDOf("drawing.svg"))))
		_, err = chromedp.Run(ctx, chromedp.Poll[bool](`document.getElementById("progress").textContent === "1"`))
		require.NoError(t, err)
		shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(path, shot, 0o644))
		t.Logf("screenshot saved to %s", path)
	}

	// The status page lists the renderers with their sandbox layers.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(base+"/status")))
	statusText, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("main")))
	require.NoError(t, err)
	assert.Contains(t, statusText, "multipage.pdf")
	assert.Contains(t, statusText, "seccomp-monitor")
	assert.Contains(t, statusText, "landlock-filesystem")

	// A page that fails to render is replaced by a note in the page.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(base+"/doc/"+library.IDOf("cycle.pdf")),
		chromedp.WaitVisible(chromedp.CSS(`p.err`)),
	))
}
