package broker_test

import (
	"fmt"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/broker"
)

// TestForeignProgramDevices: a device the policy names is the host's
// character device, readable and nothing more: Landlock refuses a write
// (EACCES, although the node's mode allows one and a read-only mount
// does not stop writes to devices), and a device not named is not there.
func TestForeignProgramDevices(t *testing.T) {
	prog := buildForeign(t)
	p := foreignPolicy()
	p.Filesystem.Devices = []string{"/dev/urandom", "/dev/null"}
	b := newBroker(t, p)
	probes := []struct {
		op, path string
		errno    syscall.Errno
	}{
		{"read", "/dev/urandom", 0},
		{"read", "/dev/null", 0},
		{"write", "/dev/urandom", unix.EACCES},
		{"write", "/dev/null", unix.EACCES},
		{"read", "/dev/zero", unix.ENOENT},
		{"read", "/dev/random", unix.ENOENT},
	}
	args := []string{"foreignprog", "fs"}
	var want strings.Builder
	for _, pr := range probes {
		args = append(args, pr.op, pr.path)
		fmt.Fprintf(&want, "%s %s %d\n", pr.op, pr.path, pr.errno)
	}
	res := runForeign(t, b, broker.Program{Path: prog, Args: args, Output: broker.Output{Limit: 4 << 10}})
	require.Equal(t, broker.ExitClean, res.Exit.Reason, "%v", res.Exit)
	assertAllLayers(t, p, res.Layers)
	assert.Equal(t, want.String(), string(res.Output))

	// Random bytes, not a file of zeros: 4096 bytes of which fewer than
	// 64 are zero (about 16 expected).
	res = runForeign(t, b, broker.Program{Path: prog, Args: []string{"foreignprog", "head", "/dev/urandom", "4096"}, Output: broker.Output{Limit: 1 << 10}})
	require.Equal(t, broker.ExitClean, res.Exit.Reason, "%v", res.Exit)
	var n, zeros int
	_, err := fmt.Sscanf(string(res.Output), "read %d zeros %d\n", &n, &zeros)
	require.NoError(t, err, "%q", res.Output)
	assert.Equal(t, 4096, n)
	assert.Less(t, zeros, 64)
}
