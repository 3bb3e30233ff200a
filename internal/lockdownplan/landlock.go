// Package lockdownplan says what the lockdown of a policy comes to on
// this kernel, for the broker, which passes it on or applies it, and for
// the renderer, which checks and reports it: the Landlock rights of each
// layer at the kernel's ABI, the spec of the renderer's ELF constructor
// (EarlySpec) and the renderer's argv[1] that carries it (RendererArg),
// and the whole lockdown of a foreign program (PlanForeign).
package lockdownplan

import (
	"encoding/hex"
	"errors"
	"fmt"
	"math/bits"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/internal/launch"
	"github.com/sandkit/sandkit/internal/seccompfilter"
	"github.com/sandkit/sandkit/policy"
)

// Rights is what a Landlock ruleset handles, in the kernel's bits
// (linux/landlock.h): filesystem access rights, network access rights and
// scopes.
type Rights struct {
	FS, Net, Scoped uint64
}

// NewestABI is the newest Landlock ABI whose rights abiRights knows. A
// newer kernel is handled at this one; add the next ABI's rights when the
// kernel grows one (go-landlock's table is the test's reference).
const NewestABI = 11

// abiRights returns every right Landlock handles at abi. ABIs 7, 8 and 11
// added flags of landlock_restrict_self, not rights.
func abiRights(abi int) Rights {
	if abi < 1 {
		return Rights{}
	}
	// ABI 1: the 13 filesystem rights from execute to make_sym.
	r := Rights{FS: unix.LANDLOCK_ACCESS_FS_REFER - 1}
	for _, since := range []struct {
		abi int
		add Rights
	}{
		{2, Rights{FS: unix.LANDLOCK_ACCESS_FS_REFER}},
		{3, Rights{FS: unix.LANDLOCK_ACCESS_FS_TRUNCATE}},
		{4, Rights{Net: unix.LANDLOCK_ACCESS_NET_BIND_TCP | unix.LANDLOCK_ACCESS_NET_CONNECT_TCP}},
		{5, Rights{FS: unix.LANDLOCK_ACCESS_FS_IOCTL_DEV}},
		{6, Rights{Scoped: unix.LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | unix.LANDLOCK_SCOPE_SIGNAL}},
		{9, Rights{FS: unix.LANDLOCK_ACCESS_FS_RESOLVE_UNIX}},
		{10, Rights{Net: unix.LANDLOCK_ACCESS_NET_BIND_UDP | unix.LANDLOCK_ACCESS_NET_CONNECT_SEND_UDP}},
	} {
		if abi >= since.abi {
			r.FS |= since.add.FS
			r.Net |= since.add.Net
			r.Scoped |= since.add.Scoped
		}
	}
	return r
}

// LandlockABIVersion asks the kernel for its Landlock ABI
// (LANDLOCK_CREATE_RULESET_VERSION): an error where Landlock is missing
// or disabled.
func LandlockABIVersion() (int, error) {
	v, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	if errno != 0 {
		return -1, errno
	}
	return int(v), nil
}

// LandlockRights returns the Landlock ABI the renderer applies on a kernel
// whose ABI is kernel, and every right of that ABI: the kernel's own, or,
// on a kernel newer than NewestABI, NewestABI.
func LandlockRights(kernel int) (int, Rights) {
	abi := min(max(kernel, 0), NewestABI)
	return abi, abiRights(abi)
}

// LandlockDetail says, for a layer's status, which ABI was applied and
// what it handles. kernel is the kernel's ABI, named when it is newer than
// the one applied.
func LandlockDetail(layer policy.Layer, abi, kernel int, handled Rights) string {
	d := fmt.Sprintf("ABI %d", abi)
	if kernel != abi {
		d += fmt.Sprintf(" (the kernel has %d)", kernel)
	}
	switch layer {
	case policy.LayerLandlockFS:
		d += fmt.Sprintf(": %d filesystem rights", bits.OnesCount64(handled.FS))
	case policy.LayerLandlockNet:
		d += ": " + netRightNames(handled.Net)
		if handled.Net&unix.LANDLOCK_ACCESS_NET_BIND_UDP == 0 {
			d += "; no UDP before ABI 10"
		}
	case policy.LayerLandlockScope:
		d += ": " + scopeNames(handled.Scoped)
	}
	return d
}

// netRightNames names a set of Landlock network access rights.
func netRightNames(set uint64) string {
	return rightNames(set, "bind_tcp", "connect_tcp", "bind_udp", "connect_send_udp")
}

// scopeNames names a set of Landlock scopes.
func scopeNames(set uint64) string {
	return rightNames(set, "abstract_unix_socket", "signal")
}

