package broker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/policy"
)

// buildForeign compiles testdata/foreignprog.c, a program that knows
// nothing of sandkit, statically, into a directory the renderer's id may
// search: a root broker's programs run as ids of their own.
func buildForeign(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		require.NoError(t, os.Chmod(d, 0o755))
	}
	prog := filepath.Join(dir, "foreignprog")
	out, err := exec.Command("gcc", "-static", "-O1", "-Wall", "-o", prog, "testdata/foreignprog.c").CombinedOutput()
	require.NoError(t, err, "gcc: %s", out)
	require.NoError(t, os.Chmod(prog, 0o755))
	return prog
}

// foreignPolicy is policy.Strict with what the static test program needs
// on top (glibc's start-up: arch_prctl, and readlink of /proc/self/exe,
// which finds nothing) and a budget for an output memfd.
func foreignPolicy() *policy.Policy {
	p := strict()
	p.Seccomp.Allow = []string{"arch_prctl", "readlink"}
	p.Limits.SharedMemory = 1 << 20
	return p
}

func runForeign(t *testing.T, b *broker.Broker, prog broker.Program) *broker.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := b.RunProgram(ctx, "origin", "doc", prog)
	require.NoError(t, err)
	require.NotNil(t, res.Exit)
	return res
}

// inputPipe returns the read end of a pipe holding data, its write end
// closed.
func inputPipe(t *testing.T, data string) *os.File {
	t.Helper()
	r, w, err := os.Pipe()
	require.NoError(t, err)
	_, err = w.WriteString(data)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	t.Cleanup(func() { r.Close() })
	return r
}

// inputMemfd returns a sealed memfd holding data.
func inputMemfd(t *testing.T, data string) *os.File {
	t.Helper()
	fd, err := unix.MemfdCreate("input", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	require.NoError(t, err)
	f := os.NewFile(uintptr(fd), "input")
	t.Cleanup(func() { f.Close() })
	_, err = f.WriteString(data)
	require.NoError(t, err)
	_, err = f.Seek(0, io.SeekStart)
	require.NoError(t, err)
	_, err = unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_WRITE|unix.F_SEAL_GROW|unix.F_SEAL_SHRINK|unix.F_SEAL_SEAL)
	require.NoError(t, err)
	return f
}

func assertAllLayers(t *testing.T, p *policy.Policy, got policy.Status) {
	t.Helper()
	for _, l := range p.Requested() {
		assert.True(t, got.Active(l), "layer %s not in force: %v", l, got)
	}
}

