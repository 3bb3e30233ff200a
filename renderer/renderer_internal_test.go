package renderer

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	seccomp "github.com/seccomp/libseccomp-golang"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/policy"
)

func TestPolicyArgRoundTrip(t *testing.T) {
	p := policy.Strict()
	p.Filesystem.ReadOnlyPaths = []string{"/usr/share/fonts"}
	arg, err := PolicyArg(p)
	require.NoError(t, err)
	got, prog, spec, err := policyFromArg(arg)
	require.NoError(t, err)
	assert.Equal(t, p, got)
	wantSpec, err := earlySpec(p)
	require.NoError(t, err)
	assert.Equal(t, wantSpec, spec)
	want, err := compileSeccomp(p)
	require.NoError(t, err)
	require.NotNil(t, prog, "a pid namespace: the broker compiles the program")
	assert.Equal(t, want, prog)
	assert.Equal(t, p.Seccomp.Monitor && notifySupported(), prog.notify)

	polProg, _, _ := strings.Cut(arg, "~")
	_, _, _, err = policyFromArg(polProg[:len(polProg)-3] + "!!!~" + spec)
	assert.Error(t, err)
	_, _, _, err = policyFromArg(polProg)
	assert.EqualError(t, err, "no early lockdown spec")

	// Without a pid namespace the renderer's pid is not known in advance:
	// it compiles the program itself.
	p.Namespaces.PID = false
	arg, err = PolicyArg(p)
	require.NoError(t, err)
	_, prog, _, err = policyFromArg(arg)
	require.NoError(t, err)
	assert.Nil(t, prog)
}

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
			_, err := decodeSeccompProgram(tt.arg)
			assert.EqualError(t, err, tt.err)
		})
	}
	p, err := compileSeccomp(policy.Strict())
	require.NoError(t, err)
	got, err := decodeSeccompProgram(p.encode())
	require.NoError(t, err)
	assert.Equal(t, p, got)
}

func TestRequested(t *testing.T) {
	saved := os.Args
	defer func() { os.Args = saved }()
	os.Args = []string{"prog"}
	assert.False(t, Requested())
	os.Args = []string{"prog", "--sandkit-renderer=abc"}
	assert.True(t, Requested())
}

func TestBuildFilter(t *testing.T) {
	p := policy.Strict()
	p.Seccomp.Allow = []string{"sched_setaffinity"}
	f, err := buildFilter(p, seccomp.ActKillProcess, 1)
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

func TestBuildFilterRejectsUnknownSyscall(t *testing.T) {
	err := addRules(mustFilter(t), []policy.SyscallRule{{Name: "frobnicate"}}, 1)
	assert.ErrorContains(t, err, `syscall "frobnicate"`)
}

func mustFilter(t *testing.T) *seccomp.ScmpFilter {
	f, err := seccomp.NewFilter(seccomp.ActKillProcess)
	require.NoError(t, err)
	t.Cleanup(f.Release)
	return f
}

func TestLandlockConfigCoversEveryABI(t *testing.T) {
	_, prev := landlockConfig(1)
	for kernel := 2; kernel <= 11; kernel++ {
		abi, c := landlockConfig(kernel)
		// go-landlock v0.11.2 knows every ABI up to 11: none is capped.
		assert.Equal(t, kernel, abi)
		assert.GreaterOrEqual(t, uint64(c.HandledAccessFS), uint64(prev.HandledAccessFS), "ABI %d", abi)
		assert.GreaterOrEqual(t, uint64(c.HandledAccessNet), uint64(prev.HandledAccessNet), "ABI %d", abi)
		prev = c
	}
}

// The applied ABI is the kernel's up to the newest go-landlock knows, and
// the layer's detail names the applied one (and the kernel's when they
// differ) and what it handles. UDP is handled from ABI 10 on.
func TestLandlockAppliedABI(t *testing.T) {
	tests := []struct {
		kernel  int
		abi     int
		fs, net string
	}{
		{kernel: 4, abi: 4, fs: "ABI 4: 15 filesystem rights", net: "ABI 4: {bind_tcp,connect_tcp}; no UDP before ABI 10"},
		{kernel: 7, abi: 7, fs: "ABI 7: 16 filesystem rights", net: "ABI 7: {bind_tcp,connect_tcp}; no UDP before ABI 10"},
		{kernel: 9, abi: 9, fs: "ABI 9: 17 filesystem rights", net: "ABI 9: {bind_tcp,connect_tcp}; no UDP before ABI 10"},
		{kernel: 10, abi: 10, fs: "ABI 10: 17 filesystem rights", net: "ABI 10: {bind_tcp,connect_tcp,bind_udp,connect_send_udp}"},
		{kernel: 14, abi: 11, fs: "ABI 11 (the kernel has 14): 17 filesystem rights", net: "ABI 11 (the kernel has 14): {bind_tcp,connect_tcp,bind_udp,connect_send_udp}"},
	}
	for _, tt := range tests {
		abi, cfg := landlockConfig(tt.kernel)
		assert.Equal(t, tt.abi, abi, "kernel ABI %d", tt.kernel)
		assert.Equal(t, tt.fs, landlockDetail(policy.LayerLandlockFS, abi, tt.kernel, cfg))
		assert.Equal(t, tt.net, landlockDetail(policy.LayerLandlockNet, abi, tt.kernel, cfg))
	}
	abi, cfg := landlockConfig(7)
	assert.Equal(t, "ABI 7: {abstract_unix_socket,signal}", landlockDetail(policy.LayerLandlockScope, abi, 7, cfg))
}

// The monitored program and its unmonitored fallback (a kernel without
// SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV) differ only in what denies:
// user notification in one, killing the process in the other, for
// disallowed syscalls and foreign architectures alike.
func TestKillingProgram(t *testing.T) {
	p, err := compileSeccomp(policy.Strict())
	require.NoError(t, err)
	require.True(t, p.notify)
	k := p.killing()
	require.Len(t, k.insns, len(p.insns))
	assert.False(t, k.notify)
	rets := func(prog *seccompProgram, action uint32) int {
		n := 0
		for _, in := range prog.insns {
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
	for i := range p.insns {
		if p.insns[i] != k.insns[i] {
			assert.Equal(t, uint32(unix.SECCOMP_RET_USER_NOTIF), p.insns[i].K&unix.SECCOMP_RET_ACTION_FULL, "instruction %d", i)
		}
	}
}

// The lockdown's errors reach the broker with their errno named.
func TestDescribeNamesTheErrno(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("mount /proc: %w", unix.EPERM), "mount /proc: operation not permitted (EPERM)"},
		{&os.PathError{Op: "open", Path: "/x", Err: unix.ENOENT}, "open /x: no such file or directory (ENOENT)"},
		{errors.New("no_new_privs is not set"), "no_new_privs is not set"},
	} {
		assert.Equal(t, tt.want, describe(tt.err))
	}
}

// The kernels this project is tested on (Linux 5.19 and later) have the
// flag the monitor needs; the probe must see it without loading anything.
func TestWaitKillableSupported(t *testing.T) {
	var uts unix.Utsname
	require.NoError(t, unix.Uname(&uts))
	assert.True(t, waitKillableSupported(), "kernel %s", unix.ByteSliceToString(uts.Release[:]))
	mode, err := unix.PrctlRetInt(unix.PR_GET_SECCOMP, 0, 0, 0, 0)
	require.NoError(t, err)
	assert.Zero(t, mode, "the probe loaded a filter")
}