// rightNames lists the bits of set by name, names[i] for bit i, as
// go-landlock prints a set: "{bind_tcp,connect_tcp}", "∅" for none.
func rightNames(set uint64, names ...string) string {
	if set == 0 {
		return "∅"
	}
	var b strings.Builder
	for i := range 64 {
		if set&(1<<i) == 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		if i < len(names) {
			b.WriteString(names[i])
		} else {
			fmt.Fprintf(&b, "1<<%d", i)
		}
	}
	return "{" + b.String() + "}"
}

// LandlockStep is what the lockdown does for one Landlock layer: skip it
// (disabled by the policy), record err (unavailable on this kernel), or
// apply it (pending).
type LandlockStep struct {
	Layer   policy.Layer
	Skip    bool
	Err     error
	Pending bool
}

// LandlockPlan handles every right of the applied ABI (see LandlockRights)
// for each kind p requests (filesystem, network, scope). The constructor
// applies handled, with no rule granting any right except read access to
// the policy's read-only paths; the broker computes the same plan for the
// constructor's spec (EarlySpec), and the renderer again for its report.
func LandlockPlan(p *policy.Policy) (steps []LandlockStep, handled Rights, abi, kernel int) {
	kernel, abiErr := LandlockABIVersion()
	if abiErr == nil && kernel < 1 {
		abiErr = errors.New("landlock ABI 0")
	}
	abi, all := LandlockRights(kernel)
	want := func(on bool, layer policy.Layer, apply func()) {
		minABI := launch.LandlockABI(layer)
		switch {
		case !on:
			steps = append(steps, LandlockStep{Layer: layer, Skip: true})
		case abiErr != nil:
			steps = append(steps, LandlockStep{Layer: layer, Err: fmt.Errorf("landlock unavailable: %w", abiErr)})
		case abi < minABI:
			steps = append(steps, LandlockStep{Layer: layer, Err: fmt.Errorf("landlock ABI %d is older than %d", abi, minABI)})
		default:
			apply()
			steps = append(steps, LandlockStep{Layer: layer, Pending: true})
		}
	}
	want(p.Filesystem.Landlock, policy.LayerLandlockFS, func() { handled.FS = all.FS })
	want(p.Network.Landlock, policy.LayerLandlockNet, func() { handled.Net = all.Net })
	want(p.Scope.Landlock, policy.LayerLandlockScope, func() { handled.Scoped = all.Scoped })
	return steps, handled, abi, kernel
}

// EarlySpec is the constructor's part of p (see renderer/early_lockdown.c):
// "FLAGS:FS:NET:SCOPED[:PATH...]", FLAGS a subset of "mhl" (empty root,
// hostname, Landlock), then the Landlock ruleset's handled rights in hex
// and each read-only path hex-encoded. The broker appends it to argv[1]
// after '~' (see RendererArg); the renderer recomputes it and refuses to
// start if the two differ.
func EarlySpec(p *policy.Policy) (string, error) {
	steps, handled, _, _ := LandlockPlan(p)
	var flags string
	if p.Namespaces.Mount {
		flags += "m"
	}
	if p.Namespaces.UTS {
		flags += "h"
	}
	for _, st := range steps {
		if st.Pending {
			flags += "l"
			break
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s:%x:%x:%x", flags, handled.FS, handled.Net, handled.Scoped)
	for _, path := range p.Filesystem.ReadOnlyPaths {
		if !strings.HasPrefix(path, "/") || strings.ContainsRune(path, 0) {
			return "", fmt.Errorf("read-only path %q: not absolute", path)
		}
		b.WriteString(":" + hex.EncodeToString([]byte(path)))
	}
	return b.String(), nil
}

// RendererArg encodes p as the argument that marks a renderer process
// (launch.Arg), which the broker puts in argv[1]. When every renderer of p
// will be pid 1 of its own pid namespace, the argument also carries p's
// seccomp program, compiled here once instead of in every renderer (about
// 0.35 ms of a spawn: libseccomp builds and generates the program on each
// load). It ends with what the renderer's ELF constructor applies before
// the Go runtime starts (EarlySpec), which the constructor cannot decode
// from the policy itself.
func RendererArg(p *policy.Policy) (string, error) {
	prog, err := seccompfilter.Precompile(p)
	if err != nil {
		return "", err
	}
	var encoded string
	if prog != nil {
		encoded = prog.Encode()
	}
	spec, err := EarlySpec(p)
	if err != nil {
		return "", err
	}
	return launch.Arg(p, encoded, spec)
}
