package broker

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// The machines this suite runs on allow user namespaces, as root and as
// an ordinary user: the probe must say so (TestUserNSRefusedInSandbox
// covers a refusal).
func TestProbeUserNamespace(t *testing.T) {
	require.NoError(t, probeUserNamespace(false))
	require.NoError(t, probeUserNamespace(true))
}

// Each refusal names the setting behind it and its fix.
func TestExplainUserNSRefusal(t *testing.T) {
	tests := []struct {
		name    string
		errno   unix.Errno
		sysctls map[string]string
		want    []string
	}{
		{
			name: "no user namespaces at all", errno: unix.ENOSPC,
			sysctls: map[string]string{"/proc/sys/user/max_user_namespaces": "0"},
			want:    []string{"user.max_user_namespaces is 0", "sudo sysctl user.max_user_namespaces="},
		},
		{
			name: "none left, in a sandbox", errno: unix.ENOSPC,
			sysctls: map[string]string{"/proc/sys/user/max_user_namespaces": "1"},
			want:    []string{"user.max_user_namespaces limit is reached", "run the broker outside it"},
		},
		{
			name: "Debian's switch", errno: unix.EPERM,
			sysctls: map[string]string{"/proc/sys/kernel/unprivileged_userns_clone": "0"},
			want:    []string{"kernel.unprivileged_userns_clone is 0", "sudo sysctl kernel.unprivileged_userns_clone=1"},
		},
		{
			name: "AppArmor", errno: unix.EPERM,
			sysctls: map[string]string{"/proc/sys/kernel/apparmor_restrict_unprivileged_userns": "1"},
			want:    []string{"kernel.apparmor_restrict_unprivileged_userns=1", "AppArmor profile that grants \"userns,\"", "set the sysctl to 0"},
		},
		{
			name: "AppArmor allows, something else refuses", errno: unix.EPERM,
			sysctls: map[string]string{"/proc/sys/kernel/apparmor_restrict_unprivileged_userns": "0"},
			want:    []string{"no sysctl explains it", "no seccomp filter", "AppArmor, SELinux"},
		},
		{
			name: "a container runtime's seccomp profile", errno: unix.EPERM,
			sysctls: map[string]string{"/proc/self/status": "Name:\tbroker\nSeccomp:\t2\nSeccomp_filters:\t1\n"},
			want: []string{"seccomp filter", "--security-opt seccomp=", "securityContext.seccompProfile {type: Localhost",
				"docs/deploying.md"},
		},
		{
			name: "strict seccomp is not a filter", errno: unix.EPERM,
			sysctls: map[string]string{"/proc/self/status": "Seccomp:\t0\n"},
			want:    []string{"no sysctl explains it"},
		},
		{
			name: "bwrap --disable-userns", errno: unix.ENOSPC,
			sysctls: map[string]string{"/proc/self/status": "Seccomp:\t2\n"},
			want:    []string{"bwrap --disable-userns (drop that option)", "--sysctl user.max_user_namespaces="},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := explainUserNSRefusal("CLONE_NEWUSER", tt.errno, func(p string) string { return tt.sysctls[p] })
			require.ErrorIs(t, err, tt.errno)
			for _, w := range tt.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

// What the probe adds to every broker.New.
func BenchmarkProbeUserNamespace(b *testing.B) {
	for b.Loop() {
		if err := probeUserNamespace(true); err != nil {
			b.Fatal(err)
		}
	}
}
