package broker

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sandkit/sandkit/policy"
)

// ExitReason classifies why a renderer is gone.
type ExitReason string

// Every way a renderer can end. Callers branch on these through
// errors.As(err, &*ExitError) and ExitError.Reason.
const (
	ExitClean       ExitReason = "clean exit"
	ExitCrash       ExitReason = "crashed"
	ExitViolation   ExitReason = "sandbox violation"
	ExitCPULimit    ExitReason = "cpu limit"
	ExitMemoryLimit ExitReason = "memory limit"
	ExitThreadLimit ExitReason = "thread limit"
	ExitTimeout     ExitReason = "wall-clock timeout"
	ExitBadMessage  ExitReason = "bad message"
	// ExitBrokerLimit: the renderer made the broker hold or spend more
	// than the fixed share one renderer may have (replies it does not
	// read, datagrams, log output). Detail names the bound.
	ExitBrokerLimit    ExitReason = "broker limit"
	ExitLockdownFailed ExitReason = "lockdown failed"
	ExitReleased       ExitReason = "released"
	ExitIdle           ExitReason = "idle timeout"
	ExitShutdown       ExitReason = "broker shutdown"
)

// ErrRendererGone is matched (errors.Is) by every *ExitError.
var ErrRendererGone = errors.New("renderer gone")

// ExitError reports the end of a renderer. In-flight and later calls to
// that renderer fail with it, and the broker emits it as an event.
type ExitError struct {
	Origin   string
	Document string
	PID      int
	Reason   ExitReason
	// Detail says more: the signal, the exit status, the limit, the
	// protocol violation, the last line the renderer logged.
	Detail string
	// Syscall and Args are set for ExitViolation reported by the
	// monitor: the disallowed call the renderer attempted.
	Syscall string
	Args    []uint64
	// Layer names the isolation layer that could not be applied, for
	// ExitLockdownFailed.
	Layer policy.Layer
	// Lifetime is how long the renderer ran.
	Lifetime time.Duration
	// PeakRSS is the renderer's resident memory at its peak, in bytes,
	// as the kernel reported it when the broker reaped the renderer
	// (rusage ru_maxrss); 0 if unknown.
	PeakRSS uint64
}

func (e *ExitError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "renderer %d for %q", e.PID, e.Origin)
	if e.Document != "" {
		fmt.Fprintf(&b, " (document %q)", e.Document)
	}
	switch e.Reason {
	case ExitClean, ExitReleased, ExitShutdown, ExitIdle:
		b.WriteString(" ended: ")
	default:
		b.WriteString(" killed: ")
	}
	b.WriteString(e.Description())
	return b.String()
}

// Description is the end without the renderer it happened to: the
// reason, the syscall with its arguments, the detail. For example
// "sandbox violation socket(0x2, 0x1, 0x0, 0x0, 0x0, 0x0): disallowed by
// the seccomp policy". Short leaves the arguments and the detail out.
func (e *ExitError) Description() string {
	var b strings.Builder
	b.WriteString(string(e.Reason))
	if e.Syscall != "" {
		fmt.Fprintf(&b, " %s(", e.Syscall)
		for i, a := range e.Args {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%#x", a)
		}
		b.WriteString(")")
	}
	if e.Detail != "" {
		fmt.Fprintf(&b, ": %s", e.Detail)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrRendererGone) true for every ExitError.
func (e *ExitError) Is(target error) bool { return target == ErrRendererGone }

// Short is the reason as an application would print it after "killed: ",
// for example "sandbox violation ptrace" or "memory limit".
func (e *ExitError) Short() string {
	if e.Syscall != "" {
		return string(e.Reason) + " " + e.Syscall
	}
	return string(e.Reason)
}
