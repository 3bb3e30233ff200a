package parser_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/examples/imageparser/parser"
	"github.com/sandkit/sandkit/examples/imageparser/verify"
)

// TestReuseByDirectory: with reuse, the files of one directory share a
// renderer and files of two directories never do; a renderer whose reply
// fails a check is closed, so the next file of its directory gets a fresh
// one; a renderer that dies is replaced the same way.
func TestReuseByDirectory(t *testing.T) {
	good, err := os.ReadFile(filepath.Join(corpusDir, "jpeg_640x480.jpg"))
	require.NoError(t, err)
	dirA, dirB := t.TempDir(), t.TempDir()
	files := []string{
		writeInput(t, dirA, "a1.jpg", good),
		writeInput(t, dirB, "b1.jpg", good),
		writeInput(t, dirA, "a2.jpg", good),
		writeInput(t, dirB, "b2.jpg", good),
		// A lying renderer (bad reply) is closed by the parser...
		writeInput(t, dirA, "a3.png", []byte(misbehaveMagic+"thumb-size\n")),
		writeInput(t, dirA, "a4.jpg", good),
		// ...and a crashed one is gone anyway.
		writeInput(t, dirB, "b3.png", []byte(misbehaveMagic+"crash\n")),
		writeInput(t, dirB, "b4.jpg", good),
	}
	var ev events
	out := t.TempDir()
	p := newParser(t, func(o *parser.Options) {
		o.OutDir, o.WarmPool, o.ReuseByDirectory, o.OnEvent = out, 1, true, ev.add
		o.Concurrency = 1 // one file at a time: the renderer sequence below is exact
	})
	var stdout bytes.Buffer
	failed, err := p.Run(context.Background(), files, &stdout, nil)
	require.NoError(t, err)
	assert.Equal(t, 2, failed)
	lines := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
	require.Len(t, lines, len(files))
	for i, f := range files {
		switch filepath.Base(f) {
		case "a3.png":
			assert.Equal(t, verify.FailLine(f, errors.New("bad reply from renderer: thumbnail 256x256 for a 640x480 image, want 256x192")), lines[i])
		case "b3.png":
			assert.Equal(t, verify.FailLine(f, errors.New("killed: crashed")), lines[i])
		default:
			assert.Equal(t, verify.OKLine(f, "jpeg", 640, 480, 1, verify.OutputName(out, f, i)), lines[i])
		}
	}

	// Bindings: dirA's first renderer served a1, a2, a3; a fresh one a4.
	// dirB's first served b1, b2, b3; a fresh one b4. Four in all, each
	// to its directory's origin with no document.
	bound := ev.bound()
	require.Len(t, bound, 4)
	pidOrigin := map[int]string{}
	perOrigin := map[string]int{}
	for _, b := range bound {
		_, seen := pidOrigin[b.PID]
		require.False(t, seen, "renderer %d bound twice", b.PID)
		pidOrigin[b.PID] = b.Origin
		perOrigin[b.Origin]++
		assert.Empty(t, b.Document)
	}
	assert.Equal(t, map[string]int{"dir:" + dirA: 2, "dir:" + dirB: 2}, perOrigin)
}
