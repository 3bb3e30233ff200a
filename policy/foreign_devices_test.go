package policy_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/policy"
)

// TestValidateDevices: only the kernel's memory devices may be bound,
// once each, not beneath another bind, and only with a mount namespace.
func TestValidateDevices(t *testing.T) {
	tests := []struct {
		name    string
		devices []string
		change  func(*policy.Policy)
		want    string // substring of the error; "" means valid
	}{
		{"urandom and null", []string{"/dev/urandom", "/dev/null"}, nil, ""},
		{"all of them", []string{"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"}, nil, ""},
		{"a disk", []string{"/dev/sda"}, nil, `device "/dev/sda" is not one of`},
		{"kernel memory", []string{"/dev/mem"}, nil, `device "/dev/mem" is not one of`},
		{"a terminal", []string{"/dev/tty"}, nil, `device "/dev/tty" is not one of`},
		{"not clean", []string{"/dev/../dev/urandom"}, nil, "is not one of"},
		{"twice", []string{"/dev/urandom", "/dev/urandom"}, nil, "listed twice"},
		{"beneath a bind", []string{"/dev/urandom"}, func(p *policy.Policy) { p.Filesystem.ReadOnlyPaths = []string{"/dev"} }, "beneath the bind"},
		{"under a tmpfs", []string{"/dev/urandom"}, func(p *policy.Policy) { p.Filesystem.Tmpfs = []policy.Tmpfs{{Path: "/dev", Size: 1}} }, "overlaps"},
		{"no mount namespace", []string{"/dev/urandom"}, func(p *policy.Policy) { p.Namespaces.Mount, p.Namespaces.PID = false, false }, "devices need the mount namespace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := policy.Strict()
			p.Filesystem.Devices = tt.devices
			if tt.change != nil {
				tt.change(p)
			}
			err := p.Validate()
			if tt.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, policy.ErrInvalid)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestDevicesRoundTrip(t *testing.T) {
	p, err := policy.Parse([]byte(`filesystem { devices: "/dev/urandom" devices: "/dev/null" }`))
	require.NoError(t, err)
	assert.Equal(t, []string{"/dev/urandom", "/dev/null"}, p.Filesystem.Devices)
	text, err := policy.Format(p)
	require.NoError(t, err)
	back, err := policy.Parse(text)
	require.NoError(t, err)
	assert.Equal(t, p, back)
	c := p.Clone()
	c.Filesystem.Devices[0] = "/dev/zero"
	assert.Equal(t, "/dev/urandom", p.Filesystem.Devices[0], "Clone shares the devices")
}

// TestForeignDevice: each device a policy may bind has the number the
// host's own node has (the launcher refuses a node whose number differs),
// and nothing else is one.
func TestForeignDevice(t *testing.T) {
	for _, path := range []string{"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"} {
		rdev, ok := policy.ForeignDevice(path)
		require.True(t, ok, path)
		var st unix.Stat_t
		require.NoError(t, unix.Stat(path, &st), path)
		assert.Equal(t, uint64(st.Rdev), rdev, path)
		assert.Equal(t, uint32(unix.S_IFCHR), st.Mode&unix.S_IFMT, path)
	}
	for _, path := range []string{"/dev/sda", "/dev/mem", "/dev/kmem", "/dev/port", "/dev/tty", "/dev/kmsg", "dev/null", "/dev/null/", ""} {
		_, ok := policy.ForeignDevice(path)
		assert.False(t, ok, path)
	}
}
