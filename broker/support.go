package broker

import (
	"errors"
	"fmt"

	seccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/internal/launch"
	"github.com/sandkit/sandkit/internal/lockdownplan"
	"github.com/sandkit/sandkit/policy"
)

// checkSupport fails early, with the layer named, when the kernel lacks
// something p requires and p does not allow running without it. The
// renderer checks again as it applies each layer (and fails the same way);
// this is the cheap, clear first answer. For the user namespace, which
// distributions and containers restrict in ways no setting fully tells,
// it asks the kernel: it creates one (see probeUserNamespace).
func checkSupport(p *policy.Policy) error {
	var errs []error
	need := func(layer policy.Layer, err error) {
		if err != nil && !p.Degradable(layer) {
			errs = append(errs, &policy.UnavailableError{Layer: layer, Err: err})
		}
	}
	if p.Namespaces.User {
		need(policy.LayerUserNS, probeUserNamespace(p.Namespaces.Mount))
	}
	abi, abiErr := lockdownplan.LandlockABIVersion()
	landlockAt := func(layer policy.Layer) error {
		min := launch.LandlockABI(layer)
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
