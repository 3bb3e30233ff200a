package office

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// SkipEnv, set to 1, skips the tests that need LibreOffice on a host
// without it; otherwise they fail, saying what to install.
const SkipEnv = "DOCVIEWER_SKIP_OFFICE"

// newTestConverter starts a converter, or fails (skips with SkipEnv)
// without LibreOffice.
func newTestConverter(t *testing.T) *Converter {
	t.Helper()
	if err := Available(); err != nil {
		if os.Getenv(SkipEnv) == "1" {
			t.Skipf("%v (%s=1)", err, SkipEnv)
		}
		t.Fatalf("%v; or set %s=1 to skip the Office tests", err, SkipEnv)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	c, err := New(context.Background(), log, 2)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// convert runs one conversion of data, named name, with a generous bound.
func convert(t *testing.T, c *Converter, name string, data []byte) (*Result, error) {
	t.Helper()
	f, err := memfd(name, data)
	require.NoError(t, err)
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	return c.ToPDF(ctx, "test", f, name)
}

func sample(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "testdata", "office", name))
	require.NoError(t, err)
	return data
}

// pdfText is the text of a PDF LibreOffice made of a sample, by
// pdftotext: the test's own document, never an untrusted one.
func pdfText(t *testing.T, pdf []byte) string {
	t.Helper()
	tool, err := exec.LookPath("pdftotext")
	require.NoError(t, err, "pdftotext (apt-get install poppler-utils)")
	cmd := exec.Command(tool, "-", "-")
	cmd.Stdin = bytes.NewReader(pdf)
	out, err := cmd.Output()
	require.NoError(t, err)
	return string(out)
}

func assertAllLayers(t *testing.T, res *Result) {
	t.Helper()
	for _, l := range Policy().Requested() {
		assert.True(t, res.Layers.Active(l), "layer %s not in force: %v", l, res.Layers)
	}
}

// rezip returns the zip archive data with each entry passed through
// edit (nil: unchanged).
func rezip(t *testing.T, data []byte, edit func(name string, body []byte) []byte) []byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	require.NoError(t, err)
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range zr.File {
		rc, err := f.Open()
		require.NoError(t, err)
		body, err := io.ReadAll(rc)
		require.NoError(t, err)
		rc.Close()
		if edit != nil {
			body = edit(f.Name, body)
		}
		w, err := zw.CreateHeader(&zip.FileHeader{Name: f.Name, Method: f.Method})
		require.NoError(t, err)
		_, err = w.Write(body)
		require.NoError(t, err)
	}
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

// TestMacroNeverRuns: the sample's Basic macro, bound to the document's
// load event, would append "MACRO RAN" to its text; the PDF has the
// document's text and not that. The test first checks that the sample
// does hold the macro and its binding.
func TestMacroNeverRuns(t *testing.T) {
	c := newTestConverter(t)
	doc := sample(t, "macro.odt")
	var module, binding bool
	rezip(t, doc, func(name string, body []byte) []byte {
		switch name {
		case "Basic/Standard/Module1.xml":
			module = bytes.Contains(body, []byte("Sub OnLoad(event)")) && bytes.Contains(body, []byte("MACRO RAN"))
		case "content.xml":
			binding = bytes.Contains(body, []byte(`script:event-name="dom:load" xlink:href="vnd.sun.star.script:Standard.Module1.OnLoad?language=Basic&amp;location=document"`))
		}
		return body
	})
	require.True(t, module, "the sample has no macro")
	require.True(t, binding, "the sample's macro is not bound to its load event")

	res, err := convert(t, c, "macro.odt", doc)
	require.NoError(t, err)
	assertAllLayers(t, res)
	text := pdfText(t, res.PDF)
	assert.Contains(t, text, "A document with a macro.")
	assert.NotContains(t, text, "MACRO RAN")
}

// TestLinkNeverOpened: a .docx whose image is linked from a web address
// (an external relationship) pointing at a listener of the test converts,
// and nothing connects to the listener. LibreOffice does not even try: a
// socket of any family but AF_UNIX would have been a violation that kills
// it (and its network namespace is empty).
func TestLinkNeverOpened(t *testing.T) {
	c := newTestConverter(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	var conns atomic.Int32
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			conn.Close()
		}
	}()
	target := fmt.Sprintf("http://%s/linked.png", ln.Addr())
	var linked bool
	doc := rezip(t, sample(t, "link.docx"), func(name string, body []byte) []byte {
		if name != "word/_rels/document.xml.rels" {
			return body
		}
		body = bytes.ReplaceAll(body, []byte(`Target="http://127.0.0.1:9/LINK_TARGET.png" TargetMode="External"`),
			[]byte(`Target="`+target+`" TargetMode="External"`))
		linked = bytes.Contains(body, []byte(target))
		return body
	})
	require.True(t, linked, "the sample has no external image relationship")
	res, err := convert(t, c, "link.docx", doc)
	require.NoError(t, err)
	assertAllLayers(t, res)
	assert.Contains(t, pdfText(t, res.PDF), "A document with a linked image.")
	assert.Zero(t, conns.Load(), "something connected to the link's target")
}

