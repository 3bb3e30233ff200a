package testrenderer

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
)

// dedicatedPkg is the dedicated renderer binary serving this package's
// methods.
const dedicatedPkg = "github.com/sandkit/sandkit/internal/testrenderer/cmd/testrenderer"

// BuildDedicated builds the dedicated renderer binary into dir, statically
// linked (the Go runtime, libc and libseccomp in one file, so no dynamic
// loader runs at start), and returns its path: what the benchmarks point
// broker.Config.Path at to measure the cold spawn of a small renderer.
// It needs the go command and the static archives of libc and libseccomp
// (Debian: libc6-dev, libseccomp-dev), and fails rather than fall back to
// a dynamic build, which would measure something else.
func BuildDedicated(ctx context.Context, dir string) (string, error) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("build the dedicated renderer: %w", err)
	}
	out := filepath.Join(dir, "testrenderer")
	cmd := exec.CommandContext(ctx, goCmd, "build", "-o", out,
		"-ldflags=-linkmode=external -extldflags=-static", dedicatedPkg)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the dedicated renderer (%s): %w\n%s", cmd, err, msg)
	}
	return out, nil
}
