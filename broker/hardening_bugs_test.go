package broker_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	llsys "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/internal/testrenderer"
	"github.com/sandkit/sandkit/ipc"
	"github.com/sandkit/sandkit/policy"
)

// A request the caller got wrong is never sent: the error says so at once
// (ErrSpec; proto.Error too when it does not marshal) and the renderer,
// which did nothing wrong, keeps serving. Before, Call waited 5 s for an
// exit that was not coming and then killed the renderer as a bad message.
func TestCallerMistakeLeavesRendererAlive(t *testing.T) {
	tests := []struct {
		name    string
		call    func(context.Context, *broker.Renderer) error
		marshal bool
	}{
		{
			name: "missing descriptor",
			call: func(ctx context.Context, r *broker.Renderer) error {
				_, _, err := broker.Call(ctx, r, testrenderer.ReadFile, wrapperspb.String("f"))
				return err
			},
		},
		{
			name: "string that is not UTF-8",
			call: func(ctx context.Context, r *broker.Renderer) error {
				_, _, err := broker.Call(ctx, r, testrenderer.Attempt, wrapperspb.String("open:/report-\xff.txt"))
				return err
			},
			marshal: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBroker(t, strict())
			r, err := b.Acquire(context.Background(), "https://a.example", "")
			require.NoError(t, err)
			// Bounded below the old 5 s wait only so that a regression
			// fails here rather than after the kill.
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
			defer cancel()
			err = tt.call(ctx, r)
			require.ErrorIs(t, err, ipc.ErrSpec)
			assert.NotErrorIs(t, err, broker.ErrRendererGone)
			if tt.marshal {
				assert.ErrorIs(t, err, proto.Error)
			}
			resp, _, err := broker.Call(context.Background(), r, testrenderer.Ping, wrapperspb.Bytes([]byte("still here")))
			require.NoError(t, err)
			assert.Equal(t, []byte("still here"), resp.GetValue())
			assert.Nil(t, r.Err())
			for _, e := range b.Events() {
				assert.False(t, e.Kind == broker.EventExited && e.PID == r.PID(), "renderer exited: %v", e.Err)
			}
		})
	}
}