// TestForeignProgramIO runs programs that know nothing of sandkit, the
// test's own and /bin/cat, under the strict policy: each reads the input
// descriptor the broker installed and writes the output descriptor the
// broker made, with every layer in force and the same events as a Go
// renderer.
func TestForeignProgramIO(t *testing.T) {
	prog := buildForeign(t)
	const text = "hello foreign\n"
	cat := foreignPolicy()
	// /bin/cat is dynamic: the loader maps libc executable, and libc
	// asks a few more things at start.
	cat.Seccomp.DenyExecMemory = false
	cat.Seccomp.Allow = []string{"arch_prctl", "access", "fadvise64", "copy_file_range"}
	cat.Filesystem.ExecutablePaths = []string{"/lib64", "/lib/x86_64-linux-gnu"}
	// With the loader's cache, it opens libc by name; without, it
	// would stat its search directories by path.
	cat.Filesystem.ReadOnlyPaths = []string{"/etc/ld.so.cache"}
	for _, tc := range []struct {
		name   string
		p      *policy.Policy
		prog   broker.Program
		output string
	}{
		{"pipe in, pipe out", foreignPolicy(),
			broker.Program{Path: prog, Args: []string{"foreignprog", "echo"}, Input: inputPipe(t, text), Output: broker.Output{Limit: 1 << 10}},
			strings.ToUpper(text)},
		{"memfd in, memfd out", foreignPolicy(),
			broker.Program{Path: prog, Args: []string{"foreignprog", "echo"}, Input: inputMemfd(t, text), Output: broker.Output{Kind: broker.OutputMemfd, Limit: 1 << 10}},
			strings.ToUpper(text)},
		{"numbered fds", foreignPolicy(),
			// The program reads 0 and writes 1: a shell-style
			// redirection of another program's numbers would be
			// the caller's Args; here the broker's numbers are
			// asserted by the program failing otherwise.
			broker.Program{Path: prog, Args: []string{"foreignprog", "echo"}, Input: inputPipe(t, text), InputFD: 0, Output: broker.Output{FD: 1, Limit: 1 << 10}},
			strings.ToUpper(text)},
		{"/bin/cat", cat,
			broker.Program{Path: "/bin/cat", Input: inputMemfd(t, text), Output: broker.Output{Kind: broker.OutputMemfd, Limit: 1 << 10}},
			text},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBroker(t, tc.p)
			res := runForeign(t, b, tc.prog)
			require.Equal(t, broker.ExitClean, res.Exit.Reason, "%v", res.Exit)
			assert.Equal(t, 0, res.ExitCode)
			got := string(res.Output)
			if tc.prog.Output.Kind == broker.OutputMemfd {
				require.NotNil(t, res.File)
				defer res.File.Close()
				assert.Equal(t, int64(len(tc.output)), res.Written)
				buf := make([]byte, res.Written)
				_, err := res.File.ReadAt(buf, 0)
				require.NoError(t, err)
				got = string(buf)
				seals, err := unix.FcntlInt(res.File.Fd(), unix.F_GET_SEALS, 0)
				require.NoError(t, err)
				assert.Equal(t, unix.F_SEAL_WRITE|unix.F_SEAL_GROW|unix.F_SEAL_SHRINK|unix.F_SEAL_SEAL, seals, "the result memfd is sealed")
			}
			assert.Equal(t, tc.output, got)
			assertAllLayers(t, tc.p, res.Layers)
			var kinds []broker.EventKind
			for _, e := range b.Events() {
				if e.PID == res.PID {
					kinds = append(kinds, e.Kind)
				}
			}
			assert.Equal(t, []broker.EventKind{broker.EventReady, broker.EventBound, broker.EventExited}, kinds)
			assert.Empty(t, b.Renderers(), "an ended program is no longer live")
		})
	}
}

// TestForeignProgramLive checks that a running program is one of the
// broker's renderers, as a Go renderer is: listed with its origin,
// document and layers, until it ends.
func TestForeignProgramLive(t *testing.T) {
	prog := buildForeign(t)
	p := foreignPolicy()
	b := newBroker(t, p)
	in, w, err := os.Pipe()
	require.NoError(t, err)
	defer in.Close()
	defer w.Close()
	done := make(chan *broker.Result, 1)
	go func() {
		res, err := b.RunProgram(context.Background(), "origin", "doc", broker.Program{
			Path: prog, Args: []string{"foreignprog", "echo"}, Input: in, Output: broker.Output{Limit: 1 << 10}})
		assert.NoError(t, err)
		done <- res
	}()
	var live []broker.RendererStatus
	require.Eventually(t, func() bool {
		live = b.Renderers()
		return len(live) == 1
	}, 30*time.Second, 5*time.Millisecond)
	assert.Equal(t, "origin", live[0].Origin)
	assert.Equal(t, "doc", live[0].Document)
	assert.True(t, live[0].Bound)
	assertAllLayers(t, p, live[0].Layers)
	_, err = w.WriteString("live\n")
	require.NoError(t, err)
	require.NoError(t, w.Close())
	res := <-done
	require.Equal(t, broker.ExitClean, res.Exit.Reason, "%v", res.Exit)
	assert.Equal(t, live[0].PID, res.PID)
	assert.Equal(t, "LIVE\n", string(res.Output))
	assert.Empty(t, b.Renderers())
}

