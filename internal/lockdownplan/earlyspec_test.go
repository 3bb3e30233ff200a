package lockdownplan

import (
	"encoding/hex"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/policy"
)

// EarlySpec carries exactly what the constructor applies: the namespaces
// it sets up, the Landlock rights the report names, the read-only paths.
func TestEarlySpec(t *testing.T) {
	kernel, err := LandlockABIVersion()
	if err != nil || kernel < 6 {
		t.Skipf("Landlock ABI %d (%v): the table assumes scoping (ABI 6)", kernel, err)
	}
	_, all := LandlockRights(kernel)
	handled := fmt.Sprintf("%x:%x:%x", all.FS, all.Net, all.Scoped)
	fonts := hex.EncodeToString([]byte("/usr/share/fonts"))
	tests := []struct {
		name   string
		change func(p *policy.Policy)
		want   string
	}{
		{"strict", func(*policy.Policy) {}, "mhl:" + handled},
		{"read-only path", func(p *policy.Policy) { p.Filesystem.ReadOnlyPaths = []string{"/usr/share/fonts"} }, "mhl:" + handled + ":" + fonts},
		{"no landlock", func(p *policy.Policy) {
			p.Filesystem.Landlock, p.Network.Landlock, p.Scope.Landlock = false, false, false
		}, "mh:0:0:0"},
		{"network only", func(p *policy.Policy) {
			p.Filesystem.Landlock, p.Scope.Landlock = false, false
		}, fmt.Sprintf("mhl:0:%x:0", all.Net)},
		{"no uts, no mount", func(p *policy.Policy) {
			p.Namespaces.UTS, p.Namespaces.Mount, p.Namespaces.PID = false, false, false
		}, "l:" + handled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := policy.Strict()
			tt.change(p)
			require.NoError(t, p.Validate())
			got, err := EarlySpec(p)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}
