package broker_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/internal/testrenderer"
	"github.com/sandkit/sandkit/policy"
)

// TestOPathIsAViolation opens paths with O_PATH from a locked renderer.
// Such an open needs no Landlock right, and fstat on it would reveal the
// host's device, inode and size of the renderer's own binary and of
// whatever /proc links to; the seccomp rule for openat turns it into a
// violation. An ordinary open still reaches Landlock and gets EACCES (the
// renderer's root has no /proc: ENOENT there).
func TestOPathIsAViolation(t *testing.T) {
	b := newBroker(t, strict())
	for _, tt := range []struct {
		action    string
		wantErrno string // the renderer survives and reports this
		wantKill  string // or the monitor kills it for this syscall
	}{
		{action: "open-path:/proc/self/exe", wantKill: "openat"},
		{action: "open-path:/", wantKill: "openat"},
		{action: "open-path:/proc/1/environ", wantKill: "openat"},
		{action: "open:/proc/self/exe", wantErrno: "ENOENT"}, // the root has no /proc
		{action: "open:/", wantErrno: "EACCES"},
	} {
		t.Run(tt.action, func(t *testing.T) {
			r, err := b.Acquire(context.Background(), "origin-"+tt.action, "")
			require.NoError(t, err)
			expectAttempt(t, r, tt.action, tt.wantErrno, tt.wantKill)
		})
	}
}

// TestRendererHasItsOwnFileDescription hands a locked renderer the
// caller's file, opened and read up to offset 3; the renderer moves its
// offset to the end and sets O_NONBLOCK and O_APPEND, as an attacker
// would to disturb the broker. The caller's offset and flags are exactly
// as before and its descriptor keeps reading where it was; the renderer
// saw its copy start at the caller's offset and took the changes itself.
func TestRendererHasItsOwnFileDescription(t *testing.T) {
	const content = "0123456789abcdef"
	path := filepath.Join(t.TempDir(), "input")
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	_, err = f.Seek(3, io.SeekStart)
	require.NoError(t, err)
	flagsBefore, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	require.NoError(t, err)

	r, err := newBroker(t, strict()).Acquire(context.Background(), "o", "")
	require.NoError(t, err)
	resp, _, err := broker.Call(context.Background(), r, testrenderer.Tamper, wrapperspb.String(""), f)
	require.NoError(t, err)
	var start, end int64
	var flags int
	_, err = fmt.Sscanf(resp.GetValue(), "start=%d end=%d flags=%v", &start, &end, &flags)
	require.NoError(t, err, "renderer answered %q", resp.GetValue())
	assert.Equal(t, int64(3), start, "the renderer's copy starts at the caller's offset")
	assert.Equal(t, int64(len(content)), end)
	assert.Equal(t, unix.O_NONBLOCK|unix.O_APPEND, flags&(unix.O_NONBLOCK|unix.O_APPEND), "the renderer's own flags changed")

	off, err := f.Seek(0, io.SeekCurrent)
	require.NoError(t, err)
	assert.Equal(t, int64(3), off, "the renderer moved the caller's offset")
	flagsAfter, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	require.NoError(t, err)
	assert.Equal(t, flagsBefore, flagsAfter, "the renderer changed the caller's status flags")
	b := make([]byte, 4)
	_, err = io.ReadFull(f, b)
	require.NoError(t, err)
	assert.Equal(t, "3456", string(b))

	// The renderer lives on and can be handed the file again.
	_, _, err = broker.Call(context.Background(), r, testrenderer.Tamper, wrapperspb.String(""), f)
	require.NoError(t, err)
}

// TestExecMemoryIsAViolation tries, from a locked renderer, each way to
// get memory it could write code into and run. Under DenyExecMemory each
// is a violation the monitor reports with its syscall; an ordinary
// mapping still works. With the option off the same calls succeed, which
// is what the option takes away.
func TestExecMemoryIsAViolation(t *testing.T) {
	deny := strict()
	deny.Seccomp.DenyExecMemory = true
	deny.Limits.SharedMemory = 1 << 20 // memfd-exec's memfd, from the broker
	allow := deny.Clone()
	allow.Seccomp.DenyExecMemory = false
	tests := []struct {
		action   string
		wantKill string // under DenyExecMemory
	}{
		{action: "mmap-exec", wantKill: "mmap"},
		{action: "mprotect-exec", wantKill: "mprotect"},
		{action: "memfd-exec", wantKill: "mmap"},
		{action: "mmap-rw"},
	}
	for _, p := range []struct {
		name   string
		policy *policy.Policy
	}{{"deny", deny}, {"allow", allow}} {
		b := newBroker(t, p.policy)
		for _, tt := range tests {
			t.Run(p.name+"/"+tt.action, func(t *testing.T) {
				r, err := b.Acquire(context.Background(), "origin-"+tt.action, "")
				require.NoError(t, err)
				wantKill := tt.wantKill
				if !p.policy.Seccomp.DenyExecMemory {
					wantKill = "" // allowed: the renderer answers
				}
				expectAttempt(t, r, tt.action, "ok", wantKill)
			})
		}
	}
}