// TestForeignProgramViolations: a foreign program that tries what its
// policy does not allow is killed by the violation monitor, which names
// the syscall; the launcher's one exec cannot be repeated.
func TestForeignProgramViolations(t *testing.T) {
	prog := buildForeign(t)
	p := foreignPolicy()
	b := newBroker(t, p)
	exeNum := strconv.FormatUint(p.Limits.OpenFiles, 10)
	for _, tc := range []struct {
		name    string
		args    []string
		syscall string
		output  string
	}{
		{"socket", []string{"socket"}, "socket", ""},
		// Without allow_children, fork is a clone the filter refuses.
		{"fork", []string{"forkbomb"}, "clone", ""},
		// The descriptor the launcher exec'd through is at
		// RLIMIT_NOFILE: the program cannot make that number again
		// (dup3: EBADF), so the launcher's execveat rule gives it nothing,
		// and execve is a violation.
		{"exec", []string{"reexec", exeNum}, "execve", fmt.Sprintf("dup3 -1 errno %d\nexecveat -1 errno %d\n", unix.EBADF, unix.EBADF)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := runForeign(t, b, broker.Program{Path: prog, Args: append([]string{"foreignprog"}, tc.args...), Output: broker.Output{Limit: 1 << 10}})
			require.Equal(t, broker.ExitViolation, res.Exit.Reason, "%v", res.Exit)
			assert.Equal(t, tc.syscall, res.Exit.Syscall)
			assert.Equal(t, "disallowed by the seccomp policy", res.Exit.Detail)
			assert.Equal(t, -1, res.ExitCode)
			assert.Equal(t, tc.output, string(res.Output))
		})
	}
}

// TestForeignProgramForkBomb: with allow_children, a fork bomb is
// stopped by the thread limit (RLIMIT_NPROC counts every task of the
// renderer's user: the program and its children), and the children die
// with the program, pid 1 of their namespace: nothing holds their input
// pipe afterwards.
func TestForeignProgramForkBomb(t *testing.T) {
	prog := buildForeign(t)
	p := foreignPolicy()
	p.Seccomp.AllowChildren = true
	p.Limits.Threads = 16
	b := newBroker(t, p)
	in, w, err := os.Pipe()
	require.NoError(t, err)
	defer w.Close()
	res := runForeign(t, b, broker.Program{Path: prog, Args: []string{"foreignprog", "forkbomb"}, Input: in, Output: broker.Output{Limit: 1 << 10}})
	require.NoError(t, in.Close())
	require.Equal(t, broker.ExitClean, res.Exit.Reason, "%v", res.Exit)
	assert.Equal(t, fmt.Sprintf("forked %d errno %d\n", p.Limits.Threads-1, unix.EAGAIN), string(res.Output))
	_, err = w.Write([]byte{1})
	assert.ErrorIs(t, err, syscall.EPIPE, "a child of the program outlived it, holding its input")
}

// TestForeignProgramFilesystem: the program sees its binds and tmpfs
// and nothing else of the host, and may write only to the tmpfs. Each
// probe's errno is exact: ENOENT where the empty root has nothing,
// EROFS on the read-only mounts, EACCES where Landlock alone refuses.
func TestForeignProgramFilesystem(t *testing.T) {
	prog := buildForeign(t)
	data := t.TempDir()
	require.NoError(t, os.Chmod(data, 0o755))
	file := filepath.Join(data, "file")
	// Writable by all, so that the refusal is the mount's, not the
	// file's mode, whichever id the program runs as.
	require.NoError(t, os.WriteFile(file, []byte("data"), 0o666))
	require.NoError(t, os.Chmod(file, 0o666))
	// Next to the program on the host, not bound.
	sibling := filepath.Join(filepath.Dir(prog), "sibling")
	require.NoError(t, os.WriteFile(sibling, []byte("secret"), 0o644))

	p := foreignPolicy()
	p.Filesystem.ReadOnlyPaths = []string{data}
	p.Filesystem.Tmpfs = []policy.Tmpfs{{Path: "/scratch", Size: 64 << 10}}
	p.Limits.FileSize = 1 << 20
	b := newBroker(t, p)
	probes := []struct {
		op, path string
		errno    syscall.Errno
	}{
		{"read", "/etc/passwd", unix.ENOENT},
		{"read", "/proc/self/status", unix.ENOENT},
		{"read", sibling, unix.ENOENT},
		{"read", file, 0},
		{"read", prog, 0},
		{"write", file, unix.EROFS},
		{"create", filepath.Join(data, "new"), unix.EROFS},
		{"create", "/new", unix.EROFS},
		{"create", "/scratch/new", 0},
		// The empty root's own directories: no Landlock rule covers
		// them.
		{"dir", "/", unix.EACCES},
		{"dir", "/scratch", 0},
	}
	args := []string{"foreignprog", "fs"}
	var want strings.Builder
	for _, pr := range probes {
		args = append(args, pr.op, pr.path)
		fmt.Fprintf(&want, "%s %s %d\n", pr.op, pr.path, pr.errno)
	}
	res := runForeign(t, b, broker.Program{Path: prog, Args: args, Output: broker.Output{Limit: 4 << 10}})
	require.Equal(t, broker.ExitClean, res.Exit.Reason, "%v", res.Exit)
	assert.Equal(t, want.String(), string(res.Output))

	// The tmpfs holds its size and no more.
	res = runForeign(t, b, broker.Program{Path: prog, Args: []string{"foreignprog", "fill", "/scratch/big"}, Output: broker.Output{Limit: 1 << 10}})
	require.Equal(t, broker.ExitClean, res.Exit.Reason, "%v", res.Exit)
	assert.Equal(t, fmt.Sprintf("wrote %d errno %d\n", 64<<10, unix.ENOSPC), string(res.Output))
}

