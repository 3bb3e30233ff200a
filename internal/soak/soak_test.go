// Package soak runs many renderers at once under a mixed, partly hostile
// load and checks that nothing is lost, misattributed or leaked.
//
// `make soak` runs it at full size (32 renderers, 10,000 calls); `make
// test` runs a short form. Every call carries a nonce that comes back
// through the socket, a handed-in file or a sealed memfd, so a result that
// reached the wrong caller cannot pass for a right one.
package soak_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/internal/fdtest"
	"github.com/sandkit/sandkit/internal/testrenderer"
	"github.com/sandkit/sandkit/ipc/shm"
	"github.com/sandkit/sandkit/policy"
	"github.com/sandkit/sandkit/renderer"
)

var (
	renderers = flag.Int("soak.renderers", 8, "origins, one renderer each")
	slots     = flag.Int("soak.max-renderers", 0, "the broker's MaxRenderers; 0 means soak.renderers, fewer makes origins compete for slots (eviction)")
	calls     = flag.Int("soak.calls", 600, "calls in all")
	workers   = flag.Int("soak.workers", 16, "concurrent callers")
	hostile   = flag.Float64("soak.hostile", 0.03, "share of the calls to hostile origins that attack")
	logFile   = flag.String("soak.log", "", "file for the broker's warnings (renderer ends), for diagnosis")
	killEvery = flag.Duration("soak.kill-every", 250*time.Millisecond, "how often a random renderer is SIGKILLed from outside")
)

func TestMain(m *testing.M) {
	if renderer.Requested() {
		renderer.Main(testrenderer.Register)
	}
	flag.Parse()
	os.Exit(m.Run())
}

// attack is one thing a hostile renderer does, and how the broker must
// report the renderer's end.
type attack struct {
	action  string
	reasons []broker.ExitReason
	syscall string // for ExitViolation
}

// attacks are the hostile renderers' repertoire.
//
// A hang or spin holds its handler for good; once several hold a
// renderer's handlers (or its threads' CPU), it stops reading its socket,
// and a call queued behind them ends it as a broker limit ("stopped
// reading its socket") rather than as the timeout of the hang itself.
// Which comes first depends on how many calls reach the renderer in one
// call timeout, so both are how these attacks end.
var attacks = []attack{
	{action: "hang", reasons: []broker.ExitReason{broker.ExitTimeout, broker.ExitBrokerLimit}},
	{action: "spin", reasons: []broker.ExitReason{broker.ExitTimeout, broker.ExitBrokerLimit}},
	{action: "crash", reasons: []broker.ExitReason{broker.ExitCrash}},
	{action: "ptrace", reasons: []broker.ExitReason{broker.ExitViolation}, syscall: "ptrace"},
	{action: "open-forged:elsewhere", reasons: []broker.ExitReason{broker.ExitBadMessage}},
}

// tally counts outcomes; every call ends in exactly one of them.
type tally struct {
	mu            sync.Mutex
	ok            int
	attacked      map[broker.ExitReason]int // hostile calls, ended as expected
	collateral    map[broker.ExitReason]int // calls that shared a renderer with an attack or a kill
	lost          []string                  // wrong data, unexpected errors, hung calls
	misattributed []string                  // an error naming another renderer or origin
}

func (t *tally) add(f func(*tally)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f(t)
}

// soak is one run's shared state.
type soak struct {
	b       *broker.Broker
	files   []*os.File // handed-in inputs, each holding its own name
	killed  sync.Map   // pid → true: renderers SIGKILLed from outside
	doomed  sync.Map   // pid → attack: renderers that attacked
	tally   tally
	timeout time.Duration
}

