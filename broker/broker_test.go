package broker_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/internal/fdtest"
	"github.com/sandkit/sandkit/internal/launch"
	"github.com/sandkit/sandkit/internal/testrenderer"
	"github.com/sandkit/sandkit/ipc"
	"github.com/sandkit/sandkit/ipc/shm"
	"github.com/sandkit/sandkit/policy"
	"github.com/sandkit/sandkit/renderer"
)

// TestMain doubles as the renderer: the broker under test re-executes
// this test binary, which then locks itself down and serves the test
// methods.
func TestMain(m *testing.M) {
	if os.Getenv(forgetfulEnv) != "" {
		os.Exit(forgetfulProgram())
	}
	if renderer.Requested() {
		renderer.Main(registerForTests)
	}
	if os.Getenv(brokerChildEnv) != "" {
		os.Exit(brokerChild())
	}
	os.Exit(m.Run())
}

// registerForTests serves the test methods and the examples' (which the
// race detector leaves out: example_test.go).
func registerForTests(s *renderer.Session, mux *ipc.Mux) error {
	if slices.Contains(os.Args[2:], failRegisterArg) {
		return errFailRegister
	}
	if err := testrenderer.Register(s, mux); err != nil {
		return err
	}
	return registerExamples(s, mux)
}

// brokerChildEnv makes the test binary a broker with one renderer, whose
// pid it prints before it waits to be killed (TestRendererDiesWithBroker).
const brokerChildEnv = "SANDKIT_BROKER_TEST_CHILD"

func brokerChild() int {
	watch := newHangWatch(nil)
	b, err := broker.New(context.Background(), broker.Config{Policy: strict(), Logger: slog.New(watch)})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	r, err := b.Acquire(context.Background(), "o", "")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// Keep the renderer busy in a handler that ignores cancellation, so
	// that it does not end on its own when the broker's socket hangs up:
	// only the parent-death signal ends it then. The pid is printed once
	// the renderer says it is in the handler.
	go broker.Call(context.Background(), r, testrenderer.Attempt, wrapperspb.String("hang-announced"))
	if err := watch.wait(r); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(r.PID())
	select {}
}

// forgetfulEnv makes the test binary a program whose main creates a
// broker without first checking renderer.Requested
// (TestRendererThatMakesABrokerIsRefused).
const forgetfulEnv = "SANDKIT_FORGETFUL_TEST_CHILD"