// TestForeignProgramOutputBounds: the output is bounded by the broker,
// whichever way it travels.
func TestForeignProgramOutputBounds(t *testing.T) {
	prog := buildForeign(t)
	b := newBroker(t, foreignPolicy())
	big := strings.Repeat("x", 100)

	res := runForeign(t, b, broker.Program{Path: prog, Args: []string{"foreignprog", "echo"}, Input: inputPipe(t, big), Output: broker.Output{Limit: 10}})
	require.Equal(t, broker.ExitBrokerLimit, res.Exit.Reason, "%v", res.Exit)
	assert.Equal(t, "output over 10 bytes", res.Exit.Detail)
	assert.Len(t, res.Output, 10)

	// A memfd's size is sealed: the write is cut at it, the next one
	// fails (EPERM), and the program ends as it sees fit (status 3: a
	// short write).
	res = runForeign(t, b, broker.Program{Path: prog, Args: []string{"foreignprog", "echo"}, Input: inputPipe(t, big), Output: broker.Output{Kind: broker.OutputMemfd, Limit: 10}})
	defer res.File.Close()
	require.Equal(t, broker.ExitCrash, res.Exit.Reason, "%v", res.Exit)
	assert.Equal(t, 3, res.ExitCode)
	assert.Equal(t, int64(10), res.Written)
	buf := make([]byte, 11)
	n, _ := res.File.ReadAt(buf, 0)
	assert.Equal(t, strings.Repeat("X", 10), string(buf[:n]), "the memfd holds its size and no more")

	// A memfd counts against Limits.SharedMemory: one larger is
	// refused before anything starts.
	readies := func() int {
		return len(slices.DeleteFunc(b.Events(), func(e broker.Event) bool { return e.Kind != broker.EventReady }))
	}
	before := readies()
	_, err := b.RunProgram(context.Background(), "origin", "doc", broker.Program{Path: prog, Args: []string{"foreignprog", "echo"}, Output: broker.Output{Kind: broker.OutputMemfd, Limit: 2 << 20}})
	require.ErrorIs(t, err, broker.ErrProgram)
	assert.Contains(t, err.Error(), "over Limits.SharedMemory")
	assert.Equal(t, before, readies(), "nothing started")
}

// TestForeignProgramLaunchFailure: a layer the launcher cannot apply
// fails the start and names the layer; nothing runs.
func TestForeignProgramLaunchFailure(t *testing.T) {
	prog := buildForeign(t)
	p := foreignPolicy()
	p.Filesystem.ReadOnlyPaths = []string{"/nonexistent-sandkit-path"}
	b := newBroker(t, p)
	_, err := b.RunProgram(context.Background(), "origin", "doc", broker.Program{Path: prog, Args: []string{"foreignprog", "echo"}, Output: broker.Output{Limit: 10}})
	var ue *policy.UnavailableError
	require.True(t, errors.As(err, &ue), "%v", err)
	assert.Equal(t, policy.LayerMountNS, ue.Layer)
	assert.ErrorIs(t, err, unix.ENOENT)
	assert.Contains(t, err.Error(), "mount /nonexistent-sandkit-path")
	assert.Empty(t, b.Renderers())
}

