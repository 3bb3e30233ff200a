package policy_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/policy"
)

func TestArgShape(t *testing.T) {
	for _, tc := range []struct {
		args [6]uint64
		want string
	}{
		{[6]uint64{}, "()"},
		{[6]uint64{0xc000123456}, "(ptr)"},
		{[6]uint64{0xffffffffffffff9c, 0xc000010000, 0x80000, 0}, "(-100, ptr, 0x80000)"}, // openat(AT_FDCWD, path, O_CLOEXEC)
		{[6]uint64{0xffffff9c}, "(-100)"},                                                 // AT_FDCWD as a 32-bit int
		{[6]uint64{3, 0, 0, 0, 0, 7}, "(3, 0, 0, 0, 0, 7)"},                               // zeros inside are kept
		{[6]uint64{0x16, 0x7fff12345678}, "(0x16, ptr)"},
		{[6]uint64{0xffffffff80000000}, "(0xffffffff80000000)"}, // not a user address
	} {
		assert.Equal(t, tc.want, policy.ArgShape(tc.args), "%#x", tc.args)
	}
}

func TestCanAllow(t *testing.T) {
	for name, want := range map[string]string{
		"sysinfo":   "",
		"getrusage": "",
		"ptrace":    "escape surface",
		"socket":    "escape surface",
		"openat2":   "behind a pointer",
		"mmap":      "in the base allowlist",
		"getrandom": "in the base allowlist",
		"i386:open": "not a syscall",
		"syscall 9": "not a syscall",
	} {
		err := policy.CanAllow(name)
		if want == "" {
			assert.NoError(t, err, name)
			continue
		}
		require.ErrorIs(t, err, policy.ErrInvalid, name)
		assert.Contains(t, err.Error(), want, name)
	}
}

// Learned allows exactly the allowable uses, sorted, keeps the base's
// own, and returns the rest as refused.
func TestLearned(t *testing.T) {
	base := policy.Strict()
	base.Seccomp.Allow = []string{"uname2"} // not a syscall: Learned does not validate the base
	uses := []policy.SyscallUse{{Name: "sysinfo", Count: 3}, {Name: "ptrace", Count: 1}, {Name: "getrusage", Count: 9}}
	p, refused := policy.Learned(base, uses)
	assert.Equal(t, []string{"getrusage", "sysinfo", "uname2"}, p.Seccomp.Allow)
	assert.Equal(t, []policy.SyscallUse{{Name: "ptrace", Count: 1}}, refused)
	assert.Equal(t, []string{"uname2"}, base.Seccomp.Allow, "the base was changed")
}

// The learned text holds only what differs from Strict, with comments
// Parse skips, and reads back as exactly the learned policy, strings
// that need escaping included.
func TestFormatLearnedRoundTrip(t *testing.T) {
	base := policy.Strict()
	base.Filesystem.ReadOnlyPaths = []string{"/usr/share/fonts", "/opt/a \"quoted\"\\path\tü"}
	base.Limits.Memory = 2 << 30
	base.Limits.CallTimeout = 1500 * time.Millisecond
	base.Namespaces.Net = false
	base.AllowDegraded = []policy.Layer{policy.LayerLandlockScope}
	require.NoError(t, base.Validate())
	uses := []policy.SyscallUse{
		{Name: "sysinfo", Count: 5, Shapes: []policy.ShapeCount{{Shape: "(ptr)", Count: 4}, {Shape: "(0x10)", Count: 1}}, OtherShapes: 0},
		{Name: "getrusage", Count: 1, Shapes: []policy.ShapeCount{{Shape: "(0, ptr)", Count: 1}}},
		{Name: "ptrace", Count: 2},
	}
	p, _ := policy.Learned(base, uses)
	text := string(policy.FormatLearned(p, uses))
	got, err := policy.Parse([]byte(text))
	require.NoError(t, err, text)
	assert.Equal(t, p, got, text)
	for _, want := range []string{
		"  # getrusage: 1 call\n  #   1× getrusage(0, ptr)\n  allow: \"getrusage\"\n",
		"  # sysinfo: 5 calls\n  #   4× sysinfo(ptr)\n  #   1× sysinfo(0x10)\n  allow: \"sysinfo\"\n",
		"# REFUSED: no policy can allow these; the samples got EPERM for them:\n#   ptrace: 2 calls\n",
		"namespaces {\n  net: false\n}\n",
		"  call_timeout_ms: 1500\n",
	} {
		assert.Contains(t, text, want)
	}
	for _, unchanged := range []string{"user:", "landlock:", "enabled:", "open_files:", "threads:"} {
		assert.NotContains(t, text, unchanged, "a field equal to Strict's was written")
	}
}

// Nothing learned over Strict is a text of comments that parses as
// Strict.
func TestFormatLearnedNothing(t *testing.T) {
	text := policy.FormatLearned(policy.Strict(), nil)
	for _, line := range strings.Split(strings.TrimSpace(string(text)), "\n") {
		assert.True(t, strings.HasPrefix(line, "#"), "%q", line)
	}
	p, err := policy.Parse(text)
	require.NoError(t, err)
	assert.Equal(t, policy.Strict(), p)
}
