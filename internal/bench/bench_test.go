package bench_test

// Every benchmark here measures sandkit and its peers with the same test
// binary: TestMain turns it into a sandkit renderer (renderer.Requested),
// or into one of the unsandboxed children below when argv[1] is
// "--sandkit-bench=MODE". The mode travels in argv, not the environment,
// because bwrap and the broker pass argv through unchanged.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/internal/bulkbench"
	"github.com/sandkit/sandkit/internal/spawnbench"
	"github.com/sandkit/sandkit/internal/testrenderer"
	"github.com/sandkit/sandkit/ipc"
	"github.com/sandkit/sandkit/ipc/shm"
	"github.com/sandkit/sandkit/policy"
	"github.com/sandkit/sandkit/renderer"
)

const modeFlag = "--sandkit-bench="

func TestMain(m *testing.M) {
	if renderer.Requested() {
		renderer.Main(testrenderer.Register)
	}
	if len(os.Args) > 1 && strings.HasPrefix(os.Args[1], modeFlag) {
		if err := child(strings.TrimPrefix(os.Args[1], modeFlag), os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "bench child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// child runs one unsandboxed child mode. fd 3 is always the socket to the
// parent; fd 4, where present, is a second one.
func child(mode string, args []string) error {
	switch mode {
	case "ping":
		// Answer exactly one datagram, then exit: the spawn benchmarks'
		// "first reply".
		buf := make([]byte, 4096)
		n, err := unix.Read(3, buf)
		if err != nil {
			return err
		}
		_, err = unix.Write(3, buf[:n])
		return err
	case "raw-echo":
		buf := make([]byte, 4096)
		for {
			n, err := unix.Read(3, buf)
			if err != nil || n == 0 {
				return nil
			}
			if _, err := unix.Write(3, buf[:n]); err != nil {
				return nil
			}
		}
	case "ipc-serve":
		return serveIPC(os.NewFile(3, "seq"), nil)
	case "bulk":
		return serveIPC(os.NewFile(3, "seq"), os.NewFile(4, "stream"))
	case "grpc-serve":
		return serveGRPC(os.NewFile(3, "listener"))
	case "lockdown-steps":
		return lockdownSteps(args)
	}
	return fmt.Errorf("unknown mode %q", mode)
}

// executable is the test binary, by an absolute path bwrap can bind.
func executable(tb testing.TB) string {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	exe, err = filepath.EvalSymlinks(exe)
	if err != nil {
		tb.Fatal(err)
	}
	return exe
}

// seqpacketPair returns a blocking SEQPACKET pair: the parent end as a raw
// descriptor (for read/write without the poller), the child end as a file
// for ExtraFiles.
func seqpacketPair(tb testing.TB) (int, *os.File) {
	tb.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	return fds[0], os.NewFile(uintptr(fds[1]), "child-seq")
}

// startChild starts the test binary in mode with extra as fds 3, 4, ...,
// closes the parent's copies of extra, and kills and reaps the child when
// the benchmark ends.
func startChild(tb testing.TB, mode string, env []string, extra ...*os.File) *exec.Cmd {
	tb.Helper()
	cmd := exec.Command(executable(tb), modeFlag+mode)
	cmd.Env = append(os.Environ(), env...)
	cmd.ExtraFiles = extra
	cmd.Stderr = os.Stderr
	err := cmd.Start()
	for _, f := range extra {
		f.Close()
	}
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

// strict is the policy every sandkit measurement uses: policy.Strict, as
// shipped.
func strict() *policy.Policy { return policy.Strict() }

func newBroker(tb testing.TB, mod func(*broker.Config)) *broker.Broker {
	tb.Helper()
	cfg := broker.Config{Policy: strict()}
	if mod != nil {
		mod(&cfg)
	}
	br, err := broker.New(context.Background(), cfg)
	if err != nil {
		tb.Skipf("sandkit broker unavailable here: %v", err)
	}
	tb.Cleanup(func() { br.Close() })
	return br
}

// BenchmarkSpawn measures spawn-to-first-reply three ways. sandkit-cold
// is the framework's cold path: broker.Acquire (new namespaces, exec, full
// lockdown, ready, bind) and one Ping through ipc, with the renderer being
// this test binary re-executed (self-exec); sandkit-cold-dedicated is the
// same with a dedicated, statically linked renderer binary
// (internal/testrenderer/cmd/testrenderer, built here), which is what a
// program ships when cold spawns matter. bwrap is bubblewrap with every
// namespace (--unshare-all) around this binary in its "ping" mode, which
// answers one datagram on fd 3 without any lockdown of its own; forkexec is
// the same without bwrap: the floor of starting this binary at all. Each op
// is one spawn; the median is reported because the first spawns pay for
// page cache and the tail follows the machine's load.
func BenchmarkSpawn(b *testing.B) {
	ping := []byte("ping")
	b.Run("sandkit-cold", func(b *testing.B) {
		spawnbench.Cold(b, newBroker(b, func(c *broker.Config) { c.MaxRenderers = 4 }))
	})
	b.Run("sandkit-cold-dedicated", func(b *testing.B) {
		path := buildTestRenderer(b)
		spawnbench.Cold(b, newBroker(b, func(c *broker.Config) { c.MaxRenderers = 4; c.Path = path }))
	})
	exe := executable(b)
	raw := func(b *testing.B, argv []string) {
		var lat []time.Duration
		buf := make([]byte, 64)
		for b.Loop() {
			start := time.Now()
			fd, theirs := seqpacketPair(b)
			cmd := exec.Command(argv[0], argv[1:]...)
			cmd.ExtraFiles = []*os.File{theirs}
			cmd.Stderr = os.Stderr
			err := cmd.Start()
			theirs.Close()
			if err != nil {
				b.Fatal(err)
			}
			if _, err := unix.Write(fd, ping); err != nil {
				b.Fatal(err)
			}
			n, err := unix.Read(fd, buf)
			if err != nil || n != len(ping) {
				b.Fatalf("first reply: %d bytes, %v", n, err)
			}
			lat = append(lat, time.Since(start))
			b.StopTimer()
			unix.Close(fd)
			if err := cmd.Wait(); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		spawnbench.ReportMedian(b, lat)
	}
	b.Run("bwrap", func(b *testing.B) {
		argv, err := bwrapArgv(exe, modeFlag+"ping")
		if err != nil {
			b.Skipf("bwrap cannot run here (install the Debian package bubblewrap): %v", err)
		}
		raw(b, argv)
	})
	b.Run("forkexec", func(b *testing.B) {
		raw(b, []string{exe, modeFlag + "ping"})
	})
}

// buildTestRenderer builds the dedicated renderer (see
// testrenderer.BuildDedicated) into a temporary directory.
func buildTestRenderer(tb testing.TB) string {
	tb.Helper()
	path, err := testrenderer.BuildDedicated(context.Background(), tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	return path
}

// bwrapArgv is the bubblewrap command line around exe: every namespace,
// nothing but exe, the shared libraries it links (a cgo binary cannot
// start without its loader and libc; sandkit's renderer has them mapped
// before it locks down), a fresh /proc and a minimal /dev. It checks that
// bwrap runs at all.
func bwrapArgv(exe string, args ...string) ([]string, error) {
	bwrap, err := exec.LookPath("bwrap")
	if err != nil {
		return nil, err
	}
	argv := []string{bwrap, "--unshare-all", "--die-with-parent", "--ro-bind", exe, exe}
	libs, err := sharedLibs(exe)
	if err != nil {
		return nil, err
	}
	for _, l := range libs {
		src, err := filepath.EvalSymlinks(l)
		if err != nil {
			return nil, err
		}
		argv = append(argv, "--ro-bind", src, l)
	}
	argv = append(argv, "--proc", "/proc", "--dev", "/dev")
	probe := append(append([]string{}, argv...), exe, "-test.run=^$", "-test.bench=^$")
	if out, err := exec.Command(probe[0], probe[1:]...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("%v: %s", err, out)
	}
	return append(append(argv, exe), args...), nil
}

// sharedLibs lists the libraries exe loads, by the paths the loader looks
// them up at, from ldd.
func sharedLibs(exe string) ([]string, error) {
	out, err := exec.Command("ldd", exe).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && strings.Contains(string(ee.Stderr), "not a dynamic") {
			return nil, nil
		}
		return nil, fmt.Errorf("ldd: %w", err)
	}
	var libs []string
	for _, line := range strings.Split(string(out), "\n") {
		for _, f := range strings.Fields(line) {
			if strings.HasPrefix(f, "/") {
				libs = append(libs, f)
			}
		}
	}
	return libs, nil
}

// The protocol between the parent and its ipc-serve and bulk children.
// Ping is testrenderer's, so the ipc round trip runs the very method a
// renderer serves.
var (
	mStream = ipc.NewMethod[*wrapperspb.BytesValue, *wrapperspb.BytesValue](ipc.MethodSpec{
		Name: "bench.Stream", ResponseFDs: []ipc.FDKind{ipc.SharedRegion}})
	mFill = ipc.NewMethod[*wrapperspb.BytesValue, *wrapperspb.BytesValue](ipc.MethodSpec{Name: "bench.Fill"})
)

const (
	bulkSize  = bulkbench.Size
	streamCap = 1 << 20
)

// serveIPC serves Ping and, when stream is set, the bulk methods, until
// the parent hangs up.
func serveIPC(seq, stream *os.File) error {
	mux := ipc.NewMux()
	ipc.Handle(mux, testrenderer.Ping, func(_ context.Context, req *wrapperspb.BytesValue, _ []*os.File) (*wrapperspb.BytesValue, []*os.File, error) {
		return req, nil, nil
	})
	if stream != nil {
		tmpl := bulkbench.Template()
		ring, err := shm.NewStream("bulk", streamCap)
		if err != nil {
			return err
		}
		defer ring.Close()
		ipc.Handle(mux, mStream, func(context.Context, *wrapperspb.BytesValue, []*os.File) (*wrapperspb.BytesValue, []*os.File, error) {
			f, err := ring.Share()
			if err != nil {
				return nil, nil, err
			}
			return &wrapperspb.BytesValue{}, []*os.File{f}, nil
		})
		ipc.Handle(mux, mFill, func(ctx context.Context, _ *wrapperspb.BytesValue, _ []*os.File) (*wrapperspb.BytesValue, []*os.File, error) {
			return &wrapperspb.BytesValue{}, nil, ring.Write(ctx, tmpl)
		})
		go func() {
			one := make([]byte, 1)
			for {
				if _, err := stream.Read(one); err != nil {
					return
				}
				if _, err := stream.Write(tmpl); err != nil {
					return
				}
			}
		}()
	}
	c, err := ipc.NewConn(seq, ipc.WithMux(mux))
	if err != nil {
		return err
	}
	<-c.Done()
	return nil
}

// ipcChild starts an ipc-serve child and returns the parent's Conn and the
// child's pid.
func ipcChild(b *testing.B, env ...string) (*ipc.Conn, int) {
	mine, theirs, err := ipc.SocketPair()
	if err != nil {
		b.Fatal(err)
	}
	cmd := startChild(b, "ipc-serve", env, theirs)
	c, err := ipc.NewConn(mine)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c, cmd.Process.Pid
}

// BenchmarkRoundTrip64 is one 64-byte request and its 64-byte reply
// between two processes:
//
//   - ipc: ipc.Call of testrenderer.Ping (a 62-byte BytesValue, 64 bytes
//     encoded) to a child serving it on a Conn, as a broker calls a
//     renderer;
//   - ipc-gomaxprocs1: the same with the child at GOMAXPROCS=1
//     (diagnostic);
//   - raw-seqpacket: 64 bytes written and read back with blocking
//     write/read on a bare SEQPACKET pair, no framing: the floor;
//   - grpc-unix: a unary gRPC call over a unix socket, the same 64-byte
//     BytesValue, to a child running a grpc.Server.
func BenchmarkRoundTrip64(b *testing.B) {
	req := wrapperspb.Bytes(make([]byte, 62))
	ctx := context.Background()
	ipcCall := func(env ...string) func(*testing.B) {
		return func(b *testing.B) {
			c, _ := ipcChild(b, env...)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, _, err := ipc.Call(ctx, c, testrenderer.Ping, req); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.Run("ipc", ipcCall())
	b.Run("ipc-gomaxprocs1", ipcCall("GOMAXPROCS=1"))
	b.Run("raw-seqpacket", func(b *testing.B) {
		fd, theirs := seqpacketPair(b)
		defer unix.Close(fd)
		startChild(b, "raw-echo", nil, theirs)
		out := make([]byte, 64)
		in := make([]byte, 128)
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if _, err := unix.Write(fd, out); err != nil {
				b.Fatal(err)
			}
			if n, err := unix.Read(fd, in); err != nil || n != 64 {
				b.Fatal(n, err)
			}
		}
	})
	b.Run("grpc-unix", func(b *testing.B) { benchGRPC(b, req) })
}

// BenchmarkBulk8MiB moves 8 MiB from a child (producer) to the parent
// (receiver), which validates every byte (a checksum per 256 KiB chunk)
// of its own copy. It mirrors ipc's benchmark of the same name:
//
//   - shm: an ipc/shm stream (a 1 MiB ring in a shared region, shared
//     once): the parent asks for a result with ipc.Start, the child
//     writes it into the ring (StreamWriter.Write) while the parent copies
//     each 256 KiB out (StreamReader.ReadFull, the single fetch) and
//     validates the copy;
//   - socket: the child writes the 8 MiB into a SOCK_STREAM socket, the
//     parent reads them into its reused buffer and validates them.
func BenchmarkBulk8MiB(b *testing.B) {
	want := bulkbench.ChunkedSum(bulkbench.Template())
	ctx := context.Background()
	start := func(b *testing.B) (*ipc.Conn, *os.File) {
		mine, theirs, err := ipc.SocketPair()
		if err != nil {
			b.Fatal(err)
		}
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		stream := os.NewFile(uintptr(fds[0]), "stream")
		startChild(b, "bulk", nil, theirs, os.NewFile(uintptr(fds[1]), "child-stream"))
		c, err := ipc.NewConn(mine)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close(); stream.Close() })
		return c, stream
	}
	b.Run("shm", func(b *testing.B) {
		c, _ := start(b)
		_, fds, err := ipc.Call(ctx, c, mStream, &wrapperspb.BytesValue{})
		if err != nil {
			b.Fatal(err)
		}
		r, err := shm.OpenStream(fds[0], streamCap)
		fds[0].Close()
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		buf := make([]byte, bulkSize)
		b.SetBytes(bulkSize)
		b.ResetTimer()
		for b.Loop() {
			fill, err := ipc.Start(ctx, c, mFill, &wrapperspb.BytesValue{})
			if err != nil {
				b.Fatal(err)
			}
			err = bulkbench.Receive(buf, want, func(p []byte, _ int) error { return r.ReadFull(ctx, p) })
			if err != nil {
				b.Fatal(err)
			}
			if _, _, err := fill.Wait(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("socket", func(b *testing.B) {
		_, stream := start(b)
		buf := make([]byte, bulkSize)
		b.SetBytes(bulkSize)
		b.ResetTimer()
		for b.Loop() {
			if _, err := stream.Write([]byte{1}); err != nil {
				b.Fatal(err)
			}
			err := bulkbench.Receive(buf, want, func(p []byte, _ int) error {
				_, err := io.ReadFull(stream, p)
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}

// rssKiB is VmRSS of pid, from /proc/<pid>/status.
func rssKiB(pid int) (int, error) {
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(s), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.Atoi(strings.Fields(v)[0])
		}
	}
	return 0, fmt.Errorf("pid %d: no VmRSS", pid)
}

// Density parameters: how many idle renderers to hold at once, and how
// long each sits idle before its memory is read.
const (
	densityTarget = 200
	idleSettle    = 100 * time.Millisecond
)

// BenchmarkDensity holds densityTarget idle, locked renderers (strict
// policy, MaxRenderers 256), each bound and pinged once, and reports how
// many it reached, their total and per-renderer resident memory, and the
// resident memory of the same binary idle with no sandbox ("plain": an ipc
// server on fd 3 that has answered one Ping, which is what an idle renderer
// has done besides locking down; the median of 5, at the runtime's default
// GOMAXPROCS and at 1). The work runs once per call whatever
// b.N is (ns/op means nothing here): run it with -benchtime 1x, so that the
// testing package calls it once.
func BenchmarkDensity(b *testing.B) {
	br := newBroker(b, func(c *broker.Config) { c.MaxRenderers = 256 })
	ctx := context.Background()
	req := wrapperspb.Bytes([]byte("ping"))
	var rs []*broker.Renderer
	defer func() {
		for _, r := range rs {
			r.Close()
		}
		for _, r := range rs {
			<-r.Done()
		}
	}()
	for i := range densityTarget {
		r, err := br.Acquire(ctx, "o"+strconv.Itoa(i), "")
		if err == nil {
			_, _, err = broker.Call(ctx, r, testrenderer.Ping, req)
		}
		if err != nil {
			b.Logf("renderer %d: %v", i+1, err)
			break
		}
		rs = append(rs, r)
	}
	time.Sleep(idleSettle)
	total := 0
	for _, r := range rs {
		kib, err := rssKiB(r.PID())
		if err != nil {
			b.Fatal(err)
		}
		total += kib
	}
	plainRSS := func(env ...string) float64 {
		var kibs []int
		for range 5 {
			c, pid := ipcChild(b, env...)
			if _, _, err := ipc.Call(ctx, c, testrenderer.Ping, req); err != nil {
				b.Fatal(err)
			}
			time.Sleep(idleSettle)
			kib, err := rssKiB(pid)
			if err != nil {
				b.Fatal(err)
			}
			kibs = append(kibs, kib)
			c.Close()
		}
		sort.Ints(kibs)
		return float64(kibs[len(kibs)/2])
	}
	plain, plain1 := plainRSS(), plainRSS("GOMAXPROCS=1")
	b.ReportMetric(float64(len(rs)), "renderers")
	b.ReportMetric(float64(total)/1024, "total-RSS-MiB")
	if len(rs) > 0 {
		b.ReportMetric(float64(total)/float64(len(rs)), "renderer-RSS-KiB")
	}
	b.ReportMetric(plain, "plain-RSS-KiB")
	// A diagnostic: how much of an idle Go process is per-P state.
	b.ReportMetric(plain1, "plain-gomaxprocs1-RSS-KiB")
}
