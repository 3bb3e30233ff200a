package broker

import (
	"runtime"
	"testing"

	seccomp "github.com/seccomp/libseccomp-golang"
	"github.com/stretchr/testify/assert"
	"golang.org/x/sys/unix"
)

// The violation monitor's decisions, for every outcome of its poll and of
// its receive. The one that matters most: a notification withdrawn between
// the two (ENOENT) is a violation like one that was read.
func TestMonitorSteps(t *testing.T) {
	polls := []struct {
		name    string
		n       int
		revents int16
		err     error
		want    monitorStep
	}{
		{"nothing pending", 0, 0, nil, stepWait},
		{"interrupted", -1, 0, unix.EINTR, stepWait},
		{"notification", 1, unix.POLLIN, nil, stepRead},
		{"notification and a sent one", 1, unix.POLLIN | unix.POLLOUT, nil, stepRead},
		{"every task gone", 1, unix.POLLHUP, nil, stepHangUp},
		{"invalid descriptor", 1, unix.POLLNVAL, nil, stepBroken},
		{"error event", 1, unix.POLLERR, nil, stepBroken},
		{"poll failed", -1, 0, unix.EBADF, stepBroken},
	}
	for _, tt := range polls {
		t.Run("poll/"+tt.name, func(t *testing.T) {
			got, err := afterPoll(tt.n, tt.revents, tt.err)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.want == stepBroken, err != nil, "error %v", err)
		})
	}
	receives := []struct {
		name string
		err  error
		want monitorStep
	}{
		{"read", nil, stepReport},
		{"withdrawn", unix.ENOENT, stepWithdrawn},
		{"listener failed", unix.EBADF, stepBroken},
		{"not a listener", unix.EINVAL, stepBroken},
	}
	for _, tt := range receives {
		t.Run("receive/"+tt.name, func(t *testing.T) {
			got, err := afterReceive(tt.err)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.want == stepBroken, err != nil, "error %v", err)
		})
	}
}

// How a notification is reported: native syscalls by name, those of
// another ABI as architecture violations. (i386 syscalls are also tested
// end to end where the machine runs them; see
// TestForeignArchitectureSyscalls.)
func TestViolationNamesTheArchitecture(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the foreign ABIs are amd64's")
	}
	for _, tt := range []struct {
		name    string
		arch    seccomp.ScmpArch
		nr      int32
		syscall string
		detail  string
	}{
		{"native", seccomp.ArchAMD64, unix.SYS_PTRACE, "ptrace", "disallowed by the seccomp policy"},
		{"i386", seccomp.ArchX86, 20, "i386:getpid", "architecture violation: i386 syscall 0x14 (getpid)"},
		{"x32", seccomp.ArchAMD64, x32SyscallBit | unix.SYS_GETPID, "x32:getpid", "architecture violation: x32 syscall 0x40000027 (getpid)"},
		{"unknown native number", seccomp.ArchAMD64, 5000, "syscall 5000", "disallowed by the seccomp policy"},
		{"unknown architecture", seccomp.ArchInvalid, 1, "unknown architecture:unknown", "architecture violation: unknown architecture syscall 0x1 (unknown)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := violation(seccomp.ScmpNotifData{Arch: tt.arch, Syscall: seccomp.ScmpSyscall(tt.nr), Args: []uint64{1, 2, 0, 0, 0, 0}})
			assert.Equal(t, ExitViolation, e.Reason)
			assert.Equal(t, tt.syscall, e.Syscall)
			assert.Equal(t, tt.detail, e.Detail)
			assert.Equal(t, []uint64{1, 2, 0, 0, 0, 0}, e.Args)
		})
	}
}
