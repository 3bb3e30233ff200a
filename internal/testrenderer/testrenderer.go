// Package testrenderer is a renderer for the framework's own tests and
// benchmarks: after lockdown it answers pings and, on request, attempts one
// thing a compromised renderer would try, reporting the errno it got —
// when the sandbox lets it live long enough to report.
package testrenderer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sandkit/sandkit/internal/control"
	"github.com/sandkit/sandkit/internal/control/controlpb"
	"github.com/sandkit/sandkit/ipc"
	"github.com/sandkit/sandkit/ipc/shm"
	"github.com/sandkit/sandkit/renderer"
)

// Ping echoes its argument.
var Ping = ipc.NewMethod[*wrapperspb.BytesValue, *wrapperspb.BytesValue](ipc.MethodSpec{
	Name: "test.Ping", MaxRequestBytes: 4096, MaxResponseBytes: 4096,
})

// Attempt performs one named action (see Actions) and answers with the
// errno it produced ("ok" for success) or a description.
var Attempt = ipc.NewMethod[*wrapperspb.StringValue, *wrapperspb.StringValue](ipc.MethodSpec{
	Name: "test.Attempt", MaxRequestBytes: 4096, MaxResponseBytes: 64 << 10,
})

// ReadFile reads the handed-in read-only file and answers its contents.
var ReadFile = ipc.NewMethod[*wrapperspb.StringValue, *wrapperspb.BytesValue](ipc.MethodSpec{
	Name: "test.ReadFile", MaxRequestBytes: 4096, MaxResponseBytes: 32 << 10,
	RequestFDs: []ipc.FDKind{ipc.ReadOnlyFile},
})

// OpenResource asks the broker for a resource by name and answers its
// contents, or the error text.
var OpenResource = ipc.NewMethod[*wrapperspb.StringValue, *wrapperspb.StringValue](ipc.MethodSpec{
	Name: "test.OpenResource", MaxRequestBytes: 4096, MaxResponseBytes: 32 << 10,
})

// OpenStream makes the renderer's shm stream, whose ring holds the
// requested number of bytes, and answers its memfd. A renderer has one.
var OpenStream = ipc.NewMethod[*wrapperspb.UInt32Value, *wrapperspb.BytesValue](ipc.MethodSpec{
	Name: "test.OpenStream", MaxRequestBytes: 64, MaxResponseBytes: 64,
	ResponseFDs: []ipc.FDKind{ipc.SharedRegion},
})

// FillStream writes the requested number of bytes of StreamBytes into the
// stream and answers once they are all published.
var FillStream = ipc.NewMethod[*wrapperspb.UInt64Value, *wrapperspb.BytesValue](ipc.MethodSpec{
	Name: "test.FillStream", MaxRequestBytes: 64, MaxResponseBytes: 64,
})

// StreamBytes is what FillStream writes: n bytes of a fixed pattern.
func StreamBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>12)
	}
	return b
}

