// Package learn writes a renderer's seccomp policy from sample inputs,
// and checks a policy against them.
//
// Learn runs the samples through the program's own broker in learn mode
// (broker.Config.Learn): every layer is in force, but a syscall outside
// the allowlist is recorded and let through instead of killing the
// renderer, so one run sees everything the samples need. The result is a
// minimal policy in the text format, each syscall annotated with its
// count and argument shapes, for a person to review. Check replays the
// samples under a policy, enforcing, and reports every violation by
// syscall name: a learned policy passes with zero.
//
// Learn mode is not a sandbox: give it trusted samples only, never
// untrusted input.
//
// A Go renderer is the program's own executable, and only the program
// knows how to drive it (its methods, what it asks of the broker), so the
// program runs the samples itself, through the code it uses in
// production, with a broker configured by this package: see Samples. A
// program exposes that as a subcommand with Requested and Command, which
// is what `sandkit learn` and `sandkit check` (cmd/sandkit) run.
package learn

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/policy"
)

// Samples runs a program's sample inputs through its own broker-side
// code. It must apply configure to the broker.Config of every broker it
// makes, last, just before broker.New, and close them before it returns.
// It returns the program's own verdict on the samples: hostile samples
// may fail by design, which is no failure of learning or checking.
type Samples func(ctx context.Context, configure func(*broker.Config)) error

// Result is what Learn learned.
type Result struct {
	// Policy is the base policy with Seccomp.Allow replaced by what the
	// samples used and a policy can allow.
	Policy *policy.Policy
	// Uses are the syscalls the samples made outside the base
	// allowlist, the most frequent first.
	Uses []policy.SyscallUse
	// Refused are the uses no policy can allow (policy.CanAllow): the
	// samples got EPERM for them, and a policy that runs the program
	// as it stands does not exist.
	Refused []policy.SyscallUse
	// Text is Policy in the text format, annotated (policy.FormatLearned).
	Text []byte
	// Renderers counts the renderers that reported ready in learn mode.
	Renderers int
	// Layers are the layers the first of them reported: seccomp not in
	// force, learning (broker.LearnDetail).
	Layers policy.Status
	// Overflow and Withdrawn count the calls the Learner could not name
	// (broker.Learner.Unrecorded). Nonzero, the policy may lack a
	// syscall: Command warns.
	Overflow, Withdrawn uint64
	// SamplesErr is what the samples returned.
	SamplesErr error
}

// ErrNotConfigured means the samples made no renderer under the broker
// configuration they were given: nothing was learned or checked, and
// saying otherwise would be a silent pass.
var ErrNotConfigured = errors.New("learn: the samples started no renderer with the configuration they were given")

// Learn runs the samples in learn mode under base with its Seccomp.Allow
// emptied, so that every syscall beyond the base allowlist is recorded,
// and returns the minimal policy that allows them.
func Learn(ctx context.Context, base *policy.Policy, run Samples) (*Result, error) {
	p := base.Clone()
	p.Seccomp.Allow = nil
	lr := broker.NewLearner()
	var ready counter
	err := run(ctx, func(c *broker.Config) {
		c.Policy = p.Clone()
		c.Learn = lr
		c.OnEvent = chain(c.OnEvent, func(e broker.Event) {
			if e.Kind == broker.EventReady {
				ready.ready(e.Layers)
			}
		})
	})
	if ready.n() == 0 {
		return nil, errors.Join(ErrNotConfigured, err)
	}
	uses := lr.Uses()
	learned, refused := policy.Learned(p, uses)
	overflow, withdrawn := lr.Unrecorded()
	return &Result{
		Policy: learned, Uses: uses, Refused: refused,
		Text:      policy.FormatLearned(learned, uses),
		Renderers: ready.n(), Layers: ready.firstLayers(), Overflow: overflow, Withdrawn: withdrawn,
		SamplesErr: err,
	}, nil
}

// CheckResult is what Check saw.
type CheckResult struct {
	// Violations are the exits of renderers the violation monitor
	// killed (broker.ExitViolation), each naming its syscall.
	Violations []*broker.ExitError
	// Renderers counts the renderers that reported ready.
	Renderers int
	// Layers are the layers the first of them reported.
	Layers     policy.Status
	SamplesErr error
}

// Check runs the samples under p, enforcing, and reports every renderer
// the violation monitor killed.
func Check(ctx context.Context, p *policy.Policy, run Samples) (*CheckResult, error) {
	var ready, violations counter
	err := run(ctx, func(c *broker.Config) {
		c.Policy = p.Clone()
		c.Learn = nil
		c.OnEvent = chain(c.OnEvent, func(e broker.Event) {
			switch {
			case e.Kind == broker.EventReady:
				ready.ready(e.Layers)
			case e.Kind == broker.EventExited && e.Err != nil && e.Err.Reason == broker.ExitViolation:
				violations.add(e.Err)
			}
		})
	})
	if ready.n() == 0 {
		return nil, errors.Join(ErrNotConfigured, err)
	}
	return &CheckResult{Violations: violations.all(), Renderers: ready.n(), Layers: ready.firstLayers(), SamplesErr: err}, nil
}

// chain calls a program's own event hook, if any, and then f.
func chain(prev, f func(broker.Event)) func(broker.Event) {
	if prev == nil {
		return f
	}
	return func(e broker.Event) { prev(e); f(e) }
}

// counter counts events from the broker's goroutines, keeping the exits
// it is given.
type counter struct {
	mu     sync.Mutex
	count  int
	exits  []*broker.ExitError
	layers policy.Status // of the first ready event
}

func (c *counter) ready(layers policy.Status) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.count == 0 {
		c.layers = layers
	}
	c.count++
}

func (c *counter) firstLayers() policy.Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.layers
}

func (c *counter) add(e *broker.ExitError) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.count++
	if e != nil {
		c.exits = append(c.exits, e)
	}
}

func (c *counter) n() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.count
}

func (c *counter) all() []*broker.ExitError {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*broker.ExitError(nil), c.exits...)
}

// Summary is one line about a check, for people.
func (r *CheckResult) Summary() string {
	return fmt.Sprintf("%d renderers, %d violations", r.Renderers, len(r.Violations))
}
