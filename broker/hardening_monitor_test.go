package broker_test

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/policy"
)

// exitOf runs action in a fresh renderer of b and returns how it ended:
// the renderer must not survive it.
func exitOf(t *testing.T, b *broker.Broker, origin, action string) *broker.ExitError {
	t.Helper()
	r, err := b.Acquire(context.Background(), origin, "")
	require.NoError(t, err)
	got, err := attempt(t, r, action)
	var ee *broker.ExitError
	require.ErrorAs(t, err, &ee, "the renderer survived %s: %q", action, got)
	assert.Equal(t, r.PID(), ee.PID)
	return ee
}

// A renderer that floods its own thread with signals while it makes a
// disallowed syscall must be caught every time. With a handler of its own
// without SA_RESTART, a signal that withdrew the notification before the
// monitor read it returned EINTR and the renderer lived on; the filter now
// refuses new handlers (rt_sigaction with a new action), so the attempt
// ends there. With the runtime's own handlers (SA_RESTART) the kernel
// restarts the syscall after each signal, which notifies again, until the
// monitor reads it. Each race is won or lost by the scheduler, hence the
// repetitions, each in a fresh renderer.
func TestViolationInterruptedBySignalIsCaught(t *testing.T) {
	noPIDNS := policy.Strict()
	noPIDNS.Namespaces.PID = false
	noPIDNS.Namespaces.Mount = false
	for _, tc := range []struct {
		name    string
		policy  *policy.Policy
		handler string
		syscall string
		tries   int
	}{
		{"own handler", policy.Strict(), "own", "rt_sigaction", 50},
		{"runtime handler", policy.Strict(), "runtime", "ptrace", 50},
		{"runtime handler, renderer-compiled filter", noPIDNS, "runtime", "ptrace", 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBroker(t, tc.policy)
			withdrawn := 0
			for i := range tc.tries {
				ee := exitOf(t, b, fmt.Sprintf("o%d", i), "interrupted-ptrace:"+tc.handler)
				require.Equal(t, broker.ExitViolation, ee.Reason, "try %d: %v", i, ee)
				if ee.Syscall == "" {
					// Read too late: the renderer's signal withdrew it.
					require.Equal(t, "disallowed syscall withdrawn by a signal before the monitor could read it (syscall unknown)", ee.Detail, "try %d", i)
					withdrawn++
					continue
				}
				require.Equal(t, tc.syscall, ee.Syscall, "try %d: %v", i, ee)
				if tc.syscall == "rt_sigaction" {
					require.Equal(t, uint64(unix.SIGUSR2), ee.Args[0], "try %d", i)
					require.NotZero(t, ee.Args[1], "try %d: a new action", i)
				}
			}
			t.Logf("%d tries, %d found withdrawn", tc.tries, withdrawn)
		})
	}
}

// Syscalls of another ABI than amd64's (i386 through int 0x80, x32 with
// its number bit) are architecture violations: reported as such by the
// monitor, killed by SIGSYS without it.
func TestForeignArchitectureSyscalls(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("i386 and x32 syscalls exist on amd64 only")
	}
	unmonitored := policy.Strict()
	unmonitored.Seccomp.Monitor = false
	monitored := newBroker(t, policy.Strict())
	killing := newBroker(t, unmonitored)
	noSeccomp := policy.Strict()
	noSeccomp.Seccomp.Enabled, noSeccomp.Seccomp.Monitor, noSeccomp.Seccomp.DenyExecMemory = false, false, false
	unfiltered := newBroker(t, noSeccomp)
	for _, tc := range []struct {
		abi, syscall, detail string
	}{
		{"i386", "i386:getpid", "architecture violation: i386 syscall 0x14 (getpid)"},
		{"x32", "x32:getpid", "architecture violation: x32 syscall 0x40000027 (getpid)"},
	} {
		// Without a filter the syscall works, where the kernel runs
		// that ABI at all: some hypervisors fault on int 0x80.
		r, err := unfiltered.Acquire(context.Background(), "u-"+tc.abi, "")
		require.NoError(t, err)
		got, err := attempt(t, r, "foreign-syscall:"+tc.abi)
		skip := func(t *testing.T) {
			if err != nil || got != "ok" && got != "ENOSYS" {
				t.Skipf("this kernel does not run %s syscalls: %q, %v", tc.abi, got, err)
			}
		}
		t.Run(tc.abi+"/monitored", func(t *testing.T) {
			skip(t)
			ee := exitOf(t, monitored, "m-"+tc.abi, "foreign-syscall:"+tc.abi)
			assert.Equal(t, broker.ExitViolation, ee.Reason, "%v", ee)
			assert.Equal(t, tc.syscall, ee.Syscall)
			assert.Equal(t, tc.detail, ee.Detail)
		})
		t.Run(tc.abi+"/unmonitored", func(t *testing.T) {
			skip(t)
			ee := exitOf(t, killing, "k-"+tc.abi, "foreign-syscall:"+tc.abi)
			assert.Equal(t, broker.ExitViolation, ee.Reason, "%v", ee)
			assert.Empty(t, ee.Syscall)
			assert.Equal(t, "disallowed syscall (SIGSYS; the violation monitor is off)", ee.Detail)
		})
	}
}

