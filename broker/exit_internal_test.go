package broker

import (
	"os"
	"os/exec"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestLogTailExhausted covers the runtime's fatal lines that name a
// limit, as a Go 1.26 renderer writes them, and lines that must not.
func TestLogTailExhausted(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  ExitReason
	}{
		{"heap", []string{"fatal error: runtime: out of memory", "", "runtime stack:"}, ExitMemoryLimit},
		{"runtime metadata", []string{"fatal error: runtime: cannot allocate memory", "runtime stack:"}, ExitMemoryLimit},
		// EAGAIN names no limit: Renderer.threadFailure decides by the kernel's figures.
		{"thread creation", []string{"runtime/cgo: pthread_create failed: Resource temporarily unavailable", "SIGABRT: abort"}, ""},
		{"thread limit", []string{"runtime: program exceeds 62-thread limit", "fatal error: thread exhaustion"}, ExitThreadLimit},
		{"first fatal line wins", []string{"fatal error: thread exhaustion", "fatal error: runtime: out of memory"}, ExitThreadLimit},
		{"other pthread_create error", []string{"runtime/cgo: pthread_create failed: Invalid argument"}, ""},
		{"panic", []string{"panic: runtime error: invalid memory address or nil pointer dereference"}, ""},
		{"collector span queue", []string{"SIGSEGV: segmentation violation", "PC=0x435edd m=4 sigcode=1 addr=0x0", "", "goroutine 0 gp=0x28a4e6c9d860 m=4 mp=0x28a4e6ccb808 [idle]:", "runtime.(*spanQueue).tryDrain(0x7f3800000400?, 0x43e665?, 0xbadba8?)"}, ExitMemoryLimit},
		{"span queue fault elsewhere than address 0", []string{"SIGSEGV: segmentation violation", "PC=0x435edd m=4 sigcode=1 addr=0x18", "goroutine 0 gp=0x1 m=4 mp=0x2 [idle]:", "runtime.(*spanQueue).tryDrain(0x0?)"}, ""},
		{"segfault in the program", []string{"SIGSEGV: segmentation violation", "PC=0x6f1e2a m=0 sigcode=1 addr=0x0", "goroutine 7 gp=0x1 m=0 mp=0x2 [running]:", "main.parse(0x0?)"}, ""},
		{"segfault cut short", []string{"SIGSEGV: segmentation violation", "PC=0x435edd m=4 sigcode=1 addr=0x0"}, ""},
		{"not at line start", []string{"log: fatal error: runtime: out of memory"}, ""},
		{"nothing", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l logTail
			for _, line := range tt.lines {
				l.add(line)
			}
			assert.Equal(t, tt.want, l.exhausted())
		})
	}
}

// TestLogTailLastLine checks that a crash is explained by the runtime's
// first line about it, not by the end of its register dump.
func TestLogTailLastLine(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  string
	}{
		{"signal", []string{"starting", "SIGSEGV: segmentation violation", "PC=0x1 m=0 sigcode=1 addr=0x0", "rip    0x1", "gs     0x0"}, "SIGSEGV: segmentation violation"},
		{"abort after a failed thread", []string{"runtime/cgo: pthread_create failed: Resource temporarily unavailable", "SIGABRT: abort"}, "runtime/cgo: pthread_create failed: Resource temporarily unavailable"},
		{"panic", []string{"panic: boom", "", "goroutine 1 [running]:"}, "panic: boom"},
		{"no fatal line", []string{"one", "two", "  "}, "two"},
		{"not a signal name", []string{"SIGNAL lost: retrying", "Sigh: no"}, "Sigh: no"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l logTail
			for _, line := range tt.lines {
				l.add(line)
			}
			assert.Equal(t, tt.want, l.lastLine())
		})
	}
}