func TestSoak(t *testing.T) {
	if *renderers < 1 || *calls < 1 || *workers < 1 {
		t.Fatal("soak sizes must be positive")
	}
	p := policy.Strict()
	p.Limits.SharedMemory = 64 << 20 // the sealed echoes' memfds, a page each, over each renderer's life
	if raceEnabled {
		p.Limits.Memory = 0
	}
	const callTimeout = 2 * time.Second
	// Opened before the descriptor baseline: it outlives the broker.
	logger := slog.New(slog.DiscardHandler)
	if *logFile != "" {
		f, err := os.Create(*logFile)
		require.NoError(t, err)
		defer f.Close()
		logger = slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	fdsBefore, err := fdtest.Open()
	require.NoError(t, err)
	goroutinesBefore := runtime.NumGoroutine()

	maxRenderers := *renderers
	if *slots > 0 {
		maxRenderers = *slots
	}
	var spawned, evicted, unneeded atomic.Int64
	b, err := broker.New(context.Background(), broker.Config{
		Policy: p, MaxRenderers: maxRenderers, CallTimeout: callTimeout, Logger: logger,
		OnEvent: func(e broker.Event) {
			switch {
			case e.Kind == broker.EventReady:
				spawned.Add(1)
			case e.Kind != broker.EventExited:
			case e.Err.Reason == broker.ExitIdle:
				evicted.Add(1)
			case e.Err.Reason == broker.ExitReleased && e.Err.Detail == "not needed":
				unneeded.Add(1)
			}
		},
	})
	require.NoError(t, err)
	s := &soak{b: b, timeout: callTimeout, tally: tally{attacked: map[broker.ExitReason]int{}, collateral: map[broker.ExitReason]int{}}}
	dir := t.TempDir()
	for i := range 32 {
		name := filepath.Join(dir, fmt.Sprintf("input-%02d", i))
		require.NoError(t, os.WriteFile(name, []byte(name), 0o644))
		f, err := os.Open(name)
		require.NoError(t, err)
		s.files = append(s.files, f)
	}

	start := time.Now()
	var next atomic.Int64
	stopKills := make(chan struct{})
	var killer sync.WaitGroup
	killer.Add(1)
	go func() {
		defer killer.Done()
		s.killRandomly(stopKills)
	}()
	var wg sync.WaitGroup
	for w := range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for n := next.Add(1); n <= int64(*calls); n = next.Add(1) {
				s.call(rng, n)
			}
		}()
	}
	wg.Wait()
	close(stopKills)
	killer.Wait()
	elapsed := time.Since(start)
	require.NoError(t, b.Close())
	for _, f := range s.files {
		f.Close()
	}

	tl := &s.tally
	t.Logf("%d calls to %d origins over %d renderers in %v (%.0f calls/s): %d answered correctly; attacks ended as expected %v; collateral %v; "+
		"%d renderers spawned (%.3f per call), %d evicted, %d ended as not needed",
		*calls, *renderers, maxRenderers, elapsed.Round(time.Millisecond), float64(*calls)/elapsed.Seconds(), tl.ok, tl.attacked, tl.collateral,
		spawned.Load(), float64(spawned.Load())/float64(*calls), evicted.Load(), unneeded.Load())
	assert.Empty(t, tl.lost, "lost results")
	assert.Empty(t, tl.misattributed, "misattributed results")
	assert.Equal(t, *calls, tl.ok+sum(tl.attacked)+sum(tl.collateral)+len(tl.lost)+len(tl.misattributed), "every call accounted for once")

	// Polled by hand: require.Eventually runs goroutines of its own.
	for deadline := time.Now().Add(10 * time.Second); runtime.NumGoroutine() > goroutinesBefore && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	assert.LessOrEqual(t, runtime.NumGoroutine(), goroutinesBefore, "goroutines leaked")
	fdsAfter, err := fdtest.Open()
	require.NoError(t, err)
	assert.Empty(t, fdtest.Added(fdsBefore, fdsAfter), "descriptors leaked")
	assert.Empty(t, children(t), "child processes (zombies) left")
}

// call makes call number n to a random origin and records how it ended.
// Every fourth origin is hostile: some of its calls attack.
func (s *soak) call(rng *rand.Rand, n int64) {
	o := rng.IntN(*renderers)
	origin := "origin-" + strconv.Itoa(o)
	var atk *attack
	if o%4 == 3 && rng.Float64() < *hostile*4 {
		atk = &attacks[rng.IntN(len(attacks))]
	}
	// Bounds the whole call: a call still running past it is lost.
	ctx, cancel := context.WithTimeout(context.Background(), 5*s.timeout+10*time.Second)
	defer cancel()
	r, err := s.b.Acquire(ctx, origin, "")
	var ee *broker.ExitError
	if errors.As(err, &ee) && s.wasKilled(ee.PID) && ee.Reason == broker.ExitCrash {
		// SIGKILLed from outside while it started.
		s.tally.add(func(t *tally) { t.collateral[ee.Reason]++ })
		return
	}
	if err != nil {
		s.tally.add(func(t *tally) { t.lost = append(t.lost, fmt.Sprintf("call %d: acquire %s: %v", n, origin, err)) })
		return
	}
	pid := r.PID()
	if atk != nil {
		s.doomed.Store(pid, atk)
		_, _, err := broker.Call(ctx, r, testrenderer.Attempt, wrapperspb.String(atk.action))
		s.judge(n, origin, pid, atk, err)
		return
	}
	nonce := fmt.Appendf(nil, "call %d to %s at %d", n, origin, rng.Uint64())
	switch rng.IntN(3) {
	case 0:
		resp, _, err := broker.Call(ctx, r, testrenderer.Ping, wrapperspb.Bytes(nonce))
		if err == nil && !bytes.Equal(resp.GetValue(), nonce) {
			err = fmt.Errorf("ping answered %q", resp.GetValue())
		}
		s.judge(n, origin, pid, nil, err)
	case 1:
		// One *os.File shared by every call: each renderer gets a
		// description of its own, so no read moves another's offset.
		f := s.files[rng.IntN(len(s.files))]
		resp, _, err := broker.Call(ctx, r, testrenderer.ReadFile, wrapperspb.String(""), f)
		if err == nil && string(resp.GetValue()) != f.Name() {
			err = fmt.Errorf("read %q from %s", resp.GetValue(), f.Name())
		}
		s.judge(n, origin, pid, nil, err)
	case 2:
		_, fds, err := broker.Call(ctx, r, testrenderer.SealedEcho, wrapperspb.Bytes(nonce))
		if err == nil {
			err = checkSealed(fds[0], nonce)
			fds[0].Close()
		}
		s.judge(n, origin, pid, nil, err)
	}
}

