package policy_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/policy"
)

func TestStrictIsValidAndAsksForEveryLayer(t *testing.T) {
	p := policy.Strict()
	require.NoError(t, p.Validate())
	want := []policy.Layer{}
	for _, l := range policy.AllLayers() {
		if l != policy.LayerCgroup { // only with a cgroup directory
			want = append(want, l)
		}
	}
	assert.Equal(t, want, p.Requested())
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*policy.Policy)
		want   string // substring of the error; "" means valid
	}{
		{"strict", func(*policy.Policy) {}, ""},
		{"extra syscall", func(p *policy.Policy) { p.Seccomp.Allow = []string{"sched_setaffinity"} }, ""},
		{"unknown syscall", func(p *policy.Policy) { p.Seccomp.Allow = []string{"frobnicate"} }, `unknown syscall "frobnicate"`},
		{"another architecture's syscall", func(p *policy.Policy) { p.Seccomp.Allow = []string{"socketcall"} }, `unknown syscall "socketcall"`},
		{"escape surface", func(p *policy.Policy) { p.Seccomp.Allow = []string{"ptrace"} }, `"ptrace" is escape surface`},
		{"widen a base rule", func(p *policy.Policy) { p.Seccomp.Allow = []string{"ioctl"} }, `"ioctl" is already in the base allowlist`},
		{"openat2 hides O_PATH", func(p *policy.Policy) { p.Seccomp.Allow = []string{"openat2"} }, `"openat2" cannot be allowed`},
		{"open, without O_PATH", func(p *policy.Policy) { p.Seccomp.Allow = []string{"open"} }, ""},
		{"duplicate syscall", func(p *policy.Policy) { p.Seccomp.Allow = []string{"sched_setaffinity", "sched_setaffinity"} }, "listed twice"},
		{"allow without seccomp", func(p *policy.Policy) {
			p.Seccomp.Enabled, p.Seccomp.Monitor, p.Seccomp.Allow = false, false, []string{"sched_setaffinity"}
		}, "seccomp is disabled"},
		{"exec memory without seccomp", func(p *policy.Policy) {
			p.Seccomp.Enabled, p.Seccomp.Monitor = false, false
		}, "deny_exec_memory needs seccomp"},
		{"exec memory allowed", func(p *policy.Policy) { p.Seccomp.DenyExecMemory = false }, ""},
		{"monitor without seccomp", func(p *policy.Policy) { p.Seccomp.Enabled = false }, "monitor needs seccomp"},
		{"namespaces without userns", func(p *policy.Policy) { p.Namespaces.User = false }, "need the user namespace"},
		{"pid without mount", func(p *policy.Policy) { p.Namespaces.Mount = false }, "pid namespace needs a mount namespace"},
		{"relative path", func(p *policy.Policy) { p.Filesystem.ReadOnlyPaths = []string{"fonts"} }, "not absolute"},
		{"unclean path", func(p *policy.Policy) { p.Filesystem.ReadOnlyPaths = []string{"/usr/../etc"} }, "not clean"},
		{"root path", func(p *policy.Policy) { p.Filesystem.ReadOnlyPaths = []string{"/"} }, "whole host"},
		{"proc path", func(p *policy.Policy) { p.Filesystem.ReadOnlyPaths = []string{"/proc/1"} }, "/proc is the renderer's own"},
		{"fonts", func(p *policy.Policy) { p.Filesystem.ReadOnlyPaths = []string{"/usr/share/fonts"} }, ""},
		{"tiny memory", func(p *policy.Policy) { p.Limits.Memory = 1 << 20 }, "below"},
		{"tiny threads", func(p *policy.Policy) { p.Limits.Threads = 2 }, "below"},
		{"negative duration", func(p *policy.Policy) { p.Limits.CallTimeout = -time.Second }, "negative"},
		{"unknown layer", func(p *policy.Policy) { p.AllowDegraded = []policy.Layer{"magic"} }, `unknown layer "magic"`},
		{"degrade a namespace", func(p *policy.Policy) { p.AllowDegraded = []policy.Layer{policy.LayerNetNS} }, "cannot be degraded"},
		{"degrade landlock net", func(p *policy.Policy) { p.AllowDegraded = []policy.Layer{policy.LayerLandlockNet} }, ""},
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

func TestParse(t *testing.T) {
	p, err := policy.Parse([]byte(`
		seccomp { allow: "sched_setaffinity" }
		filesystem { read_only_paths: "/usr/share/fonts" }
		limits { memory_bytes: 536870912 call_timeout_ms: 2500 }
		allow_degraded: "landlock-network"
	`))
	require.NoError(t, err)
	want := policy.Strict()
	want.Seccomp.Allow = []string{"sched_setaffinity"}
	want.Filesystem.ReadOnlyPaths = []string{"/usr/share/fonts"}
	want.Limits.Memory = 512 << 20
	want.Limits.CallTimeout = 2500 * time.Millisecond
	want.AllowDegraded = []policy.Layer{policy.LayerLandlockNet}
	assert.Equal(t, want, p)

	for _, bad := range []string{
		`seccomp { allow: "ptrace" }`,
		`namespaces { net: false mount: false }`,
		`no_such_field: 1`,
		`limits { memory_bytes: -1 }`,
		strings.Repeat(" ", policy.MaxTextSize+1),
	} {
		_, err := policy.Parse([]byte(bad))
		assert.ErrorIs(t, err, policy.ErrInvalid, "%q", bad)
	}
}

func TestRoundTrip(t *testing.T) {
	p := policy.Strict()
	p.Seccomp.Allow = []string{"sched_setaffinity"}
	p.Limits.Lifetime = time.Minute
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

// TestUnmarshalBinary: bytes that are not a policy, or a policy that does
// not validate, are refused with ErrInvalid and leave the target as it
// was; fields the bytes leave out keep Strict's values.
func TestUnmarshalBinary(t *testing.T) {
	bad := policy.Strict()
	bad.Seccomp.Allow = []string{"ptrace"}
	invalid, err := bad.MarshalBinary()
	require.NoError(t, err)
	for name, b := range map[string][]byte{
		"not protobuf":   {0xff, 0xff, 0xff},
		"escape surface": invalid,
	} {
		t.Run(name, func(t *testing.T) {
			p := policy.Strict()
			p.Limits.Threads = 99
			err := p.UnmarshalBinary(b)
			require.ErrorIs(t, err, policy.ErrInvalid)
			assert.Equal(t, uint64(99), p.Limits.Threads, "left unchanged")
		})
	}
	p := &policy.Policy{}
	require.NoError(t, p.UnmarshalBinary(nil))
	assert.Equal(t, policy.Strict(), p)
}

// TestDenyExecMemoryRoundTrips: the option survives the text and wire
// forms both ways, and a file that leaves it out keeps Strict's (on).
func TestDenyExecMemoryRoundTrips(t *testing.T) {
	p, err := policy.Parse([]byte(`seccomp { allow: "sched_setaffinity" }`))
	require.NoError(t, err)
	assert.True(t, p.Seccomp.DenyExecMemory, "left out, it keeps Strict's")
	p, err = policy.Parse([]byte(`seccomp { deny_exec_memory: false }`))
	require.NoError(t, err)
	assert.False(t, p.Seccomp.DenyExecMemory)
	for _, on := range []bool{false, true} {
		p := policy.Strict()
		p.Seccomp.DenyExecMemory = on
		text, err := policy.Format(p)
		require.NoError(t, err)
		// prototext varies its spacing on purpose.
		assert.Regexp(t, fmt.Sprintf(`deny_exec_memory:\s+%v\b`, on), string(text))
		back, err := policy.Parse(text)
		require.NoError(t, err)
		assert.Equal(t, p, back)
		wire, err := p.MarshalBinary()
		require.NoError(t, err)
		back = new(policy.Policy)
		require.NoError(t, back.UnmarshalBinary(wire))
		assert.Equal(t, p, back)
	}
}

// TestDenyExecMemoryRules checks every syscall that can make memory
// executable, from the base list or a policy's Allow, carries the
// condition in every alternative under the option, and none without it.
func TestDenyExecMemoryRules(t *testing.T) {
	want := map[string]policy.ArgCond{
		"mmap":          {Arg: 2, Op: policy.MaskedEqual, Mask: unix.PROT_EXEC},
		"mprotect":      {Arg: 2, Op: policy.MaskedEqual, Mask: unix.PROT_EXEC},
		"pkey_mprotect": {Arg: 2, Op: policy.MaskedEqual, Mask: unix.PROT_EXEC},
		"shmat":         {Arg: 2, Op: policy.MaskedEqual, Mask: 0o100000}, // SHM_EXEC
	}
	for _, on := range []bool{true, false} {
		p := policy.Strict()
		p.Seccomp.DenyExecMemory = on
		p.Seccomp.Allow = []string{"pkey_mprotect", "shmat"}
		require.NoError(t, p.Validate())
		seen := 0
		for _, r := range p.SyscallRules() {
			cond, ok := want[r.Name]
			if !ok {
				continue
			}
			seen++
			if !on {
				assert.Empty(t, r.AnyOf, "%s without deny_exec_memory", r.Name)
				continue
			}
			require.NotEmpty(t, r.AnyOf, "%s allowed unconditionally", r.Name)
			for _, alt := range r.AnyOf {
				assert.Contains(t, alt, cond, r.Name)
			}
		}
		assert.Equal(t, len(want), seen)
	}
}

func TestHugeDurationsClamp(t *testing.T) {
	p, err := policy.Parse([]byte(`limits { call_timeout_ms: 18446744073709551615 }`))
	require.NoError(t, err)
	assert.Greater(t, p.Limits.CallTimeout, time.Duration(0), "must not wrap negative")
}

func TestCPUSecondsRoundsUpWithoutOverflow(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want uint64
	}{
		{0, 0}, {-time.Second, 0}, {time.Nanosecond, 1}, {time.Second, 1},
		{time.Second + 1, 2}, {time.Duration(1<<63 - 1), uint64(time.Duration(1<<63-1)/time.Second) + 1},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, policy.Limits{CPUTime: tt.d}.CPUSeconds(), "%v", tt.d)
	}
	p, err := policy.Parse([]byte(`limits { cpu_seconds: 18446744073709551615 }`))
	require.NoError(t, err)
	text, err := policy.Format(p)
	require.NoError(t, err)
	again, err := policy.Parse(text)
	require.NoError(t, err)
	assert.Equal(t, p.Limits.CPUTime, again.Limits.CPUTime)
}

