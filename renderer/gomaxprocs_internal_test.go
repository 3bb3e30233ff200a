package renderer

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	seccomp "github.com/seccomp/libseccomp-golang"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/internal/fdtest"
)

// The child modes of TestPinnedRuntimeStopsReadingCgroupFiles, selected by
// this variable in the test binary's environment.
const cgroupChildEnv = "SANDKIT_RENDERER_TEST_CGROUP_CHILD"

// Exit codes of the child besides 0 (it ran to the end).
const (
	childNoCgroupFiles = 3 // the runtime opened no cgroup files: nothing to test
	childSetupFailed   = 4
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(cgroupChildEnv); mode != "" {
		os.Exit(cgroupChild(mode == "pinned"))
	}
	os.Exit(m.Run())
}

// cgroupChild installs a filter that kills the process on pread64, the
// syscall with which the runtime rereads its cgroup's CPU limit, and keeps
// a core busy for at least two of sysmon's one-second update periods.
func cgroupChild(pinned bool) int {
	if !runtimeHasCgroupFiles() {
		return childNoCgroupFiles
	}
	if pinned {
		pinGOMAXPROCS()
	}
	// NewFilter asks for TSYNC: sysmon runs on a thread of its own.
	filter, err := seccomp.NewFilter(seccomp.ActAllow)
	if err == nil {
		var nr seccomp.ScmpSyscall
		if nr, err = seccomp.GetSyscallFromName("pread64"); err == nil {
			err = filter.AddRule(nr, seccomp.ActKillProcess)
		}
	}
	if err == nil {
		err = unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
	}
	if err == nil {
		err = filter.Load()
	}
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		return childSetupFailed
	}
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		// busy: sysmon sleeps while every P is idle
	}
	return 0
}

// runtimeHasCgroupFiles reports whether the runtime holds its cgroup's
// CPU limit files open.
func runtimeHasCgroupFiles() bool {
	fds, err := fdtest.Open()
	if err != nil {
		return false
	}
	for _, target := range fds {
		if strings.HasPrefix(target, "/sys/fs/cgroup/") {
			return true
		}
	}
	return false
}

// The Go runtime rereads its cgroup's CPU limit through descriptors that
// sanitizeStdio closes and the broker's descriptors then reuse.
// pinGOMAXPROCS must end those reads: a child whose every pread64 is
// fatal survives three seconds (two update periods and a margin for a
// loaded machine) pinned, and is killed unpinned.
func TestPinnedRuntimeStopsReadingCgroupFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two children for 3 s")
	}
	t.Parallel()
	exe, err := os.Executable()
	require.NoError(t, err)
	run := func(mode string) chan error {
		done := make(chan error, 1)
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), cgroupChildEnv+"="+mode)
		cmd.Stderr = os.Stderr
		go func() { done <- cmd.Run() }()
		return done
	}
	pinned, unpinned := run("pinned"), run("unpinned")

	err = <-unpinned
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == childNoCgroupFiles {
		t.Skip("the Go runtime opened no cgroup CPU limit files here")
	}
	require.True(t, errors.As(err, &exit), "unpinned child: %v, want killed by SIGSYS (does the runtime still reread its cgroup?)", err)
	ws := exit.Sys().(syscall.WaitStatus)
	require.True(t, ws.Signaled(), "unpinned child: %v, want killed by SIGSYS", err)
	require.Equal(t, syscall.SIGSYS, ws.Signal(), "unpinned child: the runtime's pread64 is what kills it")

	require.NoError(t, <-pinned, "pinned child read a cgroup file (pread64) after pinGOMAXPROCS")
}