// bomb is sample's .docx with its first paragraph's text replaced by
// size bytes of "A", streamed into the archive at flate's fastest level:
// about 1 MiB that inflates to size.
func bomb(t *testing.T, size int) []byte {
	t.Helper()
	data := sample(t, "text.docx")
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	require.NoError(t, err)
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	zw.RegisterCompressor(zip.Deflate, func(w io.Writer) (io.WriteCloser, error) { return flate.NewWriter(w, flate.BestSpeed) })
	chunk := bytes.Repeat([]byte("A"), 1<<20)
	for _, f := range zr.File {
		rc, err := f.Open()
		require.NoError(t, err)
		body, err := io.ReadAll(rc)
		require.NoError(t, err)
		rc.Close()
		w, err := zw.CreateHeader(&zip.FileHeader{Name: f.Name, Method: zip.Deflate})
		require.NoError(t, err)
		pre, post, found := bytes.Cut(body, []byte("Sample document, page one."))
		if f.Name != "word/document.xml" || !found {
			_, err = w.Write(body)
			require.NoError(t, err)
			continue
		}
		_, err = w.Write(pre)
		require.NoError(t, err)
		for n := 0; n < size; n += len(chunk) {
			_, err = w.Write(chunk[:min(len(chunk), size-n)])
			require.NoError(t, err)
		}
		_, err = w.Write(post)
		require.NoError(t, err)
	}
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

// TestWithoutFontCache: fontconfig keeps no cache of LibreOffice's own
// font directories on a fresh host (Debian's fc-cache trigger does not
// scan them; a run of LibreOffice as root writes it), so in the sandbox
// it scans them and writes its cache to the profile's tmpfs, taking a
// lock with link(2). Shown here with no system cache bound at all: the
// conversion succeeds. Before link was allowed, the monitor killed
// LibreOffice for it on every host whose cache lacked those directories.
func TestWithoutFontCache(t *testing.T) {
	if err := Available(); err != nil {
		newTestConverter(t) // fails or skips, saying why
	}
	p := Policy()
	fs := &p.Filesystem
	fs.ReadOnlyPaths = slices.DeleteFunc(fs.ReadOnlyPaths, func(path string) bool { return path == "/var/cache/fontconfig" })
	require.Len(t, fs.ReadOnlyPaths, len(Policy().Filesystem.ReadOnlyPaths)-1)
	c, err := newConverter(context.Background(), slog.New(slog.DiscardHandler), 1, p, registry)
	require.NoError(t, err)
	defer c.Close()
	res, err := convert(t, c, "text.docx", sample(t, "text.docx"))
	require.NoError(t, err)
	assertAllLayers(t, res)
	assert.Contains(t, pdfText(t, res.PDF), "Sample document, page one.")
}

// TestHostileDocuments: a zip bomb and a truncated .docx end in a clear
// error, every layer in force, and the converter goes on working.
func TestHostileDocuments(t *testing.T) {
	c := newTestConverter(t)
	text := sample(t, "text.docx")
	b := bomb(t, 1<<30)
	t.Logf("bomb: %d bytes inflating to 1 GiB", len(b))
	for _, tc := range []struct {
		name string
		doc  []byte
		want string
	}{
		{"truncated.docx", text[:len(text)/2], "wrote no PDF"},
		{"bomb.docx", b, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := convert(t, c, tc.name, tc.doc)
			t.Logf("err: %v", err)
			require.ErrorIs(t, err, ErrConversion)
			require.NotNil(t, res)
			assert.Nil(t, res.PDF)
			assertAllLayers(t, res)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestNotInstalled: without LibreOffice, the error says what to install.
func TestNotInstalled(t *testing.T) {
	err := available("/nonexistent/soffice.bin")
	require.ErrorIs(t, err, ErrNotInstalled)
	assert.Contains(t, err.Error(), "apt-get install libreoffice-core-nogui libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui")
	require.NoError(t, available(Program))
}

func TestIs(t *testing.T) {
	for _, name := range []string{"a.docx", "A.DOC", "b.xlsx", "b.xls", "c.pptx", "c.ppt", "d.odt", "d.ods", "d.odp", "e.rtf"} {
		assert.True(t, Is(name), name)
	}
	for _, name := range []string{"a.pdf", "docx", "a.docx.pdf", "a.txt", "a.html", "a.fodt"} {
		assert.False(t, Is(name), name)
	}
}

// TestPolicy: the conversion's policy is valid and stays what SECURITY.md
// reviews: every namespace, no children, one bounded tmpfs, /dev/urandom
// the only device, network sockets impossible.
func TestPolicy(t *testing.T) {
	p := Policy()
	require.NoError(t, p.Validate())
	ns := p.Namespaces
	assert.True(t, ns.User && ns.Mount && ns.PID && ns.Net && ns.IPC && ns.UTS && ns.Cgroup)
	assert.False(t, p.Seccomp.AllowChildren)
	assert.Equal(t, []string{"/dev/urandom"}, p.Filesystem.Devices)
	require.Len(t, p.Filesystem.Tmpfs, 1)
	assert.Equal(t, uint64(512<<20), p.Filesystem.Tmpfs[0].Size)
	assert.Len(t, p.Seccomp.Allow, 23)
	sockets := 0
	for _, r := range p.ForeignSyscallRules() {
		if r.Name == "socket" || r.Name == "socketpair" {
			sockets++
			assert.Equal(t, "arg0==0x1", r.Conditions(), "%s: AF_UNIX only", r.Name)
		}
	}
	assert.Equal(t, 2, sockets)
}