func forgetfulProgram() int {
	b, err := broker.New(context.Background(), broker.Config{Policy: strict()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	b.Close()
	return 0
}

// A program that forgets to hand over to renderer.Main is told so the
// moment its renderer, started with the renderer flag, makes a broker,
// instead of each renderer spawning another, nested one level deeper.
func TestRendererThatMakesABrokerIsRefused(t *testing.T) {
	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(exe, launch.Flag+"x")
	cmd.Env = []string{forgetfulEnv + "=1"}
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "output: %s", out)
	assert.Equal(t, 3, exit.ExitCode(), "output: %s", out)
	assert.Contains(t, string(out), "started as a renderer but is creating a broker")
	assert.Contains(t, string(out), "renderer.Requested()")
}

// strict is policy.Strict as a test binary can run it: under the race
// detector the memory limit is lifted (see raceEnabled).
func strict() *policy.Policy {
	p := policy.Strict()
	if raceEnabled {
		p.Limits.Memory = 0
	}
	return p
}

func newBroker(t testing.TB, p *policy.Policy, mod ...func(*broker.Config)) *broker.Broker {
	t.Helper()
	if raceEnabled {
		p.Limits.Memory = 0
	}
	cfg := broker.Config{Policy: p}
	if _, bench := t.(*testing.B); !bench {
		cfg.Logger = testLogger(t)
	}
	for _, f := range mod {
		f(&cfg)
	}
	b, err := broker.New(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	return b
}

// testLogger sends the broker's logs, renderer stderr included, to the
// test log, so a failing test shows what the renderer said.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// expectAttempt makes r attempt action and asserts the outcome: the
// answer want when wantKill is empty, else the violation monitor's kill
// of r for the syscall wantKill.
func expectAttempt(t *testing.T, r *broker.Renderer, action, want, wantKill string) {
	t.Helper()
	got, err := attempt(t, r, action)
	if wantKill == "" {
		require.NoError(t, err)
		assert.Equal(t, want, got)
		return
	}
	var ee *broker.ExitError
	require.ErrorAs(t, err, &ee, "renderer answered %q", got)
	assert.Equal(t, broker.ExitViolation, ee.Reason)
	assert.Equal(t, wantKill, ee.Syscall)
	assert.Equal(t, r.PID(), ee.PID)
}

func attempt(t *testing.T, r *broker.Renderer, action string) (string, error) {
	t.Helper()
	resp, _, err := broker.Call(context.Background(), r, testrenderer.Attempt, wrapperspb.String(action))
	if err != nil {
		return "", err
	}
	return resp.GetValue(), nil
}

func TestSpawnReportsEveryLayerInForce(t *testing.T) {
	b := newBroker(t, policy.Strict())
	r, err := b.Acquire(context.Background(), "https://a.example", "")
	require.NoError(t, err)
	resp, _, err := broker.Call(context.Background(), r, testrenderer.Ping, wrapperspb.Bytes([]byte("hi")))
	require.NoError(t, err)
	assert.Equal(t, []byte("hi"), resp.GetValue())
	layers := r.Layers()
	for _, l := range policy.Strict().Requested() {
		assert.True(t, layers.Active(l), "layer %s not in force: %v", l, layers)
	}
	st := r.Status()
	assert.Equal(t, "https://a.example", st.Origin)
	assert.True(t, st.Bound)
}

// TestLockedRendererStreamsResults has a renderer make an shm stream and
// write results into it while the broker reads: a memfd from the broker
// (sandkit.Alloc), the shared mapping and futex(2) on shared memory are
// all the producer needs, and the sandbox allows them. The broker hands out
// shared memory only within Limits.SharedMemory: Strict (0) refuses any,
// and a policy must allow the ring and its control page.
func TestLockedRendererStreamsResults(t *testing.T) {
	const capacity = 256 << 10
	withShared := func(n uint64) *policy.Policy {
		p := policy.Strict()
		p.Limits.SharedMemory = n
		return p
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	open := func(t *testing.T, p *policy.Policy) (*broker.Renderer, *shm.StreamReader, error) {
		r, err := newBroker(t, p).Acquire(ctx, "https://a.example", "")
		require.NoError(t, err)
		_, fds, err := broker.Call(ctx, r, testrenderer.OpenStream, wrapperspb.UInt32(capacity))
		if err != nil {
			return nil, nil, err
		}
		stream, err := shm.OpenStream(fds[0], capacity)
		fds[0].Close()
		require.NoError(t, err)
		t.Cleanup(func() { stream.Close() })
		return r, stream, nil
	}
	for _, tc := range []struct {
		name   string
		shared uint64
	}{
		{"Strict", 0},
		{"one byte short", uint64(shm.StreamSize(capacity)) - 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := open(t, withShared(tc.shared))
			var st *ipc.StatusError
			require.ErrorAs(t, err, &st)
			require.Equal(t, ipc.CodeResourceExhausted, st.Code, "%v", err)
			require.ErrorContains(t, err, fmt.Sprintf("of the renderer's %d bytes (Limits.SharedMemory) in use", tc.shared))
		})
	}
	t.Run("ring and control page allowed", func(t *testing.T) {
		r, stream, err := open(t, withShared(uint64(shm.StreamSize(capacity))))
		require.NoError(t, err)
		for _, n := range []int{1, capacity, 3<<20 + 123} {
			filled := make(chan error, 1)
			go func() {
				_, _, err := broker.Call(ctx, r, testrenderer.FillStream, wrapperspb.UInt64(uint64(n)))
				filled <- err
			}()
			got := make([]byte, n)
			require.NoError(t, stream.ReadFull(ctx, got))
			require.NoError(t, <-filled)
			require.Equal(t, testrenderer.StreamBytes(n), got, "%d bytes", n)
		}
	})
}

// TestLockedRendererCannotEscape runs each escape attempt in a fresh
// renderer and checks the exact outcome: the errno the renderer saw, or
// the violation the monitor reported when it was killed. It runs them in
// a renderer whose seccomp program the broker compiled (Strict: a pid namespace), and
// the seccomp ones in a renderer that compiled its own (no pid namespace,
// so its pid is not known in advance; and no mount namespace either, the
// host's files guarded by Landlock alone).
func TestLockedRendererCannotEscape(t *testing.T) {
	noPIDNS := policy.Strict()
	noPIDNS.Namespaces.PID = false
	noPIDNS.Namespaces.Mount = false
	for _, p := range []struct {
		name      string
		policy    *policy.Policy
		dedicated bool
	}{
		{"broker-compiled", policy.Strict(), false},
		{"renderer-compiled", noPIDNS, false},
		// The statically linked renderer binary the cold-spawn benchmarks
		// use must be exactly as locked down as this one.
		{"dedicated-static", policy.Strict(), true},
	} {
		t.Run(p.name, func(t *testing.T) {
			path := ""
			if p.dedicated {
				var err error
				path, err = testrenderer.BuildDedicated(context.Background(), t.TempDir())
				require.NoError(t, err)
			}
			testCannotEscape(t, p.policy, path)
		})
	}
}

func testCannotEscape(t *testing.T, p *policy.Policy, path string) {
	b := newBroker(t, p, func(c *broker.Config) { c.Path = path })
	tests := []struct {
		action    string
		wantErrno string // the renderer survives and reports this
		wantKill  string // or the monitor kills it for this syscall
	}{
		{action: "open:/etc/passwd", wantErrno: "ENOENT"},
		{action: "open:/proc/self/environ", wantErrno: "ENOENT"}, // the root has no /proc
		{action: "open:/", wantErrno: "EACCES"},
		{action: "open:/proc/1/mem", wantErrno: "ENOENT"},
		{action: "create:/x", wantErrno: "EROFS"},
		{action: "environ", wantErrno: "0"},
		{action: "pid", wantErrno: "1"},
		{action: "hostname", wantErrno: "sandkit"},
		{action: "socket-tcp", wantKill: "socket"},
		{action: "socket-unix", wantKill: "socket"},
		{action: "socketpair", wantKill: "socketpair"},
		{action: "execve", wantKill: "execve"},
		{action: "fork", wantKill: "clone"},
		{action: "vfork", wantKill: "vfork"},
		{action: "clone-newuser", wantKill: "clone"},
		{action: "ptrace", wantKill: "ptrace"},
		{action: "mount", wantKill: "mount"},
		{action: "unshare", wantKill: "unshare"},
		{action: "setns", wantKill: "setns"},
		{action: "chroot", wantKill: "chroot"},
		{action: "kill:" + strconv.Itoa(os.Getpid()), wantKill: "kill"},
		{action: "keyctl", wantKill: "keyctl"},
		{action: "bpf", wantKill: "bpf"},
		{action: "userfaultfd", wantKill: "userfaultfd"},
		{action: "perf_event_open", wantKill: "perf_event_open"},
		{action: "io_uring_setup", wantKill: "io_uring_setup"},
		{action: "tiocsti", wantKill: "ioctl"},
	}
	for _, tt := range tests {
		t.Run(tt.action, func(t *testing.T) {
			if tt.wantKill == "" && !p.Namespaces.PID {
				t.Skip("the outcome depends on the namespaces")
			}
			r, err := b.Acquire(context.Background(), "origin-"+tt.action, "")
			require.NoError(t, err)
			expectAttempt(t, r, tt.action, tt.wantErrno, tt.wantKill)
		})
	}
	// The broker keeps serving after every one of those.
	r, err := b.Acquire(context.Background(), "after", "")
	require.NoError(t, err)
	_, _, err = broker.Call(context.Background(), r, testrenderer.Ping, wrapperspb.Bytes(nil))
	require.NoError(t, err)
	for _, l := range p.Requested() {
		assert.True(t, r.Layers().Active(l), "layer %s not in force: %v", l, r.Layers())
	}
}

func TestSignalToOwnPID1HasNoEffect(t *testing.T) {
	b := newBroker(t, policy.Strict())
	r, err := b.Acquire(context.Background(), "o", "")
	require.NoError(t, err)
	got, err := attempt(t, r, "kill:1")
	require.NoError(t, err)
	// pid 1 is the renderer itself, init of its namespace: SIGKILL from
	// inside is ignored, and it keeps serving.
	assert.Equal(t, "ok", got)
	_, _, err = broker.Call(context.Background(), r, testrenderer.Ping, wrapperspb.Bytes(nil))
	require.NoError(t, err)
}

func TestReadOnlyPaths(t *testing.T) {
	dir := t.TempDir() // under /tmp, which the renderer's new root covers
	require.NoError(t, os.WriteFile(filepath.Join(dir, "font.ttf"), []byte("glyphs"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(t.TempDir(), "other"), []byte("x"), 0o644))
	// A root broker's renderers run as unprivileged ids of their own:
	// like fonts in /usr/share, the paths must be readable by others.
	require.NoError(t, os.Chmod(dir, 0o755))
	require.NoError(t, os.Chmod(filepath.Dir(dir), 0o755))
	p := strict()
	p.Filesystem.ReadOnlyPaths = []string{dir}
	b := newBroker(t, p)
	r, err := b.Acquire(context.Background(), "o", "")
	require.NoError(t, err)
	tests := []struct{ action, want string }{
		{"read:" + filepath.Join(dir, "font.ttf"), "content:glyphs"},
		{"create:" + filepath.Join(dir, "new"), "EROFS"},
		{"open:" + filepath.Dir(dir), "EACCES"},
		{"open:/etc/passwd", "ENOENT"},
	}
	for _, tt := range tests {
		got, err := attempt(t, r, tt.action)
		require.NoError(t, err)
		assert.Equal(t, tt.want, got, tt.action)
	}
}

func TestRendererHoldsOnlyItsSocket(t *testing.T) {
	// Descriptors of the kinds the Go runtime's poller uses, left without
	// close-on-exec, as a broker's own parent might leave them: every
	// renderer inherits them, and only the renderer's ELF constructor,
	// running before the runtime has a poller, can tell them apart from
	// the runtime's.
	ep, err := unix.EpollCreate(1)
	require.NoError(t, err)
	defer unix.Close(ep)
	ev, err := unix.Eventfd(0, 0)
	require.NoError(t, err)
	defer unix.Close(ev)

	b := newBroker(t, policy.Strict())
	r, err := b.Acquire(context.Background(), "o", "")
	require.NoError(t, err)
	got, err := attempt(t, r, "fds")
	require.NoError(t, err)
	sockets, anon := 0, 0
	for _, entry := range strings.Fields(got) {
		fd, kind, _ := strings.Cut(entry, "=")
		switch {
		case fd == "0":
			assert.Equal(t, "chardev", kind, "stdin must be /dev/null")
		case fd == "1" || fd == "2":
			assert.Equal(t, "pipe", kind, "stdout/stderr must be the log pipe")
		case kind == "socket":
			// The broker connection (ipc moves it to a fresh number).
			sockets++
		default:
			// Only the runtime's own poller descriptors (anonymous
			// inodes) may exist besides those.
			assert.Equal(t, "anon", kind, "fd %s is a %s", fd, kind)
			anon++
		}
	}
	assert.Equal(t, 1, sockets, "exactly one socket, the broker connection: %s", got)
	// The runtime's poller and the ipc connection's wait set each hold an
	// epoll instance and an eventfd.
	assert.LessOrEqual(t, anon, 4, "more anonymous descriptors than the runtime's and ipc's own; inherited ones? %s", got)
}

func TestLimits(t *testing.T) {
	tests := []struct {
		name   string
		policy func(*policy.Policy)
		cfg    func(*broker.Config)
		action string
		want   broker.ExitReason
		detail string // in the exit's Detail, if set
		race   string // why the case cannot run under -race
	}{
		{
			name:   "cpu",
			policy: func(p *policy.Policy) { p.Limits.CPUTime = time.Second },
			action: "spin",
			want:   broker.ExitCPULimit,
		},
		{
			name:   "memory",
			policy: func(p *policy.Policy) { p.Limits.Memory = 256 << 20 },
			race:   "the race detector's shadow memory cannot live under a data limit; make test runs it without -race (NORACE_TESTS in the Makefile)",
			action: "hog",
			want:   broker.ExitMemoryLimit,
		},
		{
			name:   "threads",
			action: "threads",
			want:   broker.ExitThreadLimit,
		},
		{
			// pthread_create's EAGAIN names no limit: the kernel's
			// count of tasks and mapped memory, read by the broker when
			// the renderer said so, does.
			name:   "thread stack beyond the memory limit",
			policy: func(p *policy.Policy) { p.Limits.Memory = 256 << 20 },
			race:   "the race detector's shadow memory cannot live under a data limit; make test runs it without -race (NORACE_TESTS in the Makefile)",
			action: "reserve-then-thread",
			want:   broker.ExitMemoryLimit,
			detail: "(RLIMIT_AS) mapped",
		},
		{
			// The last line is the claim of a memory limit that the
			// renderer's small resident peak does not back: a crash that
			// quotes it (see TestMemoryClaimNeedsEvidence), which it can
			// only do if the line was read before the exit was judged.
			name:   "last words read before the exit is judged",
			action: "last-words",
			want:   broker.ExitCrash,
			detail: "the renderer claimed: fatal error: runtime: out of memory",
		},
		{
			name:   "call timeout",
			cfg:    func(c *broker.Config) { c.CallTimeout = 300 * time.Millisecond },
			action: "hang",
			want:   broker.ExitTimeout,
		},
		{
			name:   "lifetime",
			policy: func(p *policy.Policy) { p.Limits.Lifetime = 2 * time.Second },
			action: "hang",
			want:   broker.ExitTimeout,
		},
		{
			name:   "crash",
			action: "crash",
			want:   broker.ExitCrash,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if raceEnabled && tt.race != "" {
				t.Skip(tt.race)
			}
			p := policy.Strict()
			if tt.policy != nil {
				tt.policy(p)
			}
			mods := []func(*broker.Config){}
			if tt.cfg != nil {
				mods = append(mods, tt.cfg)
			}
			b := newBroker(t, p, mods...)
			r, err := b.Acquire(context.Background(), "o", "")
			require.NoError(t, err)
			_, err = attempt(t, r, tt.action)
			var ee *broker.ExitError
			require.ErrorAs(t, err, &ee)
			assert.Equal(t, tt.want, ee.Reason, "%v", ee)
			assert.Contains(t, ee.Detail, tt.detail)
			assert.ErrorIs(t, err, broker.ErrRendererGone)
		})
	}
}

func TestKilledMidCallGivesTypedError(t *testing.T) {
	watch := newHangWatch(testLogger(t).Handler())
	b := newBroker(t, policy.Strict(), func(c *broker.Config) { c.Logger = slog.New(watch) })
	r, err := b.Acquire(context.Background(), "o", "")
	require.NoError(t, err)
	go func() {
		if watch.wait(r) == nil { // the renderer is in the handler
			syscall.Kill(r.PID(), syscall.SIGKILL)
		}
	}()
	_, err = attempt(t, r, "hang-announced")
	var ee *broker.ExitError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, broker.ExitCrash, ee.Reason)
	assert.Contains(t, ee.Detail, "killed")
	// Events record it too.
	var found bool
	for _, e := range b.Events() {
		if e.Kind == broker.EventExited && e.PID == r.PID() {
			found = true
			assert.Equal(t, broker.ExitCrash, e.Err.Reason)
		}
	}
	assert.True(t, found)
}

func TestProcessLock(t *testing.T) {
	ctx := context.Background()
	t.Run("per origin", func(t *testing.T) {
		b := newBroker(t, policy.Strict())
		a1, err := b.Acquire(ctx, "a", "doc1")
		require.NoError(t, err)
		a2, err := b.Acquire(ctx, "a", "doc2")
		require.NoError(t, err)
		c, err := b.Acquire(ctx, "c", "doc1")
		require.NoError(t, err)
		assert.Same(t, a1, a2)
		assert.NotEqual(t, a1.PID(), c.PID())
	})
	t.Run("per document", func(t *testing.T) {
		b := newBroker(t, policy.Strict(), func(c *broker.Config) { c.Model = broker.PerDocument })
		d1, err := b.Acquire(ctx, "a", "doc1")
		require.NoError(t, err)
		d2, err := b.Acquire(ctx, "a", "doc2")
		require.NoError(t, err)
		assert.NotEqual(t, d1.PID(), d2.PID())
		again, err := b.Acquire(ctx, "a", "doc1")
		require.NoError(t, err)
		assert.Same(t, d1, again)
	})
	t.Run("never reused after release", func(t *testing.T) {
		b := newBroker(t, policy.Strict())
		r1, err := b.Acquire(ctx, "a", "")
		require.NoError(t, err)
		b.Release("a", "")
		assert.Equal(t, broker.ExitReleased, r1.Err().Reason)
		r2, err := b.Acquire(ctx, "a", "")
		require.NoError(t, err)
		assert.NotEqual(t, r1.PID(), r2.PID())
	})
	t.Run("naming another origin kills", func(t *testing.T) {
		b := newBroker(t, policy.Strict())
		r, err := b.Acquire(ctx, "a", "")
		require.NoError(t, err)
		_, err = attempt(t, r, "open-forged:b")
		var ee *broker.ExitError
		require.ErrorAs(t, err, &ee)
		assert.Equal(t, broker.ExitBadMessage, ee.Reason)
		assert.Contains(t, ee.Detail, `named origin "b"`)
	})
	t.Run("concurrent acquires share one renderer", func(t *testing.T) {
		b := newBroker(t, policy.Strict())
		var wg sync.WaitGroup
		pids := make([]int, 8)
		for i := range pids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := b.Acquire(ctx, "same", "")
				if assert.NoError(t, err) {
					pids[i] = r.PID()
				}
			}()
		}
		wg.Wait()
		for _, pid := range pids {
			assert.Equal(t, pids[0], pid)
		}
	})
}

