package policy

import (
	"fmt"
	"strings"
)

// Layer names one isolation mechanism. Names are stable: they appear in
// policies (allow_degraded), in logs, and in the status a renderer reports.
type Layer string

// The layers a policy can ask for, in the order a renderer applies them.
const (
	LayerUserNS         Layer = "user-namespace"
	LayerMountNS        Layer = "mount-namespace"
	LayerPIDNS          Layer = "pid-namespace"
	LayerNetNS          Layer = "net-namespace"
	LayerIPCNS          Layer = "ipc-namespace"
	LayerUTSNS          Layer = "uts-namespace"
	LayerCgroupNS       Layer = "cgroup-namespace"
	LayerRlimits        Layer = "rlimits"
	LayerNoNewPrivs     Layer = "no-new-privs"
	LayerCapabilities   Layer = "capabilities-dropped"
	LayerLandlockFS     Layer = "landlock-filesystem"
	LayerLandlockNet    Layer = "landlock-network"
	LayerLandlockScope  Layer = "landlock-scope"
	LayerSeccomp        Layer = "seccomp"
	LayerSeccompMonitor Layer = "seccomp-monitor"
	LayerCgroup         Layer = "cgroup"
)

// AllLayers returns every layer name, in lockdown order.
func AllLayers() []Layer {
	return []Layer{
		LayerUserNS, LayerMountNS, LayerPIDNS, LayerNetNS, LayerIPCNS, LayerUTSNS, LayerCgroupNS,
		LayerRlimits, LayerNoNewPrivs, LayerCapabilities,
		LayerLandlockFS, LayerLandlockNet, LayerLandlockScope,
		LayerSeccomp, LayerSeccompMonitor, LayerCgroup,
	}
}

// LayerStatus says whether one layer is in force in a renderer, and how.
type LayerStatus struct {
	Layer  Layer
	Active bool
	// Detail is a short human-readable note: the Landlock ABI in use, the
	// reason a degraded layer is off, and so on.
	Detail string
}

// Status is the set of layers in force in one renderer.
type Status []LayerStatus

// Active reports whether layer l is in force.
func (s Status) Active(l Layer) bool {
	for _, ls := range s {
		if ls.Layer == l {
			return ls.Active
		}
	}
	return false
}

// String renders the status on one line, for logs: "+seccomp -cgroup(...)".
func (s Status) String() string {
	var b strings.Builder
	for i, ls := range s {
		if i > 0 {
			b.WriteByte(' ')
		}
		if ls.Active {
			b.WriteByte('+')
		} else {
			b.WriteByte('-')
		}
		b.WriteString(string(ls.Layer))
		if ls.Detail != "" {
			fmt.Fprintf(&b, "(%s)", ls.Detail)
		}
	}
	return b.String()
}

// UnavailableError reports a requested layer that the kernel or the
// environment cannot provide, when the policy does not allow running
// without it. Spawning fails closed with this error.
type UnavailableError struct {
	Layer Layer
	Err   error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("isolation layer %s unavailable: %v (%s)", e.Layer, e.Err, e.Layer.withoutIt())
}

// withoutIt says how a policy runs without l, naming only what Validate
// accepts: a namespace cannot be degraded, only turned off.
func (l Layer) withoutIt() string {
	if !isNamespace(l) {
		return "list it in allow_degraded to run without it"
	}
	// Validate wants the user namespace under every other one, and the
	// mount namespace under the pid namespace.
	off := []Layer{l}
	switch l {
	case LayerUserNS:
		off = []Layer{LayerUserNS, LayerMountNS, LayerPIDNS, LayerNetNS, LayerIPCNS, LayerUTSNS, LayerCgroupNS}
	case LayerMountNS:
		off = []Layer{LayerMountNS, LayerPIDNS}
	}
	var b strings.Builder
	for _, n := range off {
		fmt.Fprintf(&b, " %s: false", strings.TrimSuffix(string(n), "-namespace"))
	}
	hint := "a namespace cannot be degraded; to run without it, set namespaces {" + b.String() + " } in the policy"
	if l == LayerMountNS {
		hint += " and list no read_only_paths"
	}
	return hint + ", or allow it where the renderer runs (docs/deploying.md)"
}

func (e *UnavailableError) Unwrap() error { return e.Err }