// countingHandler counts the bytes of the renderer log lines the broker
// forwards (each line and its newline) instead of logging them, and
// passes every other record on.
type countingHandler struct {
	slog.Handler
	n *atomic.Int64
}

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message != "renderer log" {
		return h.Handler.Handle(ctx, r)
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "line" {
			h.n.Add(int64(len(a.Value.String()) + 1))
		}
		return true
	})
	return nil
}

func (h countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return countingHandler{h.Handler.WithAttrs(as), h.n}
}

func (h countingHandler) WithGroup(name string) slog.Handler {
	return countingHandler{h.Handler.WithGroup(name), h.n}
}

// A renderer that writes to stderr in a tight loop is killed once it
// passes the broker's log budget (1 MiB at once, 256 KiB/s sustained,
// broker/spawn.go), and the broker reads no more of it than that. Before
// the budget, only the call timeout ended the flood.
func TestLogFloodIsBounded(t *testing.T) {
	const (
		burst = 1 << 20
		rate  = 256 << 10
	)
	var read atomic.Int64
	b := newBroker(t, policy.Strict(), func(c *broker.Config) {
		c.Logger = slog.New(countingHandler{testLogger(t).Handler(), &read})
		c.CallTimeout = 10 * time.Second
	})
	ee := exitOf(t, b, "o", "log-flood")
	assert.Equal(t, broker.ExitBrokerLimit, ee.Reason, "%v", ee)
	assert.Equal(t, "log output over 1024 KiB at once or 256 KiB/s sustained", ee.Detail)
	bound := burst + int64(ee.Lifetime.Seconds()*rate)
	t.Logf("read %d bytes of log in %v; bound %d", read.Load(), ee.Lifetime, bound)
	assert.LessOrEqual(t, read.Load(), bound)
	assert.GreaterOrEqual(t, read.Load(), int64(burst-maxLine), "killed before the budget was spent")
}

// maxLine is the longest line the flood writes.
const maxLine = 128

// The budget leaves room for ordinary last words: a crash after a long
// dump is still classified by its fatal line.
func TestLongLastWordsFitTheLogBudget(t *testing.T) {
	b := newBroker(t, policy.Strict())
	ee := exitOf(t, b, "o", "long-last-words")
	// The fatal line was read after the dump: the claim it makes is
	// quoted (uncorroborated, so not taken for the memory limit).
	assert.Equal(t, broker.ExitCrash, ee.Reason, "%v", ee)
	assert.Contains(t, ee.Detail, "the renderer claimed: fatal error: runtime: out of memory")
}

// A renderer that fails its lockdown says which step and errno, whether
// the ready report gets through or only its last line on stderr does; a
// renderer that says nothing is reported as such, never with an empty
// detail.
func TestLockdownFailureNamesStepAndErrno(t *testing.T) {
	t.Run("ready report", func(t *testing.T) {
		p := policy.Strict()
		p.Filesystem.ReadOnlyPaths = []string{"/nonexistent-sandkit-test"}
		b := newBroker(t, p)
		_, err := b.Acquire(context.Background(), "o", "")
		var ee *broker.ExitError
		require.ErrorAs(t, err, &ee)
		assert.Equal(t, broker.ExitLockdownFailed, ee.Reason)
		assert.Equal(t, policy.LayerMountNS, ee.Layer)
		assert.Equal(t, "mount-namespace: read-only path /nonexistent-sandkit-test: no such file or directory (ENOENT)", ee.Detail)
		var ue *policy.UnavailableError
		require.ErrorAs(t, err, &ue)
		assert.Equal(t, policy.LayerMountNS, ue.Layer)
	})
	b := newBroker(t, policy.Strict())
	for _, tc := range []struct {
		name, action, detail string
	}{
		{"last line", "exit-lockdown:early lockdown step 3 (lock securebits): operation not permitted (EPERM)", "early lockdown step 3 (lock securebits): operation not permitted (EPERM)"},
		{"nothing said", "exit-lockdown", "exit status 125 with no ready report and nothing on stderr"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ee := exitOf(t, b, tc.name, tc.action)
			assert.Equal(t, broker.ExitLockdownFailed, ee.Reason, "%v", ee)
			assert.Equal(t, tc.detail, ee.Detail)
		})
	}
}
