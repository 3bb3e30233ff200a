package main

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(filepath.Dir(dst), 0o755))
	require.NoError(t, os.WriteFile(dst, b, 0o644))
}

// TestConvertBatchTree: convert -r -j 2 IN OUT over a tree of 100+ mixed
// files (the valid samples copied 12 times, the hostile ones 4 times, and
// a FIFO, a symlink, a hidden file and an earlier output) converts every
// valid document into the mirrored tree with its page count, lists every
// refused one with its reason, leaves no partial output, says so in the
// summary, and exits 1.
func TestConvertBatchTree(t *testing.T) {
	if testing.Short() {
		t.Skip("converts 100+ documents")
	}
	valid := map[string]int{"multipage.pdf": 20, "book.epub": 4, "shapes.xps": 2, "comic.cbz": 3, "drawing.svg": 1, "picture.png": 1,
		"imagebomb.pdf": 1} // renders, subsampled: see testdata/README.md
	refused := map[string]string{
		"truncated.pdf": "corrupt document",
		"random.bin":    "unsupported document",
		"random.pdf":    "corrupt document",
		"cycle.pdf":     "cycle in page tree",
		"hugepage.pdf":  "document over budget",
		"bomb.pdf":      "document over budget",
		"manypages.pdf": "1000000 pages",
		"negcount.pdf":  "corrupt document",
	}
	root := t.TempDir()
	in, out := filepath.Join(root, "in"), filepath.Join(root, "out")
	wantOK := map[string]int{}         // output path -> pages
	wantRefused := map[string]string{} // input path -> reason
	for k := range 12 {
		for name, pages := range valid {
			src := filepath.Join("testdata/valid", name)
			if name == "imagebomb.pdf" {
				if k >= 4 {
					continue
				}
				src = filepath.Join("testdata/hostile", name)
			}
			rel := filepath.Join(fmt.Sprintf("set%d", k), "docs", name)
			copyFile(t, src, filepath.Join(in, rel))
			wantOK[filepath.Join(out, filepath.Dir(rel), strings.TrimSuffix(name, filepath.Ext(name))+"-safe.pdf")] = pages
		}
	}
	for k := range 4 {
		for name, reason := range refused {
			p := filepath.Join(in, fmt.Sprintf("hostile%d", k), name)
			copyFile(t, filepath.Join("testdata/hostile", name), p)
			wantRefused[p] = reason
		}
	}
	fifo := filepath.Join(in, "pipe.pdf")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	wantRefused[fifo] = "a named pipe (FIFO), not a regular file"
	link := filepath.Join(in, "link.pdf")
	require.NoError(t, os.Symlink(filepath.Join(in, "set0/docs/comic.cbz"), link))
	wantRefused[link] = "a symbolic link; name the file itself"
	copyFile(t, "testdata/valid/comic.cbz", filepath.Join(in, ".hidden.cbz"))      // skipped
	copyFile(t, "testdata/valid/comic.cbz", filepath.Join(in, "earlier-safe.pdf")) // skipped
	total := len(wantOK) + len(wantRefused)
	require.GreaterOrEqual(t, total, 100)

	var stderr bytes.Buffer
	code := run(context.Background(), []string{"convert", "-r", "-j", "2", "-dpi", "36", in, out}, &stderr)
	log := stderr.String()
	assert.Equal(t, 1, code, log)

	for path, pages := range wantOK {
		assert.Equal(t, pages, pdfinfoPages(t, path), path)
	}
	for path, reason := range wantRefused {
		assert.Regexp(t, "(?m)^refused "+regexp.QuoteMeta(path)+": .*"+regexp.QuoteMeta(reason), log)
	}
	assert.Equal(t, len(wantRefused), strings.Count(log, "\nrefused ")+boolInt(strings.HasPrefix(log, "refused ")), log)
	assert.Contains(t, log, fmt.Sprintf("converted %d of %d documents", len(wantOK), total))
	assert.Contains(t, log, fmt.Sprintf("; %d refused\n", len(wantRefused)))

	// The output tree holds the safe PDFs and nothing else: no partial or
	// temporary file of a refused document.
	var got []string
	require.NoError(t, filepath.WalkDir(out, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			got = append(got, p)
		}
		return err
	}))
	assert.Len(t, got, len(wantOK))
	for _, p := range got {
		assert.Contains(t, wantOK, p)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestConvertBatchNaming: without an output, NAME-safe.pdf appears beside
// each original (a.pdf and a.epub in one place: the second keeps its
// extension); -o collects them in a directory; a directory needs -r.
func TestConvertBatchNaming(t *testing.T) {
	dir := t.TempDir()
	copyFile(t, "testdata/valid/picture.png", filepath.Join(dir, "a.png"))
	copyFile(t, "testdata/valid/comic.cbz", filepath.Join(dir, "a.cbz"))
	copyFile(t, "testdata/valid/drawing.svg", filepath.Join(dir, "sub", "d.svg"))

	var stderr bytes.Buffer
	require.Equal(t, 0, run(context.Background(), []string{"convert", "-dpi", "36", filepath.Join(dir, "a.cbz"), filepath.Join(dir, "a.png"), filepath.Join(dir, "sub", "d.svg")}, &stderr), stderr.String())
	assert.Equal(t, 3, pdfinfoPages(t, filepath.Join(dir, "a-safe.pdf")))
	assert.Equal(t, 1, pdfinfoPages(t, filepath.Join(dir, "a.png-safe.pdf")))
	assert.Equal(t, 1, pdfinfoPages(t, filepath.Join(dir, "sub", "d-safe.pdf")))
	assert.Contains(t, stderr.String(), "converted 3 of 3 documents")

	// One argument: beside it.
	stderr.Reset()
	require.NoError(t, os.Remove(filepath.Join(dir, "sub", "d-safe.pdf")))
	require.Equal(t, 0, run(context.Background(), []string{"convert", "-dpi", "36", filepath.Join(dir, "sub", "d.svg")}, &stderr), stderr.String())
	assert.Equal(t, 1, pdfinfoPages(t, filepath.Join(dir, "sub", "d-safe.pdf")))

	// -o, and -r beside the originals skips the earlier outputs.
	outDir := filepath.Join(t.TempDir(), "o")
	stderr.Reset()
	require.Equal(t, 0, run(context.Background(), []string{"convert", "-dpi", "36", "-r", "-o", outDir, dir}, &stderr), stderr.String())
	assert.Equal(t, 1, pdfinfoPages(t, filepath.Join(outDir, "sub", "d-safe.pdf")))
	assert.Contains(t, stderr.String(), "converted 3 of 3 documents")

	stderr.Reset()
	assert.Equal(t, 1, run(context.Background(), []string{"convert", "-o", outDir, dir}, &stderr))
	assert.Contains(t, stderr.String(), "refused "+dir+": a directory; give -r")
	assert.Equal(t, 1, strings.Count(stderr.String(), "a directory"), stderr.String())

	for _, bad := range [][]string{{"-quality", "101"}, {"-j", "0"}, {"-j", "65"}} {
		stderr.Reset()
		args := append(append([]string{"convert"}, bad...), "testdata/valid/picture.png")
		assert.Equal(t, 2, run(context.Background(), args, &stderr))
		assert.Contains(t, stderr.String(), bad[0]+" "+bad[1]+": must be")
	}
}
