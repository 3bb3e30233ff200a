package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/internal/outersandbox"
)

// buildDocviewer builds this program's binary into dir.
func buildDocviewer(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "docviewer")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "%s", out)
	return bin
}

// TestConvertInsideContainerLikeSandbox runs the real docviewer convert
// inside bubblewrap with /proc masked like a container runtime's, where
// the kernel refuses a nested procfs: the renderer locks down with every
// layer in force and the PDF has every page.
func TestConvertInsideContainerLikeSandbox(t *testing.T) {
	outersandbox.Bwrap(t)
	tmp := t.TempDir() // bound into the sandbox, over its fresh /tmp
	bin := buildDocviewer(t, tmp)
	here, err := os.Getwd()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, tt := range []struct {
		in    string
		pages int
	}{
		{"valid/multipage.pdf", 20},
		{"valid/picture.png", 1},
	} {
		t.Run(tt.in, func(t *testing.T) {
			out := filepath.Join(tmp, filepath.Base(tt.in)+".pdf")
			cmd := outersandbox.Command(ctx, t, outersandbox.Container, here, []string{tmp},
				bin, "convert", "-v", "-dpi", "72", filepath.Join("testdata", tt.in), out)
			code, stdout, stderr := outersandbox.Run(t, cmd)
			require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", stdout, stderr)
			outersandbox.CheckEveryLayerInForce(t, stderr)
			assert.Equal(t, tt.pages, pdfinfoPages(t, out))
		})
	}
}

// TestConvertInsideSandboxWithoutUserNamespaces: where the outer sandbox
// leaves no user namespace to create, convert refuses with the setting and
// the fix, and writes nothing.
func TestConvertInsideSandboxWithoutUserNamespaces(t *testing.T) {
	outersandbox.Bwrap(t)
	tmp := t.TempDir()
	bin := buildDocviewer(t, tmp)
	here, err := os.Getwd()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out := filepath.Join(tmp, "out.pdf")
	cmd := outersandbox.Command(ctx, t, outersandbox.NoUserNS, here, []string{tmp},
		bin, "convert", "testdata/valid/picture.png", out)
	code, stdout, stderr := outersandbox.Run(t, cmd)
	assert.Equal(t, 1, code, "stdout:\n%s\nstderr:\n%s", stdout, stderr)
	for _, want := range []string{
		"isolation layer user-namespace unavailable",
		"cannot create a user namespace (clone CLONE_NEWUSER|CLONE_NEWNS: no space left on device)",
		"bwrap --disable-userns (drop that option)",
		"docs/deploying.md",
	} {
		assert.Contains(t, stderr, want)
	}
	assert.NotContains(t, stderr, "allow_degraded")
	_, err = os.Stat(out)
	assert.ErrorIs(t, err, os.ErrNotExist)
}
