package broker_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/internal/testrenderer"
	"github.com/sandkit/sandkit/learn"
	"github.com/sandkit/sandkit/policy"
)

// sysinfoSamples is a program's sample run for the learn tests: one
// renderer makes sysinfo n times, outside policy.Strict's allowlist, then
// answers a ping. It reports what the attempt answered, or how the
// renderer died.
func sysinfoSamples(t *testing.T, n string, got *string) learn.Samples {
	return func(ctx context.Context, configure func(*broker.Config)) error {
		cfg := broker.Config{Policy: policy.Strict(), Logger: testLogger(t)}
		configure(&cfg)
		if raceEnabled {
			cfg.Policy.Limits.Memory = 0
		}
		b, err := broker.New(ctx, cfg)
		if err != nil {
			return err
		}
		defer b.Close()
		r, err := b.Acquire(ctx, "https://sample.example", "")
		if err != nil {
			return err
		}
		resp, _, err := broker.Call(ctx, r, testrenderer.Attempt, wrapperspb.String("sysinfo:"+n))
		if err != nil {
			return err
		}
		*got = resp.GetValue()
		_, _, err = broker.Call(ctx, r, testrenderer.Ping, wrapperspb.Bytes([]byte("alive")))
		return err
	}
}

// In learn mode a renderer that makes a syscall outside its policy is not
// killed: the syscall runs (sysinfo succeeds), the renderer serves on, its
// seccomp layer is reported not in force, and the learned policy allows
// exactly that syscall, with its count. Replayed under the learned policy
// the samples cause no violation; under the policy without it, the
// monitor kills the renderer and names the syscall.
func TestLearnModeRecordsAndLetsThrough(t *testing.T) {
	ctx := context.Background()
	var got string
	res, err := learn.Learn(ctx, policy.Strict(), sysinfoSamples(t, "7", &got))
	require.NoError(t, err)
	require.NoError(t, res.SamplesErr, "the renderer was not left alive in learn mode")
	assert.Equal(t, "ok", got, "sysinfo did not run")
	assert.Equal(t, 1, res.Renderers)
	require.Len(t, res.Uses, 1, "%+v", res.Uses)
	assert.Equal(t, "sysinfo", res.Uses[0].Name)
	assert.Equal(t, uint64(7), res.Uses[0].Count)
	require.Len(t, res.Uses[0].Shapes, 1, "one pointer argument, always the same shape")
	assert.Equal(t, policy.ShapeCount{Shape: "(ptr)", Count: 7}, res.Uses[0].Shapes[0])
	assert.Empty(t, res.Refused)
	assert.Equal(t, []string{"sysinfo"}, res.Policy.Seccomp.Allow)
	text := string(res.Text)
	assert.Contains(t, text, "seccomp {\n  # sysinfo: 7 calls\n  #   7× sysinfo(ptr)\n  allow: \"sysinfo\"\n}\n", text)

	// The text is the policy: Parse reads back exactly what was learned.
	learned, err := policy.Parse(res.Text)
	require.NoError(t, err, text)
	assert.Equal(t, res.Policy, learned)

	check, err := learn.Check(ctx, learned, sysinfoSamples(t, "7", &got))
	require.NoError(t, err)
	require.NoError(t, check.SamplesErr)
	assert.Empty(t, check.Violations)
	assert.Equal(t, 1, check.Renderers)

	check, err = learn.Check(ctx, policy.Strict(), sysinfoSamples(t, "7", &got))
	require.NoError(t, err)
	var ee *broker.ExitError
	require.ErrorAs(t, check.SamplesErr, &ee, "the renderer survived sysinfo under the strict policy")
	require.Len(t, check.Violations, 1)
	v := check.Violations[0]
	assert.Equal(t, broker.ExitViolation, v.Reason)
	assert.Equal(t, "sysinfo", v.Syscall)
	assert.Equal(t, ee.PID, v.PID)
}

// A renderer in learn mode reports its seccomp layer not in force, in
// words nobody can take for a sandbox, on the renderer and in its ready
// event; the monitor is attached (it is what learns).
func TestLearnModeReportsSeccompNotEnforcing(t *testing.T) {
	var ready []policy.Status
	b := newBroker(t, policy.Strict(), func(c *broker.Config) {
		c.Learn = broker.NewLearner()
		c.OnEvent = func(e broker.Event) {
			if e.Kind == broker.EventReady {
				ready = append(ready, e.Layers)
			}
		}
	})
	r, err := b.Acquire(context.Background(), "https://a.example", "")
	require.NoError(t, err)
	layers := r.Layers()
	assert.False(t, layers.Active(policy.LayerSeccomp))
	assert.True(t, layers.Active(policy.LayerSeccompMonitor))
	assert.Contains(t, layers.String(), "-seccomp(learning (not enforcing)", layers.String())
	require.Len(t, ready, 1)
	assert.Equal(t, layers, ready[0])
}

