package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/renderer"

	"github.com/sandkit/sandkit/examples/docviewer/backend/sandboxed/worker"
)

// TestMain doubles as the renderer, as main does: the sandboxed backend
// of serve and convert re-executes this test binary.
func TestMain(m *testing.M) {
	if renderer.Requested() {
		renderer.Main(worker.Register)
	}
	os.Exit(m.Run())
}

func pdfinfoPages(t *testing.T, path string) int {
	t.Helper()
	pdfinfo, err := exec.LookPath("pdfinfo")
	if err != nil {
		t.Skip("pdfinfo not installed (apt-get install poppler-utils); CI installs it")
	}
	out, err := exec.Command(pdfinfo, path).CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.NotContains(t, string(out), "Syntax Error")
	m := regexp.MustCompile(`(?m)^Pages:\s+(\d+)$`).FindSubmatch(out)
	require.NotNil(t, m, "%s", out)
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

func TestConvert(t *testing.T) {
	tests := []struct {
		in    string
		pages int
	}{
		{"valid/multipage.pdf", 20},
		{"valid/book.epub", 4},
		{"valid/shapes.xps", 2},
		{"valid/comic.cbz", 3},
		{"valid/drawing.svg", 1},
		{"valid/picture.png", 1},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out.pdf")
			var stderr bytes.Buffer
			code := run(context.Background(), []string{"convert", "-dpi", "72", filepath.Join("testdata", tt.in), out}, &stderr)
			require.Equal(t, 0, code, stderr.String())
			// Page progress is for a terminal; stderr here is a buffer.
			assert.NotContains(t, stderr.String(), "page ")
			assert.Equal(t, tt.pages, pdfinfoPages(t, out))
		})
	}
}

// TestConvertFailureLeavesNothing: a hostile input fails with a clear
// message and exit 1, and neither OUT nor a temporary file appears; an
// existing OUT is left untouched.
func TestConvertFailureLeavesNothing(t *testing.T) {
	tests := []struct {
		in, msg string
	}{
		{"hostile/truncated.pdf", "corrupt document"},
		{"hostile/random.bin", "unsupported document"},
		{"hostile/cycle.pdf", "cycle in page tree"},
		{"hostile/hugepage.pdf", "document over budget"},
		{"hostile/bomb.pdf", "document over budget"},
		{"hostile/manypages.pdf", "1000000 pages"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "out.pdf")
			var stderr bytes.Buffer
			code := run(context.Background(), []string{"convert", filepath.Join("testdata", tt.in), out}, &stderr)
			assert.Equal(t, 1, code)
			assert.Equal(t, 1, strings.Count(stderr.String(), tt.msg), "the error, once:\n%s", stderr.String())
			assert.Contains(t, stderr.String(), "nothing written")
			entries, _ := os.ReadDir(dir)
			assert.Empty(t, entries)
		})
	}

	dir := t.TempDir()
	out := filepath.Join(dir, "out.pdf")
	require.NoError(t, os.WriteFile(out, []byte("previous"), 0o644))
	assert.Equal(t, 1, run(context.Background(), []string{"convert", "testdata/hostile/cycle.pdf", out}, &bytes.Buffer{}))
	b, _ := os.ReadFile(out)
	assert.Equal(t, "previous", string(b))
}

// TestConvertUnsandboxed: the in-process escape hatch still works, and
// says loudly what it is.
func TestConvertUnsandboxed(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out.pdf")
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"convert", "-" + unsandboxedFlag, "-dpi", "72", "testdata/valid/comic.cbz", out}, &stderr)
	require.Equal(t, 0, code, stderr.String())
	assert.Contains(t, stderr.String(), "NOT sandboxed")
	assert.Equal(t, 3, pdfinfoPages(t, out))
}

// TestUsage: every command-line mistake exits 2 (1 for an input that is
// not a document) with one message that says what is wrong, printed once,
// and is caught before a document is opened; -h prints the command's usage
// once and exits 0.
func TestUsage(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.pdf")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	link := filepath.Join(dir, "link.pdf")
	abs, err := filepath.Abs("testdata/valid/multipage.pdf")
	require.NoError(t, err)
	require.NoError(t, os.Symlink(abs, link))
	out := filepath.Join(dir, "x.pdf")
	tests := []struct {
		args []string
		code int
		want string // in stderr, exactly once
	}{
		{nil, 2, "usage:"},
		{[]string{"frobnicate"}, 2, "usage:"},
		{[]string{"convert"}, 2, "convert needs IN and OUT.pdf"},
		{[]string{"convert", "testdata/valid/picture.png", "testdata/valid/picture.png"}, 2, "OUT must differ from IN"},
		{[]string{"convert", "testdata/no-such-file.pdf", out}, 1, "testdata/no-such-file.pdf: not found: no such file"},
		{[]string{"convert", "testdata", out}, 1, "testdata: unsupported document: a directory; name a file"},
		{[]string{"convert", fifo, out}, 1, "a named pipe (FIFO), not a regular file"},
		{[]string{"convert", link, out}, 1, "a symbolic link; name the file itself"},
		{[]string{"convert", "-dpi", "0", "testdata/valid/picture.png", out}, 2, "-dpi 0: must be between 36 and 1200"},
		{[]string{"convert", "-dpi", "NaN", "testdata/valid/picture.png", out}, 2, "-dpi NaN: must be between"},
		{[]string{"convert", "-h"}, 0, "usage: docviewer convert"},
		{[]string{"convert", "-frobnicate", "a", "b"}, 2, "flag provided but not defined: -frobnicate"},
		{[]string{"serve"}, 2, "serve needs one directory"},
		{[]string{"serve", "-h"}, 0, "usage: docviewer serve"},
		{[]string{"serve", "-dpi", "5000", "testdata/valid"}, 2, "-dpi 5000: must be between"},
		{[]string{"serve", "-addr", "0.0.0.0:0", "testdata/valid"}, 2, "-addr 0.0.0.0:0: listening on every address is refused"},
		{[]string{"serve", "-addr", "[::]:0", "testdata/valid"}, 2, "-addr [::]:0: listening on every address is refused"},
	}
	for _, tt := range tests {
		var stderr bytes.Buffer
		assert.Equal(t, tt.code, run(context.Background(), tt.args, &stderr), "%v: %s", tt.args, stderr.String())
		assert.Equal(t, 1, strings.Count(stderr.String(), tt.want), "%v: want %q once in:\n%s", tt.args, tt.want, stderr.String())
		assert.NotContains(t, stderr.String(), "help requested", "%v", tt.args)
	}
	_, err = os.Stat(out)
	assert.ErrorIs(t, err, os.ErrNotExist, "no refused command may write OUT")
}