func checkSealed(f *os.File, want []byte) error {
	m, err := shm.Map(f, len(want))
	if err != nil {
		return err
	}
	defer m.Close()
	if !bytes.Equal(m.Bytes(), want) {
		return fmt.Errorf("sealed echo holds %q", m.Bytes())
	}
	return nil
}

// judge files one call's outcome. An error is expected only when it
// names the renderer the call went to, and that renderer was killed from
// outside (a crash) or attacked (the attack's reasons).
func (s *soak) judge(n int64, origin string, pid int, atk *attack, err error) {
	if err == nil && atk == nil {
		s.tally.add(func(t *tally) { t.ok++ })
		return
	}
	var ee *broker.ExitError
	if !errors.As(err, &ee) {
		s.tally.add(func(t *tally) {
			t.lost = append(t.lost, fmt.Sprintf("call %d to %s (pid %d, attack %v): %v", n, origin, pid, atk != nil, err))
		})
		return
	}
	if ee.PID != pid || ee.Origin != origin {
		s.tally.add(func(t *tally) {
			t.misattributed = append(t.misattributed, fmt.Sprintf("call %d to %s pid %d got %v", n, origin, pid, ee))
		})
		return
	}
	killed := s.wasKilled(pid)
	expected := func(a *attack) bool {
		return a != nil && slices.Contains(a.reasons, ee.Reason) && (a.syscall == "" || a.syscall == ee.Syscall)
	}
	var doomedBy *attack
	if v, ok := s.doomed.Load(pid); ok {
		doomedBy = v.(*attack)
	}
	switch {
	case atk != nil && expected(atk):
		s.tally.add(func(t *tally) { t.attacked[ee.Reason]++ })
	case killed && ee.Reason == broker.ExitCrash && strings.Contains(ee.Detail, "killed"):
		s.tally.add(func(t *tally) { t.collateral[ee.Reason]++ })
	case killed && doomedBy != nil && doomedBy.syscall != "" && ee.Reason == broker.ExitViolation && ee.Syscall == "":
		// Killed from outside while its disallowed syscall waited for
		// the monitor: the kernel withdrew the notification before
		// the monitor read which syscall it was. A violation all the
		// same, reported without the name.
		s.tally.add(func(t *tally) { t.collateral[ee.Reason]++ })
	case doomedBy != nil && isAttackReason(ee):
		// Another call's attack ended the renderer this call shared
		// (or ended it first, when this call attacked too).
		s.tally.add(func(t *tally) { t.collateral[ee.Reason]++ })
	default:
		s.tally.add(func(t *tally) {
			t.lost = append(t.lost, fmt.Sprintf("call %d to %s (pid %d, attack %v, killed %v): %v", n, origin, pid, atk != nil, killed, ee))
		})
	}
}

func (s *soak) wasKilled(pid int) bool {
	_, ok := s.killed.Load(pid)
	return ok
}

// isAttackReason reports whether e is how some attack ends a renderer: a
// renderer may run several attacks at once, and the first one decides.
func isAttackReason(e *broker.ExitError) bool {
	for _, a := range attacks {
		if slices.Contains(a.reasons, e.Reason) && (a.syscall == "" || a.syscall == e.Syscall) {
			return true
		}
	}
	return false
}

// killRandomly SIGKILLs a random live renderer every killEvery, as an
// out-of-memory killer or an operator would, until stop is closed.
func (s *soak) killRandomly(stop <-chan struct{}) {
	if *killEvery <= 0 {
		return
	}
	tick := time.NewTicker(*killEvery)
	defer tick.Stop()
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		live := s.b.Renderers()
		if len(live) == 0 {
			continue
		}
		pid := live[rng.IntN(len(live))].PID
		// Recorded first: the kill's collateral must find it.
		s.killed.Store(pid, true)
		_ = unix.Kill(pid, unix.SIGKILL)
	}
}

func sum(m map[broker.ExitReason]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// children lists processes whose parent is this one.
func children(t testing.TB) []int {
	pids, err := fdtest.Children()
	require.NoError(t, err)
	return pids
}
