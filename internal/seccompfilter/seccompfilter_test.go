package seccompfilter

import (
	"os"
	"testing"

	seccomp "github.com/seccomp/libseccomp-golang"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/policy"
)

func TestSeccompProgramArg(t *testing.T) {
	tests := []struct {
		name, arg, err string
	}{
		{"unknown mode", "xAAAAAAAAAAA", "unknown mode"},
		{"empty", "", "unknown mode"},
		{"not base64", "k!!", "illegal base64 data at input byte 0"},
		{"no instruction", "k", "seccomp program of 0 bytes"},
		{"partial instruction", "kAAAA", "seccomp program of 3 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(tt.arg)
			assert.EqualError(t, err, tt.err)
		})
	}
	p, err := Precompile(policy.Strict())
	require.NoError(t, err)
	got, err := Decode(p.Encode())
	require.NoError(t, err)
	assert.Equal(t, p, got)
}

func TestNewFilter(t *testing.T) {
	p := policy.Strict()
	p.Seccomp.Allow = []string{"sched_setaffinity"}
	f, err := newFilter(p.SyscallRules(), seccomp.ActKillProcess, 1)
	require.NoError(t, err)
	defer f.Release()
	act, err := f.GetDefaultAction()
	require.NoError(t, err)
	assert.Equal(t, seccomp.ActKillProcess, act)
	bad, err := f.GetBadArchAction()
	require.NoError(t, err)
	assert.Equal(t, seccomp.ActKillProcess, bad)
	out, err := os.CreateTemp(t.TempDir(), "bpf")
	require.NoError(t, err)
	defer out.Close()
	require.NoError(t, f.ExportBPF(out))
	st, err := out.Stat()
	require.NoError(t, err)
	assert.Positive(t, st.Size(), "compiled BPF program")
}

func TestAddRulesRejectsUnknownSyscall(t *testing.T) {
	err := AddRules(mustFilter(t), []policy.SyscallRule{{Name: "frobnicate"}}, 1)
	assert.ErrorContains(t, err, `syscall "frobnicate"`)
}

func mustFilter(t *testing.T) *seccomp.ScmpFilter {
	f, err := seccomp.NewFilter(seccomp.ActKillProcess)
	require.NoError(t, err)
	t.Cleanup(f.Release)
	return f
}

// The monitored program and its unmonitored fallback (a kernel without
// SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV) differ only in what denies:
// user notification in one, killing the process in the other, for
// disallowed syscalls and foreign architectures alike.
func TestKillingProgram(t *testing.T) {
	p, err := Precompile(policy.Strict())
	require.NoError(t, err)
	require.True(t, p.Notify)
	k := p.Killing()
	require.Len(t, k.Insns, len(p.Insns))
	assert.False(t, k.Notify)
	rets := func(prog *Program, action uint32) int {
		n := 0
		for _, in := range prog.Insns {
			if in.Code == unix.BPF_RET|unix.BPF_K && in.K&unix.SECCOMP_RET_ACTION_FULL == action {
				n++
			}
		}
		return n
	}
	notifies := rets(p, unix.SECCOMP_RET_USER_NOTIF)
	assert.NotZero(t, notifies)
	assert.Zero(t, rets(k, unix.SECCOMP_RET_USER_NOTIF))
	assert.Equal(t, rets(p, unix.SECCOMP_RET_KILL_PROCESS)+notifies, rets(k, unix.SECCOMP_RET_KILL_PROCESS))
	for i := range p.Insns {
		if p.Insns[i] != k.Insns[i] {
			assert.Equal(t, uint32(unix.SECCOMP_RET_USER_NOTIF), p.Insns[i].K&unix.SECCOMP_RET_ACTION_FULL, "instruction %d", i)
		}
	}
}

// The kernels this project is tested on (Linux 5.19 and later) have the
// flag the monitor needs; the probe must see it without loading anything.
func TestWaitKillableSupported(t *testing.T) {
	var uts unix.Utsname
	require.NoError(t, unix.Uname(&uts))
	assert.True(t, WaitKillableSupported(), "kernel %s", unix.ByteSliceToString(uts.Release[:]))
	mode, err := unix.PrctlRetInt(unix.PR_GET_SECCOMP, 0, 0, 0, 0)
	require.NoError(t, err)
	assert.Zero(t, mode, "the probe loaded a filter")
}