func TestProgramCanKillAMisbehavingRenderer(t *testing.T) {
	b := newBroker(t, strict())
	r, err := b.Acquire(context.Background(), "o", "")
	require.NoError(t, err)
	r.Kill("reply failed the program's checks")
	assert.Equal(t, broker.ExitBadMessage, r.Err().Reason)
	assert.Equal(t, "reply failed the program's checks", r.Err().Detail)
	_, _, err = broker.Call(context.Background(), r, testrenderer.Ping, wrapperspb.Bytes(nil))
	var ee *broker.ExitError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, broker.ExitBadMessage, ee.Reason)
}

func TestResourceBroker(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	dirA := filepath.Join(root, "a")
	dirB := filepath.Join(root, "b")
	require.NoError(t, os.MkdirAll(filepath.Join(dirA, "sub"), 0o755))
	require.NoError(t, os.MkdirAll(dirB, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dirA, "a.txt"), []byte("from a"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dirA, "sub", "s.txt"), []byte("nested"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dirB, "secret.txt"), []byte("from b"), 0o644))
	require.NoError(t, os.Symlink("../b/secret.txt", filepath.Join(dirA, "link")))
	require.NoError(t, os.Symlink("a.txt", filepath.Join(dirA, "innerlink")))

	b := newBroker(t, policy.Strict())
	require.NoError(t, b.GrantDir("a", dirA))
	require.NoError(t, b.GrantDir("b", dirB))
	r, err := b.Acquire(ctx, "a", "")
	require.NoError(t, err)
	tests := []struct {
		name, want string
	}{
		{"a.txt", "from a"},
		{"sub/s.txt", "nested"},
		{"../b/secret.txt", "leaves its directory"},
		{"sub/../../b/secret.txt", "leaves its directory"},
		{"/etc/passwd", "is absolute"},
		{"link", "too many levels of symbolic links"},
		{"innerlink", "too many levels of symbolic links"},
		{"secret.txt", "no such file"},
		{"sub", "not a regular file"},
		{"", "empty resource name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, _, err := broker.Call(ctx, r, testrenderer.OpenResource, wrapperspb.String(tt.name))
			require.NoError(t, err)
			assert.Contains(t, resp.GetValue(), tt.want)
		})
	}
}

func TestHandsFileDescriptorNotPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "doc.txt")
	require.NoError(t, os.WriteFile(path, []byte("contents"), 0o644))
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	b := newBroker(t, policy.Strict())
	r, err := b.Acquire(context.Background(), "o", "")
	require.NoError(t, err)
	resp, _, err := broker.Call(context.Background(), r, testrenderer.ReadFile, wrapperspb.String(""), f)
	require.NoError(t, err)
	assert.Equal(t, "contents", string(resp.GetValue()))
}

func TestWarmPool(t *testing.T) {
	b := newBroker(t, policy.Strict(), func(c *broker.Config) { c.WarmPool = 2 })
	require.Len(t, b.Renderers(), 2)
	for _, st := range b.Renderers() {
		assert.False(t, st.Bound)
	}
	r, err := b.Acquire(context.Background(), "a", "")
	require.NoError(t, err)
	assert.Equal(t, "a", r.Status().Origin)
	require.Eventually(t, func() bool { return len(b.Renderers()) == 3 }, 10*time.Second, 10*time.Millisecond, "pool refills")
}

func TestIdleTimeoutAndCapacity(t *testing.T) {
	ctx := context.Background()
	b := newBroker(t, policy.Strict(), func(c *broker.Config) {
		c.MaxRenderers = 2
		c.IdleTimeout = 200 * time.Millisecond
	})
	r1, err := b.Acquire(ctx, "a", "")
	require.NoError(t, err)
	_, err = b.Acquire(ctx, "b", "")
	require.NoError(t, err)
	// At capacity: a third origin evicts the idlest renderer.
	_, err = b.Acquire(ctx, "c", "")
	require.NoError(t, err)
	assert.LessOrEqual(t, len(b.Renderers()), 2)
	<-r1.Done()
	assert.Equal(t, broker.ExitIdle, r1.Err().Reason)
	require.Eventually(t, func() bool { return len(b.Renderers()) == 0 }, 5*time.Second, 20*time.Millisecond, "idle renderers end")
}