// A syscall no policy can allow is never let through, even in learn mode:
// the renderer gets EPERM, lives on, and the syscall is reported refused.
// (Let through, PTRACE_TRACEME would make the broker the renderer's
// tracer: the renderer stops at its next signal, and the test hangs. The
// mmap attempt comes first, so that such a regression fails there.)
func TestLearnModeRefusesEscapeSurface(t *testing.T) {
	lr := broker.NewLearner()
	b := newBroker(t, policy.Strict(), func(c *broker.Config) { c.Learn = lr })
	r, err := b.Acquire(context.Background(), "https://a.example", "")
	require.NoError(t, err)
	got, err := attempt(t, r, "mmap-exec")
	require.NoError(t, err, "killed in learn mode")
	require.Equal(t, "EPERM", got, "the base allowlist's conditions were widened")
	got, err = attempt(t, r, "ptrace")
	require.NoError(t, err, "killed in learn mode")
	assert.Equal(t, "EPERM", got)
	uses := lr.Uses()
	names := map[string]uint64{}
	for _, u := range uses {
		names[u.Name] = u.Count
	}
	assert.Equal(t, map[string]uint64{"ptrace": 1, "mmap": 1}, names)
	p, refused := policy.Learned(policy.Strict(), uses)
	assert.Empty(t, p.Seccomp.Allow)
	assert.Len(t, refused, 2)
	text := string(policy.FormatLearned(p, uses))
	assert.Contains(t, text, "# REFUSED: no policy can allow these")
	assert.Contains(t, text, "#   ptrace: 1 call\n")
	assert.Contains(t, text, "escape surface")
}

// A broker refuses learn mode unless every disallowed syscall would reach
// the monitor: without it, or with seccomp or the monitor allowed
// degraded, learning could silently learn less, or kill.
func TestLearnModeRefusedWithoutMonitor(t *testing.T) {
	for name, mod := range map[string]func(*policy.Policy){
		"monitor off": func(p *policy.Policy) { p.Seccomp.Monitor = false },
		"seccomp off": func(p *policy.Policy) {
			p.Seccomp.Enabled, p.Seccomp.Monitor, p.Seccomp.DenyExecMemory = false, false, false
		},
		"monitor degradable": func(p *policy.Policy) { p.AllowDegraded = []policy.Layer{policy.LayerSeccompMonitor} },
		"seccomp degradable": func(p *policy.Policy) { p.AllowDegraded = []policy.Layer{policy.LayerSeccomp} },
	} {
		t.Run(name, func(t *testing.T) {
			p := policy.Strict()
			mod(p)
			_, err := broker.New(context.Background(), broker.Config{Policy: p, Learn: broker.NewLearner()})
			require.ErrorIs(t, err, broker.ErrLearnUnavailable)
			// The same policy without learn mode is a valid broker.
			b, err := broker.New(context.Background(), broker.Config{Policy: p})
			require.NoError(t, err)
			b.Close()
		})
	}
}

// Learn fails, rather than pass with nothing learned, when the samples
// never start a renderer under the configuration it gave them.
func TestLearnRefusesSamplesThatIgnoreIt(t *testing.T) {
	ignoring := func(ctx context.Context, _ func(*broker.Config)) error {
		b := newBroker(t, policy.Strict()) // not configured: enforcing
		r, err := b.Acquire(ctx, "https://a.example", "")
		if err != nil {
			return err
		}
		_, err = attempt(t, r, "sysinfo")
		return err
	}
	_, err := learn.Learn(context.Background(), policy.Strict(), ignoring)
	require.ErrorIs(t, err, learn.ErrNotConfigured)
	var ee *broker.ExitError
	require.True(t, errors.As(err, &ee) && ee.Reason == broker.ExitViolation, "%v", err)
	_, err = learn.Check(context.Background(), policy.Strict(), ignoring)
	require.ErrorIs(t, err, learn.ErrNotConfigured)
	assert.True(t, strings.Contains(err.Error(), "sysinfo"), "%v", err)
}
