package broker

import (
	"errors"
	"fmt"
	"os"
	"strings"

	llsys "github.com/landlock-lsm/go-landlock/landlock/syscall"
	seccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/policy"
)

// checkSupport fails early, with the layer named, when the kernel lacks
// something p requires and p does not allow running without it. The
// renderer checks again as it applies each layer (and fails the same way);
// this is the cheap, clear first answer.
func checkSupport(p *policy.Policy) error {
	var errs []error
	need := func(layer policy.Layer, err error) {
		if err != nil && !p.Degradable(layer) {
			errs = append(errs, &policy.UnavailableError{Layer: layer, Err: err})
		}
	}
	if p.Namespaces.User {
		need(policy.LayerUserNS, userNamespacesAvailable())
	}
	abi, abiErr := llsys.LandlockGetABIVersion()
	landlockAt := func(layer policy.Layer) error {
		min := policy.LandlockABI(layer)
		switch {
		case abiErr != nil:
			return fmt.Errorf("landlock unavailable: %w", abiErr)
		case abi < min:
			return fmt.Errorf("landlock ABI %d, need %d", abi, min)
		}
		return nil
	}
	if p.Filesystem.Landlock {
		need(policy.LayerLandlockFS, landlockAt(policy.LayerLandlockFS))
	}
	if p.Network.Landlock {
		need(policy.LayerLandlockNet, landlockAt(policy.LayerLandlockNet))
	}
	if p.Scope.Landlock {
		need(policy.LayerLandlockScope, landlockAt(policy.LayerLandlockScope))
	}
	if p.Seccomp.Enabled {
		if _, err := unix.PrctlRetInt(unix.PR_GET_SECCOMP, 0, 0, 0, 0); err != nil {
			need(policy.LayerSeccomp, fmt.Errorf("seccomp unavailable: %w", err))
		}
	}
	if p.Seccomp.Monitor {
		if api, err := seccomp.GetAPI(); err != nil || api < 6 {
			need(policy.LayerSeccompMonitor, fmt.Errorf("libseccomp API level %d lacks user notification (need 6)", api))
		}
	}
	return errors.Join(errs...)
}

// userNamespacesAvailable reads the knobs distributions use to turn
// unprivileged user namespaces off. Root is not affected by them.
func userNamespacesAvailable() error {
	read := func(path string) string {
		b, err := os.ReadFile(path)
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	if read("/proc/sys/user/max_user_namespaces") == "0" {
		return errors.New("user.max_user_namespaces is 0")
	}
	if os.Geteuid() == 0 {
		return nil
	}
	if read("/proc/sys/kernel/unprivileged_userns_clone") == "0" {
		return errors.New("kernel.unprivileged_userns_clone is 0 (run: sudo sysctl kernel.unprivileged_userns_clone=1)")
	}
	if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1" {
		return errors.New("AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns=1); allow them for the broker binary with an AppArmor profile, or set the sysctl to 0")
	}
	return nil
}