// TestAcquireOfBoundRendererRestartsIdleClock: Acquire hands out an
// already bound renderer to a caller about to use it, so the idle timeout
// counts from that Acquire, not from the renderer's last call. Without it
// the renderer below would end 2 s after its call, 1 s after the second
// Acquire, under the caller.
func TestAcquireOfBoundRendererRestartsIdleClock(t *testing.T) {
	ctx := context.Background()
	b := newBroker(t, policy.Strict(), func(c *broker.Config) { c.IdleTimeout = 2 * time.Second })
	r, err := b.Acquire(ctx, "a", "")
	require.NoError(t, err)
	_, _, err = broker.Call(ctx, r, testrenderer.Ping, wrapperspb.Bytes(nil))
	require.NoError(t, err)
	time.Sleep(1500 * time.Millisecond)
	again, err := b.Acquire(ctx, "a", "")
	require.NoError(t, err)
	require.Same(t, r, again)
	select {
	case <-r.Done():
		t.Fatalf("renderer ended %v after its idle clock was restarted: %v", time.Second, r.Err())
	case <-time.After(time.Second):
	}
	_, _, err = broker.Call(ctx, again, testrenderer.Ping, wrapperspb.Bytes(nil))
	require.NoError(t, err)
	// Idle from here on: the timeout still ends it.
	<-r.Done()
	assert.Equal(t, broker.ExitIdle, r.Err().Reason)
}