// Register adds the test methods to mux.
func Register(s *renderer.Session, mux *ipc.Mux) {
	var (
		streamMu sync.Mutex
		stream   *shm.StreamWriter
	)
	ipc.Handle(mux, OpenStream, func(_ context.Context, req *wrapperspb.UInt32Value, _ []*os.File) (*wrapperspb.BytesValue, []*os.File, error) {
		streamMu.Lock()
		defer streamMu.Unlock()
		if stream != nil {
			return nil, nil, ipc.Errorf(ipc.CodeAlreadyExists, "the stream is open")
		}
		w, err := shm.NewStream("test", int(req.GetValue()))
		if err != nil {
			return nil, nil, err
		}
		f, err := w.Share()
		if err != nil {
			w.Close()
			return nil, nil, err
		}
		stream = w
		return &wrapperspb.BytesValue{}, []*os.File{f}, nil
	})
	ipc.Handle(mux, FillStream, func(ctx context.Context, req *wrapperspb.UInt64Value, _ []*os.File) (*wrapperspb.BytesValue, []*os.File, error) {
		streamMu.Lock()
		w := stream
		streamMu.Unlock()
		if w == nil {
			return nil, nil, ipc.Errorf(ipc.CodeFailedPrecondition, "no stream")
		}
		if req.GetValue() > 64<<20 {
			return nil, nil, ipc.Errorf(ipc.CodeInvalidArgument, "%d bytes is too many", req.GetValue())
		}
		return &wrapperspb.BytesValue{}, nil, w.Write(ctx, StreamBytes(int(req.GetValue())))
	})
	ipc.Handle(mux, Ping, func(_ context.Context, req *wrapperspb.BytesValue, _ []*os.File) (*wrapperspb.BytesValue, []*os.File, error) {
		return req, nil, nil
	})
	ipc.Handle(mux, Attempt, func(ctx context.Context, req *wrapperspb.StringValue, _ []*os.File) (*wrapperspb.StringValue, []*os.File, error) {
		return wrapperspb.String(attempt(ctx, s, req.GetValue())), nil, nil
	})
	ipc.Handle(mux, ReadFile, func(_ context.Context, _ *wrapperspb.StringValue, fds []*os.File) (*wrapperspb.BytesValue, []*os.File, error) {
		defer fds[0].Close()
		b := make([]byte, 16<<10)
		n, err := fds[0].Read(b)
		if err != nil {
			return nil, nil, err
		}
		return wrapperspb.Bytes(b[:n]), nil, nil
	})
	ipc.Handle(mux, OpenResource, func(ctx context.Context, req *wrapperspb.StringValue, _ []*os.File) (*wrapperspb.StringValue, []*os.File, error) {
		f, err := s.Open(ctx, req.GetValue())
		if err != nil {
			return wrapperspb.String("error: " + err.Error()), nil, nil
		}
		defer f.Close()
		b := make([]byte, 16<<10)
		n, _ := f.Read(b)
		return wrapperspb.String(string(b[:n])), nil, nil
	})
}

// result renders an error as its errno name ("EACCES"), "ok" for nil.
func result(err error) string {
	if err == nil {
		return "ok"
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return unix.ErrnoName(errno)
	}
	return err.Error()
}

func raw(nr uintptr, args ...uintptr) string {
	var a [6]uintptr
	copy(a[:], args)
	_, _, errno := unix.Syscall6(nr, a[0], a[1], a[2], a[3], a[4], a[5])
	if errno != 0 {
		return unix.ErrnoName(errno)
	}
	return "ok"
}