// TestForeignProgramEnds: a running program ends with its context
// (ExitReleased) and with its broker (ExitShutdown), like a Go renderer.
func TestForeignProgramEnds(t *testing.T) {
	prog := buildForeign(t)
	for _, tc := range []struct {
		name string
		end  func(cancel context.CancelFunc, b *broker.Broker)
		want broker.ExitReason
	}{
		{"context", func(cancel context.CancelFunc, _ *broker.Broker) { cancel() }, broker.ExitReleased},
		{"broker closed", func(_ context.CancelFunc, b *broker.Broker) { b.Close() }, broker.ExitShutdown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBroker(t, foreignPolicy())
			in, w, err := os.Pipe()
			require.NoError(t, err)
			defer in.Close()
			defer w.Close() // never written: the program waits on it
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan *broker.Result, 1)
			go func() {
				res, err := b.RunProgram(ctx, "origin", "doc", broker.Program{
					Path: prog, Args: []string{"foreignprog", "echo"}, Input: in, Output: broker.Output{Limit: 1 << 10}})
				assert.NoError(t, err)
				done <- res
			}()
			require.Eventually(t, func() bool { return len(b.Renderers()) == 1 }, 30*time.Second, 5*time.Millisecond)
			tc.end(cancel, b)
			select {
			case res := <-done:
				require.NotNil(t, res)
				assert.Equal(t, tc.want, res.Exit.Reason, "%v", res.Exit)
			case <-time.After(30 * time.Second):
				t.Fatal("the program outlived its end")
			}
		})
	}
}

// BenchmarkRunProgram measures a foreign program's whole run: plan,
// launch (root, binds, limits, Landlock, filter), exec, exit, reap.
func BenchmarkRunProgram(b *testing.B) {
	dir := b.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		require.NoError(b, os.Chmod(d, 0o755))
	}
	prog := filepath.Join(dir, "foreignprog")
	out, err := exec.Command("gcc", "-static", "-O1", "-o", prog, "testdata/foreignprog.c").CombinedOutput()
	require.NoError(b, err, "gcc: %s", out)
	br := newBroker(b, foreignPolicy())
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		res, err := br.RunProgram(ctx, "origin", "doc", broker.Program{Path: prog, Args: []string{"foreignprog", "exit", "0"}, Output: broker.Output{Limit: 1}})
		if err != nil || res.Exit.Reason != broker.ExitClean {
			b.Fatalf("%v %v", err, res.Exit)
		}
	}
}

// TestForeignProgramDescriptors: the program holds the descriptors the
// broker chose and nothing else: not the broker's (which its copied table
// started with), not its seccomp listener, not the descriptor it was
// exec'd through nor the socket the listener went out on.
func TestForeignProgramDescriptors(t *testing.T) {
	prog := buildForeign(t)
	p := foreignPolicy()
	b := newBroker(t, p)
	// Descriptors of the broker's, open while it spawns, some without
	// close-on-exec (as a parent may leave them), which exec alone
	// would pass on.
	for i := range 6 {
		flags := unix.O_RDONLY
		if i%2 == 0 {
			flags |= unix.O_CLOEXEC
		}
		fd, err := unix.Open(prog, flags, 0)
		require.NoError(t, err)
		defer unix.Close(fd)
	}
	upTo := strconv.FormatUint(p.Limits.OpenFiles+8, 10)
	for _, tc := range []struct {
		name string
		prog broker.Program
		want string
	}{
		{"no input", broker.Program{Output: broker.Output{Limit: 1 << 10}}, "1\n2\n"},
		{"input on 0", broker.Program{Input: inputPipe(t, ""), Output: broker.Output{Limit: 1 << 10}}, "0\n1\n2\n"},
		{"input on 5, output on 4", broker.Program{Input: inputPipe(t, ""), InputFD: 5, Output: broker.Output{FD: 4, Limit: 1 << 10}}, "2\n4\n5\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := max(tc.prog.Output.FD, 1)
			tc.prog.Path, tc.prog.Args = prog, []string{"foreignprog", "fds", upTo, strconv.Itoa(out)}
			res := runForeign(t, b, tc.prog)
			require.Equal(t, broker.ExitClean, res.Exit.Reason, "%v", res.Exit)
			assert.Equal(t, tc.want, string(res.Output))
		})
	}
}
