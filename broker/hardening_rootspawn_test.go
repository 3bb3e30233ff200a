package broker_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/internal/fdtest"
	"github.com/sandkit/sandkit/policy"
)

// procFile returns a /proc/<pid> file of a renderer, trimmed.
func procFile(t *testing.T, pid int, name string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, name))
	require.NoError(t, err)
	return strings.TrimSpace(string(b))
}

// TestRootRendererStartsItselfAsItsID checks, as root, how a renderer
// with a host id of its own is started: it runs as that uid and gid with
// no supplementary group, its user namespace maps 0 to that id, and
// setgroups is denied there. The kernel lets a process write a gid map
// without CAP_SETGID over the parent namespace only once setgroups is
// denied, and only for its own gid: so the renderer mapped itself in a
// namespace its own id created (the two vfork steps), where os/exec's
// fork has the broker write the map and allow setgroups. The renderer is
// the broker's child, and the first step's process is reaped: the
// broker's only children are its live renderers. The broker's dumpable
// setting, which the children's change of ids changes for the memory they
// share with it, is what it was. As an ordinary user it checks the same
// of the broker's own ids, which a renderer maps in one step.
func TestRootRendererStartsItselfAsItsID(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ids := broker.IDRange{First: 1879048192 + 8192, Count: 2}
	b := newBroker(t, policy.Strict(), func(c *broker.Config) { c.RendererIDs = ids; c.MaxRenderers = 2 })
	dumpable, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	require.NoError(t, err)
	var pids []int
	for _, origin := range []string{"https://a.example", "https://b.example"} {
		r, err := b.Acquire(ctx, origin, "")
		require.NoError(t, err)
		pids = append(pids, r.PID())
		uids, gids := hostIDs(t, r)
		want := os.Getuid()
		if os.Geteuid() == 0 {
			id, err := strconv.Atoi(uids[0])
			require.NoError(t, err)
			assert.True(t, id >= int(ids.First) && id < int(ids.First+ids.Count), "uid %d outside %v", id, ids)
			want = id
		}
		assert.Equal(t, []string{strconv.Itoa(want), strconv.Itoa(want), strconv.Itoa(want), strconv.Itoa(want)}, uids, "Uid: real, effective, saved, filesystem")
		if os.Geteuid() == 0 {
			assert.Equal(t, uids, gids, "Gid: the uid's number")
			groups, err := procStatus(r.PID(), "Groups:")
			require.NoError(t, err)
			assert.Empty(t, groups, "supplementary groups")
		}
		assert.Equal(t, []string{"0", strconv.Itoa(want), "1"}, strings.Fields(procFile(t, r.PID(), "uid_map")))
		wantGID := want
		if os.Geteuid() != 0 {
			wantGID = os.Getgid()
		}
		assert.Equal(t, []string{"0", strconv.Itoa(wantGID), "1"}, strings.Fields(procFile(t, r.PID(), "gid_map")))
		assert.Equal(t, "deny", procFile(t, r.PID(), "setgroups"), "setgroups in the renderer's namespace")
		ppid, err := procStatus(r.PID(), "PPid:")
		require.NoError(t, err)
		assert.Equal(t, []string{strconv.Itoa(os.Getpid())}, ppid, "the renderer's parent")
		got, err := attempt(t, r, "uid")
		require.NoError(t, err)
		assert.Equal(t, "0 0", got, "uid and gid inside its user namespace")
	}
	assert.ElementsMatch(t, pids, children(t), "the broker's children are its renderers")
	after, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	require.NoError(t, err)
	assert.Equal(t, dumpable, after, "the broker's dumpable setting")
}

// TestRootSpawnStepFailureIsReported makes each of the two steps of a root
// broker's spawn fail the way a host can make them fail, and checks that
// Acquire names the step and its errno, and that neither child is left
// behind, nor a descriptor (the renderer's pidfd):
//   - the first step, running as the renderer's id, cannot clone the
//     renderer when that id is out of processes (RLIMIT_NPROC, here 1,
//     the first step itself; root is exempt, so the broker is not);
//   - the renderer cannot exec a file its id may not execute (the file
//     lost its o+x after broker.New checked it).
func TestRootSpawnStepFailureIsReported(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("renderers start as ids of their own only under a root broker")
	}
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, exe string)
		step  string
		errno syscall.Errno
	}{
		{"clone as the renderer's id", func(t *testing.T, _ string) {
			var old unix.Rlimit
			require.NoError(t, unix.Getrlimit(unix.RLIMIT_NPROC, &old))
			require.NoError(t, unix.Setrlimit(unix.RLIMIT_NPROC, &unix.Rlimit{Cur: 1, Max: old.Max}))
			t.Cleanup(func() { require.NoError(t, unix.Setrlimit(unix.RLIMIT_NPROC, &old)) })
		}, "renderer child: clone the renderer into its namespaces: ", syscall.EAGAIN},
		{"exec", func(t *testing.T, exe string) {
			require.NoError(t, os.Chmod(exe, 0o700))
		}, "renderer child: exec: ", syscall.EACCES},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			exe := copyExecutable(t)
			b := newBroker(t, policy.Strict(), func(c *broker.Config) { c.Path = exe })
			before := children(t)
			fdsBefore := openFDs(t)
			tc.setup(t, exe)
			_, err := b.Acquire(ctx, "https://a.example", "")
			require.Error(t, err)
			assert.ErrorContains(t, err, tc.step+tc.errno.Error())
			assert.ErrorIs(t, err, tc.errno)
			var unavailable *policy.UnavailableError
			assert.NotErrorAs(t, err, &unavailable, "a failed step of an unprivileged id is not a missing layer")
			assert.ElementsMatch(t, before, children(t), "children left behind")
			assert.Empty(t, fdtest.Added(fdsBefore, openFDs(t)), "descriptors leaked")
		})
	}
}

