package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// openPTY returns a pseudo-terminal's controller and its terminal end.
func openPTY(t *testing.T) (ctrl, term *os.File) {
	t.Helper()
	ctrl, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { ctrl.Close() })
	require.NoError(t, unix.IoctlSetPointerInt(int(ctrl.Fd()), unix.TIOCSPTLCK, 0))
	n, err := unix.IoctlGetInt(int(ctrl.Fd()), unix.TIOCGPTN)
	require.NoError(t, err)
	term, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	require.NoError(t, err)
	t.Cleanup(func() { term.Close() })
	return ctrl, term
}

// TestConvertBatchTerminal: on a terminal the batch shows one progress bar
// rewritten in place instead of a line per document, then the summary and
// every refusal with its reason.
func TestConvertBatchTerminal(t *testing.T) {
	ctrl, term := openPTY(t)
	dir := t.TempDir()
	copyFile(t, "testdata/valid/comic.cbz", filepath.Join(dir, "in", "comic.cbz"))
	copyFile(t, "testdata/valid/drawing.svg", filepath.Join(dir, "in", "drawing.svg"))
	copyFile(t, "testdata/hostile/cycle.pdf", filepath.Join(dir, "in", "cycle.pdf"))

	var out bytes.Buffer
	done := make(chan struct{})
	go func() { io.Copy(&out, ctrl); close(done) }()
	code := run(context.Background(), []string{"convert", "-r", "-j", "1", "-dpi", "36", filepath.Join(dir, "in"), filepath.Join(dir, "out")}, term)
	term.Close() // the controller then reads EOF (EIO) once drained
	<-done
	s := strings.ReplaceAll(out.String(), "\r\n", "\n") // the terminal's output processing

	assert.Equal(t, 1, code, s)
	assert.Contains(t, s, "\r[==========                    ] 1/3 documents")
	assert.Contains(t, s, "\r[==============================] 3/3 documents, 4 pages, 1 refused\n")
	assert.NotContains(t, s, "converted "+dir, "no line per document on a terminal")
	assert.Contains(t, s, "converted 2 of 3 documents (4 pages)")
	assert.Contains(t, s, "refused "+filepath.Join(dir, "in", "cycle.pdf")+": page 1/1: cycle.pdf: corrupt document")
	assert.Equal(t, 1, strings.Count(s, "cycle in page tree"), s)
}