func TestBaseSyscallsAvoidTheEscapeSurface(t *testing.T) {
	for _, r := range policy.BaseSyscalls() {
		for _, e := range policy.EscapeSurface() {
			if r.Name == e && r.Errno == 0 {
				t.Errorf("%s is both allowed and escape surface", r.Name)
			}
		}
	}
}

func TestStatusString(t *testing.T) {
	s := policy.Status{
		{Layer: policy.LayerSeccomp, Active: true, Detail: "68 rules"},
		{Layer: policy.LayerCgroup, Active: false},
	}
	assert.Equal(t, "+seccomp(68 rules) -cgroup", s.String())
	assert.True(t, s.Active(policy.LayerSeccomp))
	assert.False(t, s.Active(policy.LayerCgroup))
	assert.False(t, s.Active(policy.LayerPIDNS))
}

// TestOPathIsNeverAllowed checks every way into open(2) a policy can
// allow: each needs O_PATH clear, whatever else it allows.
func TestOPathIsNeverAllowed(t *testing.T) {
	p := policy.Strict()
	p.Seccomp.Allow = []string{"open"}
	require.NoError(t, p.Validate())
	want := map[string]uint{"openat": 2, "open": 1} // the flags argument
	for _, r := range p.SyscallRules() {
		arg, ok := want[r.Name]
		if !ok {
			continue
		}
		delete(want, r.Name)
		require.NotEmpty(t, r.AnyOf, "%s allowed unconditionally", r.Name)
		for _, alt := range r.AnyOf {
			assert.Contains(t, alt, policy.ArgCond{Arg: arg, Op: policy.MaskedEqual, Mask: unix.O_PATH, Value: 0}, r.Name)
		}
	}
	assert.Empty(t, want, "rules missing")
}
