// Package launch is what a broker and the renderer processes it starts
// agree on to start one: the argument that marks a renderer and carries
// its policy, seccomp program and constructor spec, the descriptor of the
// broker socket, the exit codes and the line a renderer leaves when its
// lockdown fails, and the Landlock ABI each layer needs. Neither side
// imports the other: both import this.
package launch

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/sandkit/sandkit/policy"
)

// Flag is the argv[1] prefix that marks a process started by a broker as
// a renderer. Arguments, not the environment, carry the policy: a
// renderer's environment is empty.
const Flag = "--sandkit-renderer="

// SocketFD is the descriptor number of the broker connection in a renderer.
const SocketFD = 3

// Exit codes of a renderer process, for the broker's classification.
const (
	ExitOK       = 0
	ExitUsage    = 64  // not started by a broker, a bad policy argument, or the program's methods failed to register
	ExitLockdown = 125 // lockdown failed; the broker has been told why
)

// LockdownFailedPrefix starts the last line a renderer writes to stderr
// before it exits with ExitLockdown: the failing step and errno, for the
// broker's report when the ready report could not say it.
const LockdownFailedPrefix = "sandkit: lockdown failed: "

// Requested reports whether args (os.Args) are those of a renderer.
func Requested(args []string) bool {
	return len(args) > 1 && strings.HasPrefix(args[1], Flag)
}

// Arg encodes p as a renderer's argv[1]: Flag, p in binary (base64url),
// when the broker compiled it "." and the seccomp program in
// seccompfilter's encoding (see seccompfilter.Program.Encode), which this
// package does not interpret, and "~" and spec, what the renderer's ELF
// constructor applies before the Go runtime starts
// (lockdownplan.EarlySpec), which the constructor cannot decode from the
// policy itself.
func Arg(p *policy.Policy, seccompProgram, spec string) (string, error) {
	raw, err := p.MarshalBinary()
	if err != nil {
		return "", err
	}
	arg := Flag + base64.RawURLEncoding.EncodeToString(raw)
	if seccompProgram != "" {
		arg += "." + seccompProgram
	}
	return arg + "~" + spec, nil
}

// ParseArg decodes what Arg made: the validated policy, the seccomp
// program ("" when the broker sent none) and the constructor's spec.
func ParseArg(arg string) (p *policy.Policy, seccompProgram, spec string, err error) {
	rest, ok := strings.CutPrefix(arg, Flag)
	if !ok {
		return nil, "", "", fmt.Errorf("renderer argument without %s", Flag)
	}
	rest, spec, hasSpec := strings.Cut(rest, "~")
	if !hasSpec {
		return nil, "", "", errors.New("no early lockdown spec")
	}
	polPart, seccompProgram, hasProg := strings.Cut(rest, ".")
	if hasProg && seccompProgram == "" {
		return nil, "", "", fmt.Errorf("renderer argument with an empty seccomp program")
	}
	raw, err := base64.RawURLEncoding.DecodeString(polPart)
	if err != nil {
		return nil, "", "", fmt.Errorf("policy: %w", err)
	}
	p = new(policy.Policy)
	if err := p.UnmarshalBinary(raw); err != nil {
		return nil, "", "", err
	}
	return p, seccompProgram, spec, nil
}

// LandlockABI returns the oldest Landlock ABI that provides layer l (1 for
// filesystem rights, 4 for TCP, 6 for scoping), or 0 for a layer that is
// not Landlock. The broker checks it up front and the renderer again as it
// applies the layer, from this one table.
func LandlockABI(l policy.Layer) int {
	switch l {
	case policy.LayerLandlockFS:
		return 1
	case policy.LayerLandlockNet:
		return 4
	case policy.LayerLandlockScope:
		return 6
	}
	return 0
}
