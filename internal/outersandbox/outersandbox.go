// Package outersandbox runs a sandkit program inside bubblewrap shaped
// like the outer sandboxes users deploy it in, for the tests of the
// examples: a container runtime's /proc (read-only and masked parts, which
// make the kernel refuse a fresh procfs in a nested user namespace), and a
// sandbox with no user namespace left to give.
package outersandbox

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sandkit/sandkit/policy"
)

// Bwrap returns the path of bwrap, or skips the test, with the reason,
// where it is not installed.
func Bwrap(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("bwrap")
	if err != nil {
		t.Skipf("bubblewrap is not installed (%v): the outer-sandbox tests need it (apt-get install bubblewrap)", err)
	}
	return path
}

// Container-runtime masks of /proc, as Docker, Podman, containerd and
// Kubernetes apply them by default (the OCI runtime spec's maskedPaths and
// readonlyPaths): files covered with /dev/null, directories with an empty
// read-only tmpfs, and read-only sub-mounts.
var (
	maskedFiles = []string{"/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug"}
	maskedDirs  = []string{"/proc/acpi", "/proc/asound", "/proc/scsi"}
	readOnly    = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
)

// Kind is the outer sandbox a program runs in.
type Kind int

const (
	// Container: every namespace unshared, the host's root read-only, a
	// /proc masked like a container runtime's.
	Container Kind = iota
	// NoUserNS: the same, and no user namespace left to create inside.
	NoUserNS
)

// Command returns the command that runs argv inside an outer sandbox of
// kind k, in dir. The sandbox sees the host read-only, a fresh /tmp (and
// dir through it), and writable the directories in rw (which may be under
// /tmp). The program
// runs as uid 1000 there, mapped to the test's own uid, also when the test
// runs as root: a root broker needs CAP_SETUID to give each renderer its
// own uid, which no outer sandbox grants.
func Command(ctx context.Context, t testing.TB, k Kind, dir string, rw []string, argv ...string) *exec.Cmd {
	t.Helper()
	args := []string{"--unshare-all", "--unshare-user", "--uid", "1000", "--gid", "1000", "--die-with-parent"}
	if k == NoUserNS {
		args = append(args, "--disable-userns")
	}
	args = append(args, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp")
	for _, p := range maskedFiles {
		if _, err := os.Stat(p); err == nil {
			args = append(args, "--ro-bind", "/dev/null", p)
		}
	}
	for _, p := range maskedDirs {
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			args = append(args, "--tmpfs", p, "--remount-ro", p)
		}
	}
	for _, p := range readOnly {
		if _, err := os.Stat(p); err == nil {
			args = append(args, "--ro-bind", p, p)
		}
	}
	// dir again, read-only, in case the fresh /tmp hid it (a checkout
	// under /tmp).
	args = append(args, "--ro-bind", dir, dir)
	for _, p := range rw {
		args = append(args, "--bind", p, p)
	}
	args = append(args, "--chdir", dir, "--")
	args = append(args, argv...)
	cmd := exec.CommandContext(ctx, Bwrap(t), args...)
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// Run runs cmd and returns its exit code and what it wrote.
func Run(t testing.TB, cmd *exec.Cmd) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("run %v: %v", cmd.Args, err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

var layersRE = regexp.MustCompile(`event=ready [^\n]*layers="([^"]*)"`)

// CheckEveryLayerInForce checks the ready reports in a broker's debug log:
// at least one, and in each every layer a renderer reports (all but the
// broker's cgroup) in force.
func CheckEveryLayerInForce(t testing.TB, log string) {
	t.Helper()
	reports := layersRE.FindAllStringSubmatch(log, -1)
	if len(reports) == 0 {
		t.Fatalf("no renderer reported ready in:\n%s", log)
	}
	for _, r := range reports {
		for _, layer := range policy.AllLayers() {
			if layer == policy.LayerCgroup {
				continue // the broker's, not in the renderer's report
			}
			if !regexp.MustCompile(`(^| )\+` + regexp.QuoteMeta(string(layer)) + `($| |\()`).MatchString(r[1]) {
				t.Errorf("layer %s not reported in force: %s", layer, r[1])
			}
		}
		if strings.Contains(" "+r[1], " -") {
			t.Errorf("a layer is reported off: %s", r[1])
		}
	}
}
