package renderer

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/internal/lockdownplan"
	"github.com/sandkit/sandkit/internal/seccompfilter"
	"github.com/sandkit/sandkit/policy"
)

func TestRendererArgRoundTrip(t *testing.T) {
	p := policy.Strict()
	p.Filesystem.ReadOnlyPaths = []string{"/usr/share/fonts"}
	arg, err := lockdownplan.RendererArg(p)
	require.NoError(t, err)
	got, prog, spec, err := policyFromArg(arg)
	require.NoError(t, err)
	assert.Equal(t, p, got)
	wantSpec, err := lockdownplan.EarlySpec(p)
	require.NoError(t, err)
	assert.Equal(t, wantSpec, spec)
	want, err := seccompfilter.Precompile(p)
	require.NoError(t, err)
	require.NotNil(t, prog, "a pid namespace: the broker compiles the program")
	assert.Equal(t, want, prog)
	assert.Equal(t, p.Seccomp.Monitor && seccompfilter.NotifySupported(), prog.Notify)

	polProg, _, _ := strings.Cut(arg, "~")
	_, _, _, err = policyFromArg(polProg[:len(polProg)-3] + "!!!~" + spec)
	assert.Error(t, err)
	_, _, _, err = policyFromArg(polProg)
	assert.EqualError(t, err, "no early lockdown spec")

	// Without a pid namespace the renderer's pid is not known in advance:
	// it compiles the program itself.
	p.Namespaces.PID = false
	arg, err = lockdownplan.RendererArg(p)
	require.NoError(t, err)
	_, prog, _, err = policyFromArg(arg)
	require.NoError(t, err)
	assert.Nil(t, prog)
}

func TestRequested(t *testing.T) {
	saved := os.Args
	defer func() { os.Args = saved }()
	os.Args = []string{"prog"}
	assert.False(t, Requested())
	os.Args = []string{"prog", "--sandkit-renderer=abc"}
	assert.True(t, Requested())
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