func TestFailsClosedOnInvalidPolicy(t *testing.T) {
	p := policy.Strict()
	p.Seccomp.Allow = []string{"ptrace"}
	_, err := broker.New(context.Background(), broker.Config{Policy: p})
	require.ErrorIs(t, err, policy.ErrInvalid)
	_, err = broker.New(context.Background(), broker.Config{})
	require.Error(t, err)
}

// TestSpawnCloseCyclesLeakNothing spawns and closes renderers many times
// and checks that no descriptor, goroutine or child process is left.
func TestSpawnCloseCyclesLeakNothing(t *testing.T) {
	cycles := 200
	if testing.Short() {
		cycles = 20
	}
	fdsBefore := openFDs(t)
	goroutinesBefore := runtime.NumGoroutine()
	for i := 0; i < cycles; i++ {
		b, err := broker.New(context.Background(), broker.Config{Policy: strict()})
		require.NoError(t, err)
		r, err := b.Acquire(context.Background(), fmt.Sprint("o", i), "")
		require.NoError(t, err)
		_, _, err = broker.Call(context.Background(), r, testrenderer.Ping, wrapperspb.Bytes(nil))
		require.NoError(t, err)
		require.NoError(t, b.Close())
		assert.Equal(t, broker.ExitShutdown, r.Err().Reason)
	}
	// Polled by hand: require.Eventually runs goroutines of its own.
	for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > goroutinesBefore && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	assert.LessOrEqual(t, runtime.NumGoroutine(), goroutinesBefore, "goroutines leaked")
	assert.Empty(t, fdtest.Added(fdsBefore, openFDs(t)), "descriptors leaked")
	assert.Empty(t, children(t), "child processes (zombies) left")
}