// TestThreadFailureVerdict covers how the kernel's figures, read when a
// renderer said a thread could not be created, name the limit it met.
func TestThreadFailureVerdict(t *testing.T) {
	const mib = 1 << 20
	const stack = 8 * mib
	tests := []struct {
		name     string
		snap     taskSnapshot
		threads  uint64
		hostRoot bool
		want     ExitReason
		detail   string
	}{
		{"tasks at RLIMIT_NPROC", taskSnapshot{threads: 64, vmSize: 700 * mib, limitAS: 2300 * mib}, 64, false, ExitThreadLimit, "the kernel counted 64 tasks"},
		{"host root is exempt from RLIMIT_NPROC", taskSnapshot{threads: 64, vmSize: 700 * mib, limitAS: 2300 * mib}, 64, true, "", "with 64 tasks (limit 64)"},
		{"no room for a stack under RLIMIT_AS", taskSnapshot{threads: 9, vmSize: 1330 * mib, limitAS: 1335 * mib}, 64, false, ExitMemoryLimit, "1330 MiB of the 1335 MiB limit (RLIMIT_AS) mapped, 5 MiB left"},
		{"address space over the limit", taskSnapshot{threads: 9, vmSize: 1336 * mib, limitAS: 1335 * mib}, 64, false, ExitMemoryLimit, "0 MiB left"},
		{"no room for a stack under RLIMIT_DATA", taskSnapshot{threads: 9, vmSize: 500 * mib, vmData: 95 * mib, limitAS: 1335 * mib, limitData: 96 * mib}, 64, false, ExitMemoryLimit, "(RLIMIT_DATA)"},
		{"room for a stack and tasks to spare", taskSnapshot{threads: 9, vmSize: 1300 * mib, limitAS: 1335 * mib}, 64, false, "", "with 9 tasks (limit 64) and 1300 MiB"},
		{"no limits at all", taskSnapshot{threads: 500, vmSize: 9000 * mib}, 0, false, "", "with 500 tasks (limit 0)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, detail := threadFailureVerdict(&tt.snap, tt.threads, tt.hostRoot, stack)
			assert.Equal(t, tt.want, got, detail)
			assert.Contains(t, detail, tt.detail)
		})
	}
}

// TestSnapshotTask reads a child's figures as the broker reads a
// renderer's, and refuses the child once it has exited, before its reap.
func TestSnapshotTask(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	require.NoError(t, cmd.Start())
	pidfd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	require.NoError(t, err)
	f := os.NewFile(uintptr(pidfd), "pidfd")
	defer f.Close()
	var as unix.Rlimit
	require.NoError(t, unix.Getrlimit(unix.RLIMIT_AS, &as))

	s, err := snapshotTask(cmd.Process.Pid, f)
	require.NoError(t, err)
	assert.Equal(t, uint64(1), s.threads)
	assert.Positive(t, s.vmSize)
	assert.Positive(t, s.vmData)
	if as.Cur == unix.RLIM_INFINITY {
		assert.Zero(t, s.limitAS)
	} else {
		assert.Equal(t, as.Cur, s.limitAS)
	}

	require.NoError(t, cmd.Process.Kill())
	var info unix.Siginfo
	require.NoError(t, unix.Waitid(unix.P_PIDFD, pidfd, &info, unix.WEXITED|unix.WNOWAIT, nil))
	_, err = snapshotTask(cmd.Process.Pid, f)
	assert.ErrorIs(t, err, errTaskGone)
	_ = cmd.Wait()
}

// TestExitErrorText: Error names the renderer and whether it ended or was
// killed; Description is the same end without the renderer, as sandkit
// run prints it after "killed: ".
func TestExitErrorText(t *testing.T) {
	tests := []struct {
		name      string
		err       ExitError
		wantError string
		wantDesc  string
	}{
		{"violation", ExitError{PID: 7, Origin: "o", Document: "d.pdf", Reason: ExitViolation, Syscall: "socket", Args: []uint64{2, 1, 0, 0, 0, 0}, Detail: "disallowed by the seccomp policy"},
			`renderer 7 for "o" (document "d.pdf") killed: sandbox violation socket(0x2, 0x1, 0x0, 0x0, 0x0, 0x0): disallowed by the seccomp policy`,
			"sandbox violation socket(0x2, 0x1, 0x0, 0x0, 0x0, 0x0): disallowed by the seccomp policy"},
		{"limit", ExitError{PID: 8, Origin: "o", Reason: ExitMemoryLimit, Detail: "RLIMIT_AS 64 MiB"},
			`renderer 8 for "o" killed: memory limit: RLIMIT_AS 64 MiB`, "memory limit: RLIMIT_AS 64 MiB"},
		{"clean", ExitError{PID: 9, Origin: "o", Reason: ExitClean},
			`renderer 9 for "o" ended: clean exit`, "clean exit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.wantError, tt.err.Error())
			assert.Equal(t, tt.wantDesc, tt.err.Description())
		})
	}
}
