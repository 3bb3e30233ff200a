package policy_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/policy"
)

func TestValidateForeign(t *testing.T) {
	tests := []struct {
		name   string
		change func(*policy.Policy)
		want   string // substring of the error; "" means valid
	}{
		{"libraries", func(p *policy.Policy) { p.Filesystem.ExecutablePaths = []string{"/lib64", "/usr/lib/x86_64-linux-gnu"} }, ""},
		{"relative executable path", func(p *policy.Policy) { p.Filesystem.ExecutablePaths = []string{"lib"} }, "is not absolute"},
		{"unclean executable path", func(p *policy.Policy) { p.Filesystem.ExecutablePaths = []string{"/usr//lib"} }, "is not clean"},
		{"executable root", func(p *policy.Policy) { p.Filesystem.ExecutablePaths = []string{"/"} }, "whole root"},
		{"executable proc", func(p *policy.Policy) { p.Filesystem.ExecutablePaths = []string{"/proc"} }, "under /proc"},
		{"read-only and executable", func(p *policy.Policy) {
			p.Filesystem.ReadOnlyPaths = []string{"/usr/lib"}
			p.Filesystem.ExecutablePaths = []string{"/usr/lib"}
		}, "also read-only"},
		{"executable without mount namespace", func(p *policy.Policy) {
			p.Namespaces.Mount, p.Namespaces.PID = false, false
			p.Filesystem.ExecutablePaths = []string{"/lib64"}
		}, "need the mount namespace"},
		{"tmpfs", func(p *policy.Policy) { p.Filesystem.Tmpfs = []policy.Tmpfs{{Path: "/tmp", Size: 1 << 20}} }, ""},
		{"tmpfs without size", func(p *policy.Policy) { p.Filesystem.Tmpfs = []policy.Tmpfs{{Path: "/tmp"}} }, "give a size"},
		{"tmpfs too large", func(p *policy.Policy) {
			p.Filesystem.Tmpfs = []policy.Tmpfs{{Path: "/tmp", Size: policy.MaxTmpfsSize + 1}}
		}, "give a size"},
		{"tmpfs over a bind", func(p *policy.Policy) {
			p.Filesystem.ReadOnlyPaths = []string{"/usr/share/fonts"}
			p.Filesystem.Tmpfs = []policy.Tmpfs{{Path: "/usr/share/fonts/cache", Size: 1 << 20}}
		}, "overlaps"},
		{"bind under a tmpfs", func(p *policy.Policy) {
			p.Filesystem.ExecutablePaths = []string{"/opt/x/lib"}
			p.Filesystem.Tmpfs = []policy.Tmpfs{{Path: "/opt", Size: 1 << 20}}
		}, "overlaps"},
		{"two tmpfs nested", func(p *policy.Policy) {
			p.Filesystem.Tmpfs = []policy.Tmpfs{{Path: "/a", Size: 1}, {Path: "/a/b", Size: 1}}
		}, "overlaps"},
		{"tmpfs siblings", func(p *policy.Policy) {
			p.Filesystem.Tmpfs = []policy.Tmpfs{{Path: "/a", Size: 1}, {Path: "/ab", Size: 1}}
		}, ""},
		{"too many tmpfs", func(p *policy.Policy) {
			for _, path := range []string{"/a", "/b", "/c", "/d", "/e", "/f", "/g", "/h", "/i"} {
				p.Filesystem.Tmpfs = append(p.Filesystem.Tmpfs, policy.Tmpfs{Path: path, Size: 1})
			}
		}, "at most 8"},
		{"children", func(p *policy.Policy) { p.Seccomp.AllowChildren = true }, ""},
		{"children without seccomp", func(p *policy.Policy) {
			p.Seccomp.Enabled, p.Seccomp.Monitor, p.Seccomp.DenyExecMemory = false, false, false
			p.Seccomp.AllowChildren = true
		}, "allow_children needs seccomp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := policy.Strict()
			tt.change(p)
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

func TestForeignFieldsRoundTrip(t *testing.T) {
	p, err := policy.Parse([]byte(`
		filesystem {
			executable_paths: "/lib64"
			tmpfs { path: "/tmp" size_bytes: 1048576 }
		}
		seccomp { allow_children: true }
	`))
	require.NoError(t, err)
	want := policy.Strict()
	want.Filesystem.ExecutablePaths = []string{"/lib64"}
	want.Filesystem.Tmpfs = []policy.Tmpfs{{Path: "/tmp", Size: 1 << 20}}
	want.Seccomp.AllowChildren = true
	assert.Equal(t, want, p)
	text, err := policy.Format(p)
	require.NoError(t, err)
	back, err := policy.Parse(text)
	require.NoError(t, err)
	assert.Equal(t, p, back)
	wire, err := p.MarshalBinary()
	require.NoError(t, err)
	back = new(policy.Policy)
	require.NoError(t, back.UnmarshalBinary(wire))
	assert.Equal(t, p, back)
}

// TestForeignSyscallRules: allow_children adds exactly fork's clone
// flags, as alternatives of the one clone rule, and the wait calls;
// never exec, and nothing without it.
func TestForeignSyscallRules(t *testing.T) {
	p := policy.Strict()
	// Beyond a Go renderer's: handlers installed and own limits set.
	foreignOnly := map[string]string{"rt_sigaction": "", "prlimit64": "arg0==0x0",
		"prctl": "arg0==0xf or arg0==0x10 or arg0==0x53564d41 or arg0==0x3 or arg0==0x17"}
	base, foreign := p.SyscallRules(), p.ForeignSyscallRules()
	require.Len(t, foreign, len(base))
	for i := range base {
		if cond, ok := foreignOnly[base[i].Name]; ok {
			assert.Equal(t, cond, foreign[i].Conditions(), base[i].Name)
			continue
		}
		assert.Equal(t, base[i], foreign[i])
	}
	p.Seccomp.AllowChildren = true
	rules := p.ForeignSyscallRules()
	names := map[string]int{}
	var clone policy.SyscallRule
	for _, r := range rules {
		names[r.Name]++
		if r.Name == "clone" {
			clone = r
		}
	}
	assert.Equal(t, 1, names["clone"])
	assert.Equal(t, 1, names["wait4"])
	assert.Equal(t, 1, names["waitid"])
	for _, name := range []string{"execve", "execveat", "fork", "vfork"} {
		assert.Zero(t, names[name], name)
	}
	var flags []uint64
	for _, alt := range clone.AnyOf {
		require.Len(t, alt, 1)
		assert.Equal(t, policy.ArgCond{Arg: 0, Op: policy.Equal, Value: alt[0].Value}, alt[0])
		flags = append(flags, alt[0].Value)
	}
	// Every alternative but the thread ones (CLONE_THREAD, unchanged)
	// is exactly one of fork's: no namespace, no shared memory, no
	// parent change.
	var processes []uint64
	for _, f := range flags {
		if f&unix.CLONE_THREAD == 0 {
			processes = append(processes, f)
		}
	}
	fork := uint64(unix.CLONE_CHILD_SETTID | unix.CLONE_CHILD_CLEARTID | uint64(unix.SIGCHLD))
	assert.ElementsMatch(t, []uint64{fork, uint64(unix.SIGCHLD)}, processes)
}
