package ipc_test

// Tests and benchmarks between two processes: the test binary re-executes
// itself as the child (TestMain, selected by SANDKIT_IPC_CHILD); the
// SEQPACKET socket is the child's fd 3 and, for the stream benchmark, a
// SOCK_STREAM socket is its fd 4.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/sandkit/sandkit/internal/fdkind"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sandkit/sandkit/internal/bulkbench"
	"github.com/sandkit/sandkit/ipc"
	"github.com/sandkit/sandkit/ipc/shm"
)

const childEnv = "SANDKIT_IPC_CHILD"

type msg = wrapperspb.BytesValue

// The protocol between the test process and its child.
var (
	mDeliver = ipc.NewMethod[*msg, *msg](ipc.MethodSpec{Name: "deliver",
		RequestFDs: []ipc.FDKind{ipc.SealedMemfd, ipc.ReadOnlyFile, ipc.SharedRegion, ipc.SeccompListener}})
	mEcho       = ipc.NewMethod[*msg, *msg](ipc.MethodSpec{Name: "echo"})
	mEchoFD     = ipc.NewMethod[*msg, *msg](ipc.MethodSpec{Name: "echofd", RequestFDs: []ipc.FDKind{ipc.ReadOnlyFile}})
	mRegion     = ipc.NewMethod[*msg, *msg](ipc.MethodSpec{Name: "region", ResponseFDs: []ipc.FDKind{ipc.SharedRegion}})
	mFillRegion = ipc.NewMethod[*msg, *msg](ipc.MethodSpec{Name: "fillregion"})
	mSealed     = ipc.NewMethod[*msg, *msg](ipc.MethodSpec{Name: "sealed", ResponseFDs: []ipc.FDKind{ipc.SealedMemfd}})
	mStream     = ipc.NewMethod[*msg, *msg](ipc.MethodSpec{Name: "stream", ResponseFDs: []ipc.FDKind{ipc.SharedRegion}})
	mFillStream = ipc.NewMethod[*msg, *msg](ipc.MethodSpec{Name: "fillstream"})
)

const (
	deliverSealed = "sealed memfd contents"
	deliverFile   = "read-only file contents"
	deliverRegion = "shared region contents"
	bulkSize      = bulkbench.Size
	streamCap     = 1 << 20
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		if err := childMain(mode); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// startChild runs the test binary as a child in mode, with the other end of
// a SEQPACKET pair as its fd 3 (and of a stream pair as fd 4 if stream).
func startChild(t testing.TB, mode string, stream bool, env ...string) (seq *os.File, str *os.File, cmd *exec.Cmd) {
	t.Helper()
	a, b, err := ipc.SocketPair()
	require.NoError(t, err)
	extra := []*os.File{b}
	if stream {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		require.NoError(t, err)
		str = os.NewFile(uintptr(fds[0]), "stream")
		extra = append(extra, os.NewFile(uintptr(fds[1]), "stream-child"))
	}
	cmd = exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	cmd.Env = append(cmd.Env, env...)
	if stream {
		cmd.Env = append(cmd.Env, childEnv+"_STREAM=1")
	}
	cmd.ExtraFiles = extra
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	for _, f := range extra {
		f.Close()
	}
	t.Cleanup(func() {
		a.Close()
		if str != nil {
			str.Close()
		}
		if err := cmd.Wait(); err != nil {
			t.Errorf("child %s: %v", mode, err)
		}
	})
	return a, str, cmd
}

func childMain(mode string) error {
	seq := os.NewFile(3, "seq")
	switch mode {
	case "raw-echo":
		buf := make([]byte, 128)
		for {
			n, err := unix.Read(3, buf)
			if err != nil || n == 0 {
				return nil
			}
			if _, err := unix.Write(3, buf[:n]); err != nil {
				return nil
			}
		}
	case "deliver":
		return childDeliver(seq)
	case "serve":
		return childServe(seq)
	}
	return fmt.Errorf("unknown mode %q", mode)
}

// childDeliver sends one fd of each kind to the parent.
func childDeliver(seq *os.File) error {
	c, err := ipc.NewConn(seq)
	if err != nil {
		return err
	}
	defer c.Close()

	w, err := shm.Create("deliver", len(deliverSealed))
	if err != nil {
		return err
	}
	copy(w.Bytes(), deliverSealed)
	sealed, err := w.Seal()
	if err != nil {
		return err
	}
	defer sealed.Close()

	p := filepath.Join(os.TempDir(), fmt.Sprintf("sandkit-ipc-deliver-%d", os.Getpid()))
	if err := os.WriteFile(p, []byte(deliverFile), 0o600); err != nil {
		return err
	}
	ro, err := os.Open(p)
	os.Remove(p)
	if err != nil {
		return err
	}
	defer ro.Close()

	r, err := shm.NewRegion("deliver", 4096)
	if err != nil {
		return err
	}
	defer r.Close()
	copy(r.Bytes(), deliverRegion)

	listener, err := seccompListener()
	if err != nil {
		return err
	}
	defer listener.Close()

	resp, _, err := ipc.Call(context.Background(), c, mDeliver, &msg{}, sealed, ro, r.File(), listener)
	if err != nil {
		return err
	}
	if string(resp.Value) != "ok" {
		return fmt.Errorf("parent said %q", resp.Value)
	}
	return nil
}

// seccompListener installs an allow-all filter with a listener on a
// throwaway locked thread and returns the listener.
func seccompListener() (*os.File, error) {
	type result struct {
		fd  uintptr
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			ch <- result{0, err}
			return
		}
		prog := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW}}
		fprog := unix.SockFprog{Len: 1, Filter: &prog[0]}
		fd, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
			unix.SECCOMP_FILTER_FLAG_NEW_LISTENER, uintptr(unsafe.Pointer(&fprog)))
		if e != 0 {
			ch <- result{0, e}
			return
		}
		unix.CloseOnExec(int(fd))
		ch <- result{fd, nil}
	}()
	r := <-ch
	if r.err != nil {
		return nil, fmt.Errorf("seccomp listener: %w", r.err)
	}
	return os.NewFile(r.fd, "seccomp-listener"), nil
}

