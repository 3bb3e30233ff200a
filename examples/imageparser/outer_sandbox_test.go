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

// buildImageparser builds this program's binary into dir.
func buildImageparser(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "imageparser")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "%s", out)
	return bin
}

// TestInsideContainerLikeSandbox runs the real imageparser inside
// bubblewrap with /proc masked like a container runtime's, where the
// kernel refuses a nested procfs: every renderer locks down with every
// layer in force, and the thumbnails are exactly those made outside it.
func TestInsideContainerLikeSandbox(t *testing.T) {
	outersandbox.Bwrap(t)
	tmp := t.TempDir() // bound into the sandbox, over its fresh /tmp
	bin := buildImageparser(t, tmp)
	testdata, err := filepath.Abs("testdata")
	require.NoError(t, err)
	inputs := []string{"png_640x480.png", "jpeg_300x1000.jpg", "gif_anim_400x300_3frames.gif", "webp_alpha_200x150.webp"}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	want := filepath.Join(tmp, "want")
	plain := exec.CommandContext(ctx, bin, append([]string{"-out", want}, inputs...)...)
	plain.Dir = testdata
	out, err := plain.CombinedOutput()
	require.NoError(t, err, "%s", out)

	got := filepath.Join(tmp, "got")
	cmd := outersandbox.Command(ctx, t, outersandbox.Container, testdata, []string{tmp}, append([]string{bin, "-v", "-out", got}, inputs...)...)
	code, stdout, stderr := outersandbox.Run(t, cmd)
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", stdout, stderr)
	outersandbox.CheckEveryLayerInForce(t, stderr)

	wantFiles, err := os.ReadDir(want)
	require.NoError(t, err)
	require.Len(t, wantFiles, len(inputs))
	for _, f := range wantFiles {
		w, err := os.ReadFile(filepath.Join(want, f.Name()))
		require.NoError(t, err)
		g, err := os.ReadFile(filepath.Join(got, f.Name()))
		require.NoError(t, err, "thumbnail %s not made inside the sandbox", f.Name())
		assert.Equal(t, w, g, "thumbnail %s differs", f.Name())
	}
}

// TestInsideSandboxWithoutUserNamespaces: where the outer sandbox leaves
// no user namespace to create (bwrap --disable-userns, as Flatpak and some
// containers do), imageparser refuses to run, names the setting and the
// fix, and makes nothing.
func TestInsideSandboxWithoutUserNamespaces(t *testing.T) {
	outersandbox.Bwrap(t)
	tmp := t.TempDir() // bound into the sandbox, over its fresh /tmp
	bin := buildImageparser(t, tmp)
	testdata, err := filepath.Abs("testdata")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	got := filepath.Join(tmp, "got")
	cmd := outersandbox.Command(ctx, t, outersandbox.NoUserNS, testdata, []string{tmp}, bin, "-out", got, "png_640x480.png")
	code, stdout, stderr := outersandbox.Run(t, cmd)
	assert.Equal(t, 2, code, "stdout:\n%s\nstderr:\n%s", stdout, stderr) // the sandbox did not start
	for _, want := range []string{
		"isolation layer user-namespace unavailable",
		"cannot create a user namespace (clone CLONE_NEWUSER|CLONE_NEWNS: no space left on device)",
		"user.max_user_namespaces limit is reached",
		"bwrap --disable-userns (drop that option)",
		"docs/deploying.md",
	} {
		assert.Contains(t, stderr, want)
	}
	assert.NotContains(t, stderr, "allow_degraded")
	entries, _ := os.ReadDir(got)
	assert.Empty(t, entries)
}