// copyExecutable copies the test binary, the renderer, into a new file
// executable by others.
func copyExecutable(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	src, err := os.Open(self)
	require.NoError(t, err)
	defer src.Close()
	path := filepath.Join(t.TempDir(), "renderer")
	dst, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	require.NoError(t, err)
	_, err = io.Copy(dst, src)
	require.NoError(t, dst.Close())
	require.NoError(t, err)
	return path
}

// TestRootRendererWithoutNamespacesSwitchesIDs checks, as root, a policy
// without namespaces: one vfork child switches to the renderer's id after
// its clone, so the renderer runs as that host uid and gid, with no
// supplementary group, in the broker's user namespace (the identity map).
func TestRootRendererWithoutNamespacesSwitchesIDs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("renderers start as ids of their own only under a root broker")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := policy.Strict()
	p.Namespaces = policy.Namespaces{}
	// An unprivileged id cannot drop the bounding set (CAP_SETPCAP).
	p.AllowDegraded = []policy.Layer{policy.LayerNoNewPrivs, policy.LayerCapabilities}
	ids := broker.IDRange{First: 1879048192 + 12288, Count: 1}
	b := newBroker(t, p, func(c *broker.Config) { c.RendererIDs = ids; c.MaxRenderers = 1 })
	r, err := b.Acquire(ctx, "https://a.example", "")
	require.NoError(t, err)
	uids, gids := hostIDs(t, r)
	id := strconv.Itoa(int(ids.First))
	assert.Equal(t, []string{id, id, id, id}, uids)
	assert.Equal(t, []string{id, id, id, id}, gids)
	groups, err := procStatus(r.PID(), "Groups:")
	require.NoError(t, err)
	assert.Empty(t, groups, "supplementary groups")
	self, err := os.Readlink("/proc/self/ns/user")
	require.NoError(t, err)
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", r.PID()))
	require.NoError(t, err)
	assert.Equal(t, self, ns, "the renderer's user namespace")
	got, err := attempt(t, r, "uid")
	require.NoError(t, err)
	assert.Equal(t, id+" "+id, got, "uid and gid as the renderer sees them")
}

// TestRootSpawnFallsBackToExec checks the fallback for a host where the
// renderer's id may not start itself in its namespaces: broker.New tries
// the two steps once, and when the first fails (here: the id is out of
// processes, RLIMIT_NPROC 1, during New) renderers start through os/exec,
// whose privileged parent writes the maps and allows setgroups in the
// renderer's namespace. The renderer still runs as its own id.
func TestRootSpawnFallsBackToExec(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("renderers start as ids of their own only under a root broker")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var old unix.Rlimit
	require.NoError(t, unix.Getrlimit(unix.RLIMIT_NPROC, &old))
	require.NoError(t, unix.Setrlimit(unix.RLIMIT_NPROC, &unix.Rlimit{Cur: 1, Max: old.Max}))
	ids := broker.IDRange{First: 1879048192 + 16384, Count: 1}
	b := newBroker(t, policy.Strict(), func(c *broker.Config) { c.RendererIDs = ids; c.MaxRenderers = 1 })
	require.NoError(t, unix.Setrlimit(unix.RLIMIT_NPROC, &old))
	r, err := b.Acquire(ctx, "https://a.example", "")
	require.NoError(t, err)
	uids, _ := hostIDs(t, r)
	assert.Equal(t, strconv.Itoa(int(ids.First)), uids[0])
	assert.Equal(t, "allow", procFile(t, r.PID(), "setgroups"), "maps written by os/exec's parent")
}

// TestRootBrokersSpawnAtOnce runs two root brokers in one process, each
// spawning renderers as ids of its own at the same time, as the document
// viewer's batch conversion does (a broker per document). The id switch of
// one spawn changes the dumpable setting of the whole process, which the
// other spawn's renderer needs on to write its id maps; spawns must not
// overlap ("deny setgroups: permission denied" when they did).
func TestRootBrokersSpawnAtOnce(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("renderers start as ids of their own only under a root broker")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const each = 12
	var wg sync.WaitGroup
	for i := range 2 {
		ids := broker.IDRange{First: 1879048192 + 20000 + uint32(i)*1000, Count: 64}
		b := newBroker(t, policy.Strict(), func(c *broker.Config) { c.RendererIDs = ids; c.MaxRenderers = each })
		for j := range each {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := b.Acquire(ctx, fmt.Sprintf("https://%d-%d.example", i, j), "")
				if assert.NoError(t, err) {
					r.Close()
				}
			}()
		}
	}
	wg.Wait()
}
