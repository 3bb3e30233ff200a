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

	"github.com/landlock-lsm/go-landlock/landlock"
	llsys "github.com/landlock-lsm/go-landlock/landlock/syscall"

	"github.com/sandkit/sandkit/internal/launch"
	"github.com/sandkit/sandkit/internal/seccompfilter"
	"github.com/sandkit/sandkit/policy"
)

// LandlockConfig returns the Landlock ABI the renderer applies on a kernel
// whose ABI is kernel, and go-landlock's configuration for it, which
// handles every right of that ABI: the kernel's own, or, on a kernel newer
// than go-landlock, the newest go-landlock knows (V11 in v0.11.2; add the
// next one here when go-landlock does).
func LandlockConfig(kernel int) (int, landlock.Config) {
	configs := []landlock.Config{{}, landlock.V1, landlock.V2, landlock.V3, landlock.V4, landlock.V5,
		landlock.V6, landlock.V7, landlock.V8, landlock.V9, landlock.V10, landlock.V11}
	abi := min(max(kernel, 0), len(configs)-1)
	return abi, configs[abi]
}

// LandlockDetail says, for a layer's status, which ABI was applied and
// what it handles. kernel is the kernel's ABI, named when it is newer than
// the one applied.
func LandlockDetail(layer policy.Layer, abi, kernel int, cfg landlock.Config) string {
	d := fmt.Sprintf("ABI %d", abi)
	if kernel != abi {
		d += fmt.Sprintf(" (the kernel has %d)", kernel)
	}
	switch layer {
	case policy.LayerLandlockFS:
		d += fmt.Sprintf(": %d filesystem rights", bits.OnesCount64(uint64(cfg.HandledAccessFS)))
	case policy.LayerLandlockNet:
		d += ": " + cfg.HandledAccessNet.String()
		if cfg.HandledAccessNet&llsys.AccessNetBindUDP == 0 {
			d += "; no UDP before ABI 10"
		}
	case policy.LayerLandlockScope:
		d += ": " + cfg.Scoped.String()
	}
	return d
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

// LandlockPlan handles every right of the applied ABI (see LandlockConfig)
// for each kind p requests (filesystem, network, scope). The constructor
// applies cfg, with no rule granting any right except read access to the
// policy's read-only paths; the broker computes the same plan for the
// constructor's spec (EarlySpec), and the renderer again for its report.
func LandlockPlan(p *policy.Policy) (steps []LandlockStep, cfg landlock.Config, abi, kernel int) {
	kernel, abiErr := llsys.LandlockGetABIVersion()
	if abiErr == nil && kernel < 1 {
		abiErr = errors.New("landlock ABI 0")
	}
	abi, full := LandlockConfig(kernel)
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
	want(p.Filesystem.Landlock, policy.LayerLandlockFS, func() { cfg.HandledAccessFS = full.HandledAccessFS })
	want(p.Network.Landlock, policy.LayerLandlockNet, func() { cfg.HandledAccessNet = full.HandledAccessNet })
	want(p.Scope.Landlock, policy.LayerLandlockScope, func() { cfg.Scoped = full.Scoped })
	return steps, cfg, abi, kernel
}

// EarlySpec is the constructor's part of p (see renderer/early_lockdown.c):
// "FLAGS:FS:NET:SCOPED[:PATH...]", FLAGS a subset of "mhl" (empty root,
// hostname, Landlock), then the Landlock ruleset's handled rights in hex
// and each read-only path hex-encoded. The broker appends it to argv[1]
// after '~' (see RendererArg); the renderer recomputes it and refuses to
// start if the two differ.
func EarlySpec(p *policy.Policy) (string, error) {
	steps, cfg, _, _ := LandlockPlan(p)
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
	fmt.Fprintf(&b, "%s:%x:%x:%x", flags, uint64(cfg.HandledAccessFS), uint64(cfg.HandledAccessNet), uint64(cfg.Scoped))
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