// childServe is the producer for the benchmarks.
func childServe(seq *os.File) error {
	tmpl := bulkbench.Template()
	region, err := shm.NewRegion("bulk", 2*bulkSize) // two slots
	if err != nil {
		return err
	}
	defer region.Close()
	ring, err := shm.NewStream("bulk-stream", streamCap)
	if err != nil {
		return err
	}
	defer ring.Close()
	var stream *os.File
	if os.Getenv(childEnv+"_STREAM") != "" {
		stream = os.NewFile(4, "stream")
	}
	mux := ipc.NewMux()
	ipc.Handle(mux, mEcho, func(ctx context.Context, req *msg, _ []*os.File) (*msg, []*os.File, error) {
		return req, nil, nil
	})
	ipc.Handle(mux, mEchoFD, func(ctx context.Context, req *msg, fds []*os.File) (*msg, []*os.File, error) {
		for _, f := range fds {
			f.Close()
		}
		return req, nil, nil
	})
	ipc.Handle(mux, mRegion, func(ctx context.Context, req *msg, _ []*os.File) (*msg, []*os.File, error) {
		f, err := region.Share()
		if err != nil {
			return nil, nil, err
		}
		return &msg{}, []*os.File{f}, nil
	})
	ipc.Handle(mux, mFillRegion, func(ctx context.Context, req *msg, _ []*os.File) (*msg, []*os.File, error) {
		slot := 0
		if len(req.Value) == 1 && req.Value[0] == 1 {
			slot = 1
		}
		// Hand the result over: one copy into the requested slot.
		copy(region.Bytes()[slot*bulkSize:(slot+1)*bulkSize], tmpl)
		return &msg{}, nil, nil
	})
	ipc.Handle(mux, mStream, func(ctx context.Context, req *msg, _ []*os.File) (*msg, []*os.File, error) {
		f, err := ring.Share()
		if err != nil {
			return nil, nil, err
		}
		return &msg{}, []*os.File{f}, nil
	})
	ipc.Handle(mux, mFillStream, func(ctx context.Context, req *msg, _ []*os.File) (*msg, []*os.File, error) {
		// Hand the result over: one copy into the ring, which the
		// receiver empties as it goes.
		return &msg{}, nil, ring.Write(ctx, tmpl)
	})
	ipc.Handle(mux, mSealed, func(ctx context.Context, req *msg, _ []*os.File) (*msg, []*os.File, error) {
		w, err := shm.Create("bulk-sealed", bulkSize)
		if err != nil {
			return nil, nil, err
		}
		copy(w.Bytes(), tmpl)
		f, err := w.Seal()
		if err != nil {
			return nil, nil, err
		}
		return &msg{}, []*os.File{f}, nil
	})
	// The socket producer: one trigger byte in, the result out, written
	// once from the producer's memory like the other paths.
	go func() {
		if stream == nil {
			return
		}
		var trig [1]byte
		for {
			if _, err := io.ReadFull(stream, trig[:]); err != nil {
				return
			}
			if _, err := stream.Write(tmpl); err != nil {
				return
			}
		}
	}()
	c, err := ipc.NewConn(seq, ipc.WithMux(mux))
	if err != nil {
		return err
	}
	<-c.Done()
	c.Close()
	if errors.Is(c.Err(), ipc.ErrPeerClosed) {
		return nil
	}
	return c.Err()
}

