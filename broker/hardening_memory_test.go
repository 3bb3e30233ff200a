package broker_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/policy"
)

// procField returns the value, in bytes, of a "<name>: <n> kB" line of
// /proc/<pid>/status, as the broker's side sees it.
func procField(t *testing.T, pid int, name string) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			require.NoError(t, err, line)
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", name, pid)
	return 0
}

// addressSpaceLimit returns the renderer's RLIMIT_AS from /proc/<pid>/limits.
func addressSpaceLimit(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Max address space"); ok {
			f := strings.Fields(v)
			require.Len(t, f, 3, line)
			n, err := strconv.ParseUint(f[0], 10, 64)
			require.NoError(t, err, "address space unlimited: %s", line)
			return n
		}
	}
	t.Fatalf("no address space line in /proc/%d/limits", pid)
	return 0
}

// TestMemoryLimitCountsEveryMapping: the memory limit holds for every
// kind of memory a renderer can map, not only its heap. Shared anonymous
// mappings and memfds (mapped, then their descriptor closed, which also
// slips past RLIMIT_NOFILE) are not private writable memory and escape
// RLIMIT_DATA; RLIMIT_AS counts them. Each attacker touches up to four
// times its limit, so a limit that does not hold ends the action with an
// answer instead of an exit.
//
// The peak is the kernel's (rusage ru_maxrss at the reap), read by the
// broker. These attackers keep the runtime's start-up reservations, so
// what they can touch beyond Limits.Memory is their resident memory at
// lockdown plus the part of the heap arena the runtime reserved at start
// (64 MiB on amd64) that the Go heap falls back to; an attacker that
// unmaps the reservations could reach the whole address-space limit,
// which the test checks is Memory plus the address space at lockdown.
func TestMemoryLimitCountsEveryMapping(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's shadow memory cannot live under a memory limit; make test runs it without -race (NORACE_TESTS in the Makefile)")
	}
	const (
		limit = 256 << 20
		arena = 64 << 20 // one Go heap arena, amd64
	)
	for _, action := range []string{
		"hog",
		fmt.Sprintf("shm-anon:%d", 4*limit),
		fmt.Sprintf("shm-memfd:%d", 4*limit),
	} {
		t.Run(action, func(t *testing.T) {
			p := policy.Strict()
			p.Limits.Memory = limit
			p.Limits.SharedMemory = 4 * limit // the broker's memfds: RLIMIT_AS, not this budget, must stop the attack
			b := newBroker(t, p)
			r, err := b.Acquire(context.Background(), "o", "")
			require.NoError(t, err)
			idleSize := procField(t, r.PID(), "VmSize")
			idleRSS := procField(t, r.PID(), "VmRSS")
			as := addressSpaceLimit(t, r.PID())
			assert.LessOrEqual(t, as, idleSize+limit, "RLIMIT_AS is the address space at lockdown plus the limit")
			assert.Greater(t, as, uint64(limit))

			res, err := attempt(t, r, action)
			var ee *broker.ExitError
			require.ErrorAs(t, err, &ee, "the renderer answered %q", res)
			assert.Equal(t, broker.ExitMemoryLimit, ee.Reason, "%v", ee)
			assert.NotZero(t, ee.PeakRSS)
			assert.LessOrEqual(t, ee.PeakRSS, uint64(limit)+arena+idleRSS, "resident peak %d MiB", ee.PeakRSS>>20)
			assert.Contains(t, ee.Detail, "of the 256 MiB limit")
		})
	}
}

// TestMemoryClaimNeedsEvidence: a renderer's stderr is its own word. One
// that prints the runtime's out-of-memory line and exits as the runtime
// would, having used next to nothing, crashed: the broker's evidence (a
// resident peak far below the limit) does not back the claim, so the exit
// is not reported as the memory limit, and the claim is quoted.
func TestMemoryClaimNeedsEvidence(t *testing.T) {
	p := policy.Strict()
	p.Limits.Memory = 256 << 20
	b := newBroker(t, p)
	r, err := b.Acquire(context.Background(), "o", "")
	require.NoError(t, err)
	_, err = attempt(t, r, "claim-oom")
	var ee *broker.ExitError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, broker.ExitCrash, ee.Reason, "%v", ee)
	assert.Contains(t, ee.Detail, "exit status 2; the renderer claimed: fatal error: runtime: out of memory")
	assert.Contains(t, ee.Detail, "not corroborated")
	assert.NotZero(t, ee.PeakRSS)
	if !raceEnabled { // the race detector's shadow memory is resident too
		assert.Less(t, ee.PeakRSS, uint64(64<<20))
	}
}