// openFDs returns this process's open descriptors and what each refers to.
func openFDs(t testing.TB) map[int]string {
	t.Helper()
	fds, err := fdtest.Open()
	require.NoError(t, err)
	return fds
}

// children lists processes whose parent is this one.
func children(t testing.TB) []int {
	pids, err := fdtest.Children()
	require.NoError(t, err)
	return pids
}

// A renderer does not outlive its broker: it is killed with SIGKILL when
// the broker's spawning thread ends (the parent-death signal), even while
// a handler that ignores cancellation keeps it from ending on the socket's
// hang-up. The test process becomes the orphaned renderer's reaper to see
// how it ended.
func TestRendererDiesWithBroker(t *testing.T) {
	require.NoError(t, unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), brokerChildEnv+"=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err, "the broker child printed no renderer pid")
	rpid, err := strconv.Atoi(strings.TrimSpace(line))
	require.NoError(t, err)

	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()
	reaped := make(chan unix.WaitStatus, 1)
	go func() {
		var ws unix.WaitStatus
		_, err := unix.Wait4(rpid, &ws, 0, nil) // ours once orphaned
		if err != nil {
			t.Errorf("wait for the renderer: %v", err)
		}
		reaped <- ws
	}()
	select {
	case ws := <-reaped:
		assert.True(t, ws.Signaled() && ws.Signal() == unix.SIGKILL, "renderer ended with %v, want killed by SIGKILL", ws)
	case <-time.After(20 * time.Second):
		unix.Kill(rpid, unix.SIGKILL)
		t.Fatal("the renderer outlived its broker")
	}
}