// attempt performs action. Actions that take an argument are written
// "name:arg".
func attempt(ctx context.Context, s *renderer.Session, action string) string {
	name, arg, _ := strings.Cut(action, ":")
	switch name {
	case "open":
		f, err := os.Open(arg)
		if err == nil {
			f.Close()
		}
		return result(err)
	case "read":
		b, err := os.ReadFile(arg)
		if err != nil {
			return result(err)
		}
		return "content:" + string(b)
	case "create":
		f, err := os.Create(arg)
		if err == nil {
			f.Close()
		}
		return result(err)
	case "environ":
		return strconv.Itoa(len(os.Environ()))
	case "pid":
		return strconv.Itoa(os.Getpid())
	case "hostname":
		h, err := os.Hostname()
		if err != nil {
			return result(err)
		}
		return h
	case "socket-tcp":
		return raw(unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_STREAM, 0)
	case "socket-unix":
		return raw(unix.SYS_SOCKET, unix.AF_UNIX, unix.SOCK_STREAM, 0)
	case "socketpair":
		var fds [2]int32
		return raw(unix.SYS_SOCKETPAIR, unix.AF_UNIX, unix.SOCK_STREAM, 0, uintptr(unsafe.Pointer(&fds)))
	case "execve":
		return result(syscall.Exec("/bin/true", []string{"true"}, nil))
	case "fork":
		return raw(unix.SYS_CLONE, uintptr(unix.SIGCHLD), 0, 0, 0, 0)
	case "vfork":
		return raw(unix.SYS_VFORK)
	case "clone-newuser":
		return raw(unix.SYS_CLONE, uintptr(unix.CLONE_NEWUSER|unix.SIGCHLD), 0, 0, 0, 0)
	case "ptrace":
		return raw(unix.SYS_PTRACE, unix.PTRACE_TRACEME)
	case "mount":
		return result(unix.Mount("none", "/", "tmpfs", 0, ""))
	case "unshare":
		return result(unix.Unshare(unix.CLONE_NEWUSER))
	case "setns":
		return raw(unix.SYS_SETNS, 0, 0)
	case "chroot":
		return result(unix.Chroot("/"))
	case "kill":
		pid, _ := strconv.Atoi(arg)
		return result(unix.Kill(pid, unix.SIGKILL))
	case "keyctl":
		return raw(unix.SYS_KEYCTL, 0)
	case "bpf":
		return raw(unix.SYS_BPF, 0, 0, 0)
	case "userfaultfd":
		return raw(unix.SYS_USERFAULTFD, 0)
	case "perf_event_open":
		return raw(unix.SYS_PERF_EVENT_OPEN, 0, 0, ^uintptr(0), ^uintptr(0), 0)
	case "io_uring_setup":
		return raw(unix.SYS_IO_URING_SETUP, 1, 0)
	case "tiocsti":
		c := byte('x')
		return raw(unix.SYS_IOCTL, 0, unix.TIOCSTI, uintptr(unsafe.Pointer(&c)))
	case "open-forged":
		// Ask for a resource naming an origin this renderer does not serve.
		_, fds, err := ipc.Call(ctx, s.Conn(), control.Open, &controlpb.OpenRequest{Origin: arg, Name: "a.txt"})
		for _, f := range fds {
			f.Close()
		}
		return result(err)
	case "fds":
		return openFDs()
	case "spin":
		// A hostile renderer ignores cancellation: only limits stop it.
		for {
		}
	case "hog":
		var keep [][]byte
		for {
			b := make([]byte, 64<<20)
			for i := 0; i < len(b); i += 4096 {
				b[i] = 1
			}
			keep = append(keep, b)
		}
	case "last-words":
		// Dies the way the runtime does when memory runs out, after a
		// long log: the line that says why is the last one, still in
		// the pipe when the process is gone. The broker must read it
		// before it judges the exit.
		for i := range 4000 {
			fmt.Fprintf(os.Stderr, "log line %d before the end\n", i)
		}
		fmt.Fprintln(os.Stderr, "fatal error: runtime: out of memory")
		os.Exit(2)
	case "threads":
		// Each goroutine keeps its thread to itself, so every one costs
		// the runtime a new thread, until a limit stops it.
		for {
			go func() {
				runtime.LockOSThread()
				select {}
			}()
			time.Sleep(time.Millisecond)
		}
	case "threads-unguarded":
		// A compromised renderer lifts the runtime's own thread limit
		// first, so that only the kernel's RLIMIT_NPROC can stop it.
		debug.SetMaxThreads(100000)
		return attempt(ctx, s, "threads")
	case "uid":
		// The renderer's ids as its user namespace shows them.
		return fmt.Sprintf("%d %d", unix.Getuid(), unix.Getgid())
	case "hang":
		time.Sleep(time.Hour)
		return "woke"
	case "crash":
		var p *int
		runtime.KeepAlive(p)
		return strconv.Itoa(*p)
	}
	return "unknown action " + action
}

// openFDs lists every open descriptor from 0 to 1023 with its file type,
// found with fcntl and fstat (the renderer has no /proc to read).
func openFDs() string {
	var out []string
	for fd := 0; fd < 1024; fd++ {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			continue
		}
		var st unix.Stat_t
		kind := "?"
		if unix.Fstat(fd, &st) == nil {
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFSOCK:
				kind = "socket"
			case unix.S_IFREG:
				kind = "file"
			case unix.S_IFDIR:
				kind = "dir"
			case unix.S_IFCHR:
				kind = "chardev"
			case unix.S_IFBLK:
				kind = "blockdev"
			case unix.S_IFIFO:
				kind = "pipe"
			case 0:
				kind = "anon"
			}
		}
		out = append(out, fmt.Sprintf("%d=%s", fd, kind))
	}
	return strings.Join(out, " ")
}