func TestCrossProcessDelivery(t *testing.T) {
	seq, _, cmd := startChild(t, "deliver", false)
	got := make(chan error, 1)
	mux := ipc.NewMux()
	ipc.Handle(mux, mDeliver, func(ctx context.Context, req *msg, fds []*os.File) (*msg, []*os.File, error) {
		defer func() {
			for _, f := range fds {
				f.Close()
			}
		}()
		got <- verifyDelivery(fds)
		return &msg{Value: []byte("ok")}, nil, nil
	})
	c, err := ipc.NewConn(seq, ipc.WithMux(mux))
	require.NoError(t, err)
	defer c.Close()
	cred, err := c.PeerCred()
	require.NoError(t, err)
	// SO_PEERCRED of a socketpair names its creator (this process), not
	// the child it was handed to.
	require.Equal(t, int32(os.Getpid()), cred.Pid)
	_ = cmd
	require.NoError(t, <-got)
	<-c.Done()
	require.ErrorIs(t, c.Err(), ipc.ErrPeerClosed)
}

func verifyDelivery(fds []*os.File) error {
	kinds := []ipc.FDKind{ipc.SealedMemfd, ipc.ReadOnlyFile, ipc.SharedRegion, ipc.SeccompListener}
	for i, k := range kinds {
		if err := fdkind.CheckFile(fds[i], fdkind.Kind(k)); err != nil {
			return err
		}
	}
	m, err := shm.Map(fds[0], len(deliverSealed))
	if err != nil {
		return err
	}
	defer m.Close()
	if string(m.Bytes()) != deliverSealed {
		return fmt.Errorf("sealed memfd: %q", m.Bytes())
	}
	b, err := io.ReadAll(fds[1])
	if err != nil {
		return err
	}
	if string(b) != deliverFile {
		return fmt.Errorf("file: %q", b)
	}
	if _, err := fds[1].Write([]byte("x")); err == nil {
		return errors.New("read-only file is writable")
	}
	r, err := shm.OpenRegion(fds[2], 4096)
	if err != nil {
		return err
	}
	defer r.Close()
	dst := make([]byte, len(deliverRegion))
	if err := r.CopyOut(dst, 0); err != nil {
		return err
	}
	if string(dst) != deliverRegion {
		return fmt.Errorf("region: %q", dst)
	}
	return nil
}

// TestCrossProcessStream reads results that a child process writes into
// an shm stream while the call that asked for each is in flight, and
// checks every byte.
func TestCrossProcessStream(t *testing.T) {
	seq, _, _ := startChild(t, "serve", false)
	c, err := ipc.NewConn(seq)
	require.NoError(t, err)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, fds, err := ipc.Call(ctx, c, mStream, &msg{})
	require.NoError(t, err)
	r, err := shm.OpenStream(fds[0], streamCap)
	fds[0].Close()
	require.NoError(t, err)
	defer r.Close()
	want := bulkbench.Template()
	got := make([]byte, bulkSize)
	for range 3 {
		fill, err := ipc.Start(ctx, c, mFillStream, &msg{})
		require.NoError(t, err)
		clear(got)
		require.NoError(t, r.ReadFull(ctx, got))
		_, _, err = fill.Wait(ctx)
		require.NoError(t, err)
		require.True(t, bytes.Equal(want, got), "stream delivered different bytes")
	}
}