// A renderer that cannot be exec'd fails Acquire with the step and errno
// of the child, and leaves neither a descriptor nor a child behind.
func TestSpawnFailureBeforeExec(t *testing.T) {
	notExecutable := filepath.Join(t.TempDir(), "renderer")
	require.NoError(t, os.WriteFile(notExecutable, []byte("#!/bin/sh\n"), 0o644))
	if os.Geteuid() == 0 {
		// A root broker's renderers run as ids of their own, exec'd
		// through a descriptor: New checks the mode up front.
		_, err := broker.New(context.Background(), broker.Config{Policy: strict(), Path: notExecutable})
		require.ErrorContains(t, err, notExecutable+" has mode 0644")
		require.ErrorContains(t, err, "executable by others")
		return
	}
	b := newBroker(t, strict(), func(c *broker.Config) { c.Path = notExecutable })
	fdsBefore := openFDs(t)
	_, err := b.Acquire(context.Background(), "o", "")
	require.ErrorIs(t, err, syscall.EACCES)
	assert.Contains(t, err.Error(), "exec")
	assert.Empty(t, fdtest.Added(fdsBefore, openFDs(t)), "descriptors leaked")
	assert.Empty(t, children(t), "child processes left")
}

// Closing a broker while its warm pool refills is a shutdown, not a
// failure: nothing is logged as an error.
func TestCloseDuringRefillLogsNoError(t *testing.T) {
	// A refill's spawn takes a few milliseconds; closing at several
	// points into it catches one in progress.
	for i := range 10 {
		var errs errorCounter
		b, err := broker.New(context.Background(), broker.Config{
			Policy: strict(), WarmPool: 2,
			Logger: slog.New(&errs),
		})
		require.NoError(t, err)
		_, err = b.Acquire(context.Background(), fmt.Sprint("o", i), "") // starts a refill
		require.NoError(t, err)
		time.Sleep(time.Duration(i) * time.Millisecond / 2)
		require.NoError(t, b.Close())
		assert.Zero(t, errs.n.Load(), "error records logged at a normal Close")
	}
}

// hangWatch is a slog.Handler that passes every record on to next (if
// set) and closes hanging when the broker logs a renderer's
// testrenderer.HangingLine: that renderer is then in its
// "hang-announced" handler, which no amount of waiting would prove.
type hangWatch struct {
	next    slog.Handler
	once    *sync.Once
	hanging chan struct{}
}

func newHangWatch(next slog.Handler) hangWatch {
	return hangWatch{next: next, once: new(sync.Once), hanging: make(chan struct{})}
}

// wait returns once r is in its handler, or an error if r ends first or
// says nothing for a long time.
func (w hangWatch) wait(r *broker.Renderer) error {
	select {
	case <-w.hanging:
		return nil
	case <-r.Done():
		return fmt.Errorf("renderer ended before it was in its handler: %v", r.Err())
	case <-time.After(time.Minute):
		return errors.New("renderer not in its handler after a minute")
	}
}

func (w hangWatch) Enabled(context.Context, slog.Level) bool { return true }
func (w hangWatch) Handle(ctx context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "line" && a.Value.String() == testrenderer.HangingLine {
			w.once.Do(func() { close(w.hanging) })
			return false
		}
		return true
	})
	if w.next != nil && w.next.Enabled(ctx, r.Level) {
		return w.next.Handle(ctx, r)
	}
	return nil
}
func (w hangWatch) WithAttrs(as []slog.Attr) slog.Handler {
	if w.next != nil {
		w.next = w.next.WithAttrs(as)
	}
	return w
}
func (w hangWatch) WithGroup(name string) slog.Handler {
	if w.next != nil {
		w.next = w.next.WithGroup(name)
	}
	return w
}

// errorCounter is a slog.Handler that counts records at level Error.
type errorCounter struct{ n atomic.Int64 }

func (c *errorCounter) Enabled(context.Context, slog.Level) bool { return true }
func (c *errorCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		c.n.Add(1)
	}
	return nil
}
func (c *errorCounter) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *errorCounter) WithGroup(string) slog.Handler      { return c }