// Warm renderers that die of their Lifetime while Acquire takes them from
// the pool and binds them must never stay published under their origin:
// every Acquire returns a renderer (perhaps one that dies under the next
// call) or the typed error of one that died binding, promptly. Before, a
// renderer that died between publication and bind stayed in the table and
// every later Acquire for its origin spun until its context ended.
func TestAcquireNeverKeepsADeadRenderer(t *testing.T) {
	p := strict()
	p.Limits.Lifetime = 500 * time.Millisecond
	// Hundreds of renderers: no logger, their logs would drown the test's.
	cfg := broker.Config{Policy: p, WarmPool: 3, MaxRenderers: 8}
	var b *broker.Broker
	for range 5 {
		// On a loaded machine (the race detector, parallel tests) a
		// spawn can outlast the Lifetime, and New fails with that
		// renderer's end: not what this test is about, so try again.
		var err error
		if b, err = broker.New(context.Background(), cfg); err == nil {
			break
		}
		var ee *broker.ExitError
		require.ErrorAs(t, err, &ee)
		require.Equal(t, broker.ExitTimeout, ee.Reason, "%v", err)
	}
	require.NotNil(t, b, "no warm pool within the renderers' Lifetime in 5 tries")
	t.Cleanup(func() { b.Close() })
	const workers = 6
	stop := time.Now().Add(4 * time.Second)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		failures []string
		served   int
		slowest  time.Duration
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(stop); i++ {
				origin := fmt.Sprintf("https://%d.example", (w+i)%3)
				// Generous: a renderer lives 500 ms, so an Acquire that is
				// still waiting after 15 s waits for one that is gone.
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				start := time.Now()
				r, err := b.Acquire(ctx, origin, "")
				took := time.Since(start)
				if err == nil {
					_, _, err = broker.Call(ctx, r, testrenderer.Ping, wrapperspb.Bytes([]byte("x")))
				}
				cancel()
				mu.Lock()
				slowest = max(slowest, took)
				switch {
				case err == nil:
					served++
				case errors.Is(err, broker.ErrRendererGone):
				default:
					failures = append(failures, fmt.Sprintf("%s: %v", origin, err))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	require.Empty(t, failures, "Acquire or Call failed with an error that is not a renderer's end")
	assert.Positive(t, served)
	t.Logf("%d calls served; slowest Acquire %v", served, slowest)
}

// userNSChildEnv makes TestUserNSRefusedInSandbox, run again inside
// bubblewrap, report what broker.New said.
const userNSChildEnv = "SANDKIT_USERNS_PROBE_CHILD"

// The broker asks the kernel for a user namespace rather than reading
// sysctls: inside a sandbox that forbids nested user namespaces (bubblewrap
// --disable-userns, where every sysctl looks permissive) it refuses to
// start, naming the layer, the limit and the fix. Before, it read the
// sysctls, found nothing wrong and started. The same probe lets a broker
// that an AppArmor profile allows start although
// kernel.apparmor_restrict_unprivileged_userns=1.
func TestUserNSRefusedInSandbox(t *testing.T) {
	if os.Getenv(userNSChildEnv) != "" {
		_, err := broker.New(context.Background(), broker.Config{Policy: strict()})
		var ue *policy.UnavailableError
		if errors.As(err, &ue) {
			fmt.Printf("userns-probe layer=%s\n", ue.Layer)
		}
		fmt.Printf("userns-probe err=%v\n", err)
		return
	}
	bwrap, err := exec.LookPath("bwrap")
	if err != nil {
		t.Skip("bubblewrap is not installed")
	}
	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(bwrap, "--unshare-user", "--disable-userns", "--bind", "/", "/", "--",
		exe, "-test.run=^TestUserNSRefusedInSandbox$", "-test.count=1")
	cmd.Env = append(os.Environ(), userNSChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "userns-probe layer="+string(policy.LayerUserNS)+"\n")
	for _, want := range []string{"isolation layer user-namespace unavailable", "user.max_user_namespaces", "run the broker outside it", "no space left on device"} {
		assert.Contains(t, strings.ToLower(string(out)), strings.ToLower(want))
	}
}

// goLandlockNewestABI is the newest Landlock ABI go-landlock v0.11.2 knows
// (landlock.V11): a newer kernel is held to it.
const goLandlockNewestABI = 11

// Each Landlock layer reports the ABI the renderer applied, the kernel's
// up to go-landlock's newest, and what it handles; before, the detail was
// the kernel's ABI whatever was applied (ABI 7 at most).
func TestLandlockReportsAppliedABI(t *testing.T) {
	kernel, err := llsys.LandlockGetABIVersion()
	require.NoError(t, err)
	applied := min(kernel, goLandlockNewestABI)
	prefix := fmt.Sprintf("ABI %d: ", applied)
	if applied != kernel {
		prefix = fmt.Sprintf("ABI %d (the kernel has %d): ", applied, kernel)
	}
	udp := "{bind_tcp,connect_tcp}; no UDP before ABI 10"
	if applied >= 10 {
		udp = "{bind_tcp,connect_tcp,bind_udp,connect_send_udp}"
	}
	b := newBroker(t, strict())
	r, err := b.Acquire(context.Background(), "https://a.example", "")
	require.NoError(t, err)
	details := map[policy.Layer]string{}
	for _, l := range r.Layers() {
		details[l.Layer] = l.Detail
	}
	assert.Regexp(t, "^"+regexp.QuoteMeta(prefix)+`\d+ filesystem rights$`, details[policy.LayerLandlockFS])
	assert.Equal(t, prefix+udp, details[policy.LayerLandlockNet])
	assert.Equal(t, prefix+"{abstract_unix_socket,signal}", details[policy.LayerLandlockScope])
}

// clone is allowed with exactly the flags that start a thread, the Go
// runtime's or glibc's pthread_create's, and nothing else: a task that
// looks like a thread (CLONE_THREAD set) but has a descriptor table or
// filesystem context of its own, or any further flag, is a violation the
// monitor reports as "clone". Threads still start: with the runtime's
// flags, through pthread_create (cgo, C libraries), and by the hundred
// until the thread limit. Before, every clone with CLONE_THREAD passed.
func TestCloneOnlyStartsThreads(t *testing.T) {
	const goThread = unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND | unix.CLONE_SYSVSEM | unix.CLONE_THREAD
	task := func(flags uint64) string { return fmt.Sprintf("clone-task:%#x", flags) }
	tests := []struct {
		name     string
		action   string
		want     string            // the renderer survives and answers this
		wantExit broker.ExitReason // or it ends for this reason
	}{
		{name: "the Go runtime's thread", action: task(goThread), want: "ok"},
		{name: "pthread_create", action: "pthread", want: "ok"},
		{name: "threads until the limit", action: "threads", wantExit: broker.ExitThreadLimit},
		{name: "own descriptor table", action: task(goThread &^ unix.CLONE_FILES), wantExit: broker.ExitViolation},
		{name: "own filesystem context", action: task(goThread &^ unix.CLONE_FS), wantExit: broker.ExitViolation},
		{name: "own mount namespace", action: task(goThread&^unix.CLONE_FS | unix.CLONE_NEWNS), wantExit: broker.ExitViolation},
		{name: "parent's sibling", action: task(goThread | unix.CLONE_PARENT), wantExit: broker.ExitViolation},
		{name: "untraced", action: task(goThread | unix.CLONE_UNTRACED), wantExit: broker.ExitViolation},
	}
	b := newBroker(t, strict())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := b.Acquire(context.Background(), "origin-"+tt.name, "")
			require.NoError(t, err)
			got, err := attempt(t, r, tt.action)
			if tt.wantExit == "" {
				require.NoError(t, err)
				assert.Equal(t, tt.want, got)
				return
			}
			var ee *broker.ExitError
			require.ErrorAs(t, err, &ee, "renderer answered %q", got)
			assert.Equal(t, tt.wantExit, ee.Reason, "%v", ee)
			if tt.wantExit == broker.ExitViolation {
				assert.Equal(t, "clone", ee.Syscall)
				assert.Equal(t, r.PID(), ee.PID)
			}
		})
	}
}
