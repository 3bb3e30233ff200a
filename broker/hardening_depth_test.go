package broker_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/broker"
)

// TestOPathIsAViolation opens paths with O_PATH from a locked renderer.
// Such an open needs no Landlock right, and fstat on it would reveal the
// host's device, inode and size of the renderer's own binary and of
// whatever /proc links to; the seccomp rule for openat turns it into a
// violation. An ordinary open still reaches Landlock and gets EACCES.
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
		{action: "open:/proc/self/exe", wantErrno: "EACCES"},
		{action: "open:/", wantErrno: "EACCES"},
	} {
		t.Run(tt.action, func(t *testing.T) {
			r, err := b.Acquire(context.Background(), "origin-"+tt.action, "")
			require.NoError(t, err)
			got, err := attempt(t, r, tt.action)
			if tt.wantKill == "" {
				require.NoError(t, err)
				assert.Equal(t, tt.wantErrno, got)
				return
			}
			var ee *broker.ExitError
			require.ErrorAs(t, err, &ee, "renderer answered %q", got)
			assert.Equal(t, broker.ExitViolation, ee.Reason)
			assert.Equal(t, tt.wantKill, ee.Syscall)
			assert.Equal(t, r.PID(), ee.PID)
		})
	}
}
