package launch

import (
	"encoding/base64"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/policy"
)

func TestArgRoundTrip(t *testing.T) {
	p := policy.Strict()
	p.Filesystem.ReadOnlyPaths = []string{"/usr/share/fonts"}
	const spec = "mhl:1ffff:f:3:2f7573722f73686172652f666f6e7473"
	for _, prog := range []string{"", "nAAAA"} {
		arg, err := Arg(p, prog, spec)
		require.NoError(t, err)
		assert.True(t, Requested([]string{"prog", arg, "-extra"}))
		got, gotProg, gotSpec, err := ParseArg(arg)
		require.NoError(t, err)
		assert.Equal(t, p, got)
		assert.Equal(t, prog, gotProg)
		assert.Equal(t, spec, gotSpec)
	}
	assert.False(t, Requested([]string{"prog"}))
	assert.False(t, Requested([]string{"prog", "-v", Flag}), "only argv[1] marks a renderer")
}

// TestParseArgRefuses: argv[1] is what a renderer decodes before
// lockdown; whatever is not an argument Arg made is refused.
func TestParseArgRefuses(t *testing.T) {
	escape := policy.Strict()
	escape.Seccomp.Allow = []string{"ptrace"} // never valid
	raw, err := escape.MarshalBinary()
	require.NoError(t, err)
	tests := []struct{ name, arg, err string }{
		{"no flag", "abc~", "renderer argument without " + Flag},
		{"no spec", Flag + base64.RawURLEncoding.EncodeToString(raw), "no early lockdown spec"},
		{"not base64", Flag + "!!~", "policy: illegal base64 data at input byte 0"},
		{"not a policy", Flag + base64.RawURLEncoding.EncodeToString([]byte{0xff}) + "~", "invalid policy"},
		{"invalid policy", Flag + base64.RawURLEncoding.EncodeToString(raw) + "~", `"ptrace" is escape surface`},
		{"empty program", Flag + ".~", "renderer argument with an empty seccomp program"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, _, err := ParseArg(tt.arg)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.err)
		})
	}
}

func TestLandlockABI(t *testing.T) {
	want := map[policy.Layer]int{policy.LayerLandlockFS: 1, policy.LayerLandlockNet: 4, policy.LayerLandlockScope: 6}
	for _, l := range policy.AllLayers() {
		assert.Equal(t, want[l], LandlockABI(l), "%s", l)
	}
}
