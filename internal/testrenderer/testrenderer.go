// Package testrenderer is a renderer for the framework's own tests and
// benchmarks: after lockdown it answers pings and, on request, attempts one
// thing a compromised renderer would try, reporting the errno it got —
// when the sandbox lets it live long enough to report.
package testrenderer

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
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
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sandkit/sandkit/internal/control"
	"github.com/sandkit/sandkit/internal/control/controlpb"
	"github.com/sandkit/sandkit/internal/launch"
	"github.com/sandkit/sandkit/ipc"
	"github.com/sandkit/sandkit/ipc/shm"
	"github.com/sandkit/sandkit/ipc/wirepb"
	"github.com/sandkit/sandkit/renderer"
)

// HangingLine is what the "hang-announced" action writes to stderr once it
// is in its handler.
const HangingLine = "testrenderer: hanging in the handler"

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

// Tamper does to the handed-in read-only file what a compromised renderer
// could do to a description it shared with the broker: it moves the
// offset to the end and sets O_NONBLOCK and O_APPEND. It answers
// "start=S end=E flags=F": the offset it found, the one it left and its
// status flags afterwards.
var Tamper = ipc.NewMethod[*wrapperspb.StringValue, *wrapperspb.StringValue](ipc.MethodSpec{
	Name: "test.Tamper", MaxRequestBytes: 64, MaxResponseBytes: 256,
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

// SealedEcho answers its argument in a sealed memfd of exactly that many
// bytes: a call whose result comes back in shared memory.
var SealedEcho = ipc.NewMethod[*wrapperspb.BytesValue, *wrapperspb.BytesValue](ipc.MethodSpec{
	Name: "test.SealedEcho", MaxRequestBytes: 4096, MaxResponseBytes: 64,
	ResponseFDs: []ipc.FDKind{ipc.SealedMemfd},
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
func Register(s *renderer.Session, mux *ipc.Mux) error {
	var (
		streamMu sync.Mutex
		stream   *shm.StreamWriter
	)
	ipc.Handle(mux, OpenStream, func(ctx context.Context, req *wrapperspb.UInt32Value, _ []*os.File) (*wrapperspb.BytesValue, []*os.File, error) {
		streamMu.Lock()
		defer streamMu.Unlock()
		if stream != nil {
			return nil, nil, ipc.Errorf(ipc.CodeAlreadyExists, "the stream is open")
		}
		w, err := s.NewStream(ctx, int(req.GetValue()))
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
	ipc.Handle(mux, SealedEcho, func(ctx context.Context, req *wrapperspb.BytesValue, _ []*os.File) (*wrapperspb.BytesValue, []*os.File, error) {
		w, err := s.Create(ctx, len(req.GetValue()))
		if err != nil {
			return nil, nil, err
		}
		defer w.Close() // a no-op once sealed
		copy(w.Bytes(), req.GetValue())
		f, err := w.Seal()
		if err != nil {
			return nil, nil, err
		}
		return &wrapperspb.BytesValue{}, []*os.File{f}, nil
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
	ipc.Handle(mux, Tamper, func(_ context.Context, _ *wrapperspb.StringValue, fds []*os.File) (*wrapperspb.StringValue, []*os.File, error) {
		defer fds[0].Close()
		return wrapperspb.String(tamper(int(fds[0].Fd()))), nil, nil
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
	return nil
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
	case "sysinfo":
		// sysinfo arg times (once without arg): a syscall outside the
		// base allowlist that a policy can allow, for learn mode.
		n, err := strconv.Atoi(cmp.Or(arg, "1"))
		if err != nil || n < 1 || n > 1000 {
			return "bad count"
		}
		var info unix.Sysinfo_t
		for range n {
			if _, _, errno := unix.Syscall(unix.SYS_SYSINFO, uintptr(unsafe.Pointer(&info)), 0, 0); errno != 0 {
				return unix.ErrnoName(errno)
			}
		}
		return "ok"
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
	case "clone-task":
		// Flags in hex (strconv base 0): a task that looks like a thread.
		flags, err := strconv.ParseUint(arg, 0, 64)
		if err != nil {
			return "bad flags " + arg
		}
		return cloneTask(flags)
	case "pthread":
		return pthread()
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
	case "mmap-rw", "mmap-exec", "mprotect-exec", "memfd-exec":
		return execMemory(ctx, s, name)
	case "memfd-create":
		// Shared memory of the renderer's own making, which no rlimit
		// would count unless mapped: not in the allowlist.
		fd, err := unix.MemfdCreate("own", unix.MFD_CLOEXEC)
		if err == nil {
			unix.Close(fd)
		}
		return result(err)
	case "hoard":
		// "hoard:N": asks the broker for N-byte memfds, touches each
		// through a mapping it drops again, and keeps every descriptor,
		// until the broker refuses one.
		n, _ := strconv.Atoi(arg)
		return hoard(ctx, s, n)
	case "open-path":
		// O_PATH opens pass Landlock (they grant no access), and fstat on
		// the result would tell the host's device, inode and size.
		return openPath(arg)
	case "spin":
		// A hostile renderer ignores cancellation: only limits stop it.
		//lint:ignore SA5002 the spin is the attack
		for {
		}
	case "hog":
		var keep [][]byte
		for {
			b := make([]byte, 64<<20)
			for i := 0; i < len(b); i += 4096 {
				b[i] = 1
			}
			//lint:ignore SA4010 keep holds the memory reachable, which is the attack
			keep = append(keep, b)
		}
	case "shm-anon", "shm-memfd":
		// Touches shared memory, which RLIMIT_DATA does not count, 16 MiB
		// at a time, keeping every mapping and (memfd, from the broker)
		// closing each descriptor at once, so that RLIMIT_NOFILE does
		// not stop it either. arg caps the total, so that a limit that fails to hold
		// ends the action with an answer instead of the machine's memory.
		// When the kernel refuses a mapping the renderer carries on with
		// the Go heap, as a program would, until the runtime dies.
		total, _ := strconv.ParseUint(arg, 10, 64)
		mapped, err := touchShared(ctx, s, name == "shm-memfd", total)
		if err == nil {
			return fmt.Sprintf("touched %d bytes", mapped)
		}
		var keep [][]byte
		for {
			b := make([]byte, 1<<20)
			for i := 0; i < len(b); i += 4096 {
				b[i] = 1
			}
			//lint:ignore SA4010 keep holds the memory reachable, which is the attack
			keep = append(keep, b)
		}
	case "claim-oom":
		// Lies: claims the runtime's death by memory exhaustion, having
		// used next to no memory.
		fmt.Fprintln(os.Stderr, "fatal error: runtime: out of memory")
		os.Exit(2)
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
	case "long-last-words":
		// Last words after a log as long as a panic's dump of many
		// goroutines: within what the broker reads of a renderer's
		// log at once.
		for i := range 10000 {
			fmt.Fprintf(os.Stderr, "goroutine %d [chan receive]: a frame of a long dump\n", i)
		}
		fmt.Fprintln(os.Stderr, "fatal error: runtime: out of memory")
		os.Exit(2)
	case "log-flood":
		// Writes to stderr in a tight loop: only the broker's bound on
		// a renderer's log output stops it.
		line := []byte(strings.Repeat("flood ", 10) + "\n")
		buf := bytes.Repeat(line, 4096/len(line))
		for {
			if _, err := os.Stderr.Write(buf); err != nil {
				return result(err)
			}
		}
	case "exit-lockdown":
		// Exits with the lockdown failure status after the ready
		// report, saying why on its last line as the renderer package
		// does ("exit-lockdown:reason"), or saying nothing.
		if arg != "" {
			fmt.Fprintln(os.Stderr, launch.LockdownFailedPrefix+arg)
		}
		os.Exit(launch.ExitLockdown)
	case "reserve-then-thread":
		// Reserves the address space the memory limit leaves, untouched
		// (PROT_NONE, as a decoder's one large allocation reserves it),
		// then needs a thread: glibc cannot map its stack and says EAGAIN,
		// the words it uses for the thread limit too. It leaves the
		// runtime 4 MiB for its own metadata, half a thread's stack.
		reserve := func(size int) ([]byte, error) {
			return unix.Mmap(-1, 0, size, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
		}
		spare, err := reserve(4 << 20)
		if err != nil {
			return result(err)
		}
		for size := 1 << 30; size >= 64<<10; {
			if _, err := reserve(size); err != nil {
				size /= 2
			}
		}
		if err := unix.Munmap(spare); err != nil {
			return result(err)
		}
		return attempt(ctx, s, "threads")
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
	case "interrupted-ptrace":
		// A disallowed syscall whose wait a flood of signals
		// interrupts: the monitor must catch it all the same.
		return interruptedPtrace(arg)
	case "foreign-syscall":
		return foreignSyscall(arg)
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
	case "hang-announced":
		// Hangs like "hang", having first said so on stderr, which the
		// broker logs: a test waits for HangingLine instead of guessing
		// how long the request takes to reach the handler.
		fmt.Fprintln(os.Stderr, HangingLine)
		time.Sleep(time.Hour)
		return "woke"
	case "flood-open", "flood-open-read":
		// "flood-open:N:name": N requests to open name, never reading
		// a reply; "flood-open-read:N:name" reads each reply before the
		// next request. Either way the renderer's own reader is stopped
		// first.
		count, res, _ := strings.Cut(arg, ":")
		n, _ := strconv.Atoi(count)
		return floodOpen(s, n, res, name == "flood-open-read")
	case "stop-reading":
		// Answers, then stops the renderer's own reader for good.
		// The duplicate stays open: it keeps the socket from closing
		// when its number is given to the pipe.
		sock, _, err := ipcSocket()
		if err != nil {
			return result(err)
		}
		go stopReading(sock)
		return "ok"
	case "flood-cancel":
		// "flood-cancel:N": N cancels of random ids.
		n, _ := strconv.Atoi(arg)
		return floodCancel(n)
	case "crash":
		var p *int
		runtime.KeepAlive(p)
		return strconv.Itoa(*p)
	}
	return "unknown action " + action
}

// touchShared maps and touches shared memory in 16 MiB steps up to total
// bytes: anonymous shared mappings, or memfds from the broker whose
// descriptors are closed once mapped. It returns the bytes touched, and
// the first error.
func touchShared(ctx context.Context, s *renderer.Session, memfd bool, total uint64) (uint64, error) {
	const step = 16 << 20
	var done uint64
	for done < total {
		fd, flags := -1, unix.MAP_SHARED|unix.MAP_ANONYMOUS
		if memfd {
			f, err := s.Alloc(ctx, step)
			if err != nil {
				return done, err
			}
			fd, err = unix.Dup(int(f.Fd()))
			f.Close()
			if err != nil {
				return done, fmt.Errorf("dup: %w", err)
			}
			flags = unix.MAP_SHARED
		}
		b, err := unix.Mmap(fd, 0, step, unix.PROT_READ|unix.PROT_WRITE, flags)
		if fd >= 0 {
			unix.Close(fd)
		}
		if err != nil {
			return done, fmt.Errorf("mmap: %w", err)
		}
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		done += step
	}
	return done, nil
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

// ipcSocket returns a duplicate of the renderer's socket to the broker:
// the one socket it holds, at whatever number its ipc.Conn keeps it.
func ipcSocket() (sock, dup int, err error) {
	for fd := 0; fd < 1024; fd++ {
		var st unix.Stat_t
		if unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFSOCK {
			dup, err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
			return fd, dup, err
		}
	}
	return -1, -1, errors.New("no socket")
}

// stopReading stops the renderer's own ipc reader without closing the
// socket or hanging it up: after a quiet spell the reader waits in poll(2)
// for the socket, and the socket's number is made to hold a pipe that
// never has data instead (dup3), so the reader's next wait never ends.
// The socket itself lives on in dup, for the attacker's raw datagrams.
func stopReading(sock int) error {
	time.Sleep(50 * time.Millisecond)
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return err
	}
	// The write end stays open, and never written, for the process's life.
	return unix.Dup3(p[0], sock, unix.O_CLOEXEC)
}

// floodOpen sends n Open requests for name of the renderer's own origin
// straight on the socket, with ids its ipc.Conn never uses, as fast as the
// broker takes them. With read, it receives each reply (closing any
// descriptor) before sending the next request; without, it leaves the
// broker a moment to handle each request before the next.
func floodOpen(s *renderer.Session, n int, name string, read bool) string {
	sock, fd, err := ipcSocket()
	if err != nil {
		return result(err)
	}
	if err := stopReading(sock); err != nil {
		return result(err)
	}
	origin, doc := s.Origin()
	payload, err := proto.Marshal(&controlpb.OpenRequest{Origin: origin, Document: doc, Name: name})
	if err != nil {
		return result(err)
	}
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4*8))
	for i := range n {
		env, err := proto.Marshal(&wirepb.Envelope{Kind: wirepb.Kind_KIND_REQUEST, Id: 1<<32 + uint64(i),
			Method: control.Open.Spec().Name, Payload: payload})
		if err != nil {
			return result(err)
		}
		if err := unix.Sendmsg(fd, env, nil, nil, 0); err != nil {
			return fmt.Sprintf("request %d: %v", i, result(err))
		}
		if !read {
			// Paced, so that the broker is done with each request
			// but its reply: only unread replies pile up.
			time.Sleep(200 * time.Microsecond)
			continue
		}
		if err := recvReply(fd, buf, oob); err != nil {
			return fmt.Sprintf("reply %d: %v", i, result(err))
		}
	}
	return fmt.Sprintf("sent %d", n)
}

// recvReply receives one datagram on fd and closes the descriptors it
// carried.
func recvReply(fd int, buf, oob []byte) error {
	// The socket has a receive timeout (ipc.NewConn set it).
	_, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
	for err == unix.EAGAIN || err == unix.EINTR {
		_, oobn, _, _, err = unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
	}
	if err != nil {
		return err
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return err
	}
	for _, m := range msgs {
		fds, _ := unix.ParseUnixRights(&m)
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	return nil
}

// floodCancel sends n cancels of random request ids straight on the
// socket. The renderer's own reader need not stop: cancels have no reply.
func floodCancel(n int) string {
	_, fd, err := ipcSocket()
	if err != nil {
		return result(err)
	}
	defer unix.Close(fd)
	for i := range n {
		env, err := proto.Marshal(&wirepb.Envelope{Kind: wirepb.Kind_KIND_CANCEL, Id: rand.Uint64() | 1})
		if err != nil {
			return result(err)
		}
		if err := unix.Sendmsg(fd, env, nil, nil, 0); err != nil {
			return fmt.Sprintf("cancel %d: %v", i, result(err))
		}
	}
	return fmt.Sprintf("sent %d", n)
}

// openPath opens path with O_PATH, as raw syscalls (no library in between),
// and answers the errno, or what fstat tells of the file.
func openPath(path string) string {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return result(err)
	}
	cwd := unix.AT_FDCWD
	fd, _, errno := unix.Syscall6(unix.SYS_OPENAT, uintptr(cwd), uintptr(unsafe.Pointer(p)),
		uintptr(unix.O_PATH|unix.O_CLOEXEC), 0, 0, 0)
	if errno != 0 {
		return unix.ErrnoName(errno)
	}
	defer unix.Close(int(fd))
	var st unix.Stat_t
	if err := unix.Fstat(int(fd), &st); err != nil {
		return "fstat " + result(err)
	}
	return fmt.Sprintf("dev=%d ino=%d size=%d", st.Dev, st.Ino, st.Size)
}

// tamper is Tamper's work, in raw syscalls.
func tamper(fd int) string {
	start, err := unix.Seek(fd, 0, unix.SEEK_CUR)
	if err != nil {
		return "lseek " + result(err)
	}
	end, err := unix.Seek(fd, 0, unix.SEEK_END)
	if err != nil {
		return "lseek " + result(err)
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err == nil {
		_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl|unix.O_NONBLOCK|unix.O_APPEND)
	}
	if err == nil {
		fl, err = unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	}
	if err != nil {
		return "fcntl " + result(err)
	}
	return fmt.Sprintf("start=%d end=%d flags=%#x", start, end, fl)
}

// execMemory tries to get memory an attacker could write code into and
// run, one way per action, with raw syscalls: an anonymous RWX mapping,
// a RW page made RWX, a memfd mapped executable (its bytes can be written
// through the descriptor). "mmap-rw" is the ordinary mapping every
// allocator makes.
func execMemory(ctx context.Context, s *renderer.Session, action string) string {
	const page = 4096
	anon := func(prot uintptr) (uintptr, unix.Errno) {
		addr, _, errno := unix.Syscall6(unix.SYS_MMAP, 0, page, prot,
			unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uintptr(0), 0)
		return addr, errno
	}
	var addr uintptr
	var errno unix.Errno
	switch action {
	case "mmap-rw":
		addr, errno = anon(unix.PROT_READ | unix.PROT_WRITE)
	case "mmap-exec":
		addr, errno = anon(unix.PROT_READ | unix.PROT_WRITE | unix.PROT_EXEC)
	case "mprotect-exec":
		if addr, errno = anon(unix.PROT_READ | unix.PROT_WRITE); errno != 0 {
			return "mmap " + unix.ErrnoName(errno)
		}
		_, _, errno = unix.Syscall(unix.SYS_MPROTECT, addr, page, unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC)
	case "memfd-exec":
		// Code written into shared memory, then mapped executable.
		f, err := s.Alloc(ctx, page)
		if err != nil {
			return "alloc " + result(err)
		}
		defer f.Close()
		addr, _, errno = unix.Syscall6(unix.SYS_MMAP, 0, page, unix.PROT_READ|unix.PROT_EXEC,
			unix.MAP_SHARED, f.Fd(), 0)
	}
	if errno != 0 {
		return unix.ErrnoName(errno)
	}
	unix.Syscall(unix.SYS_MUNMAP, addr, page, 0)
	return "ok"
}

// hoard is the "hoard" action: it keeps n-byte memfds from the broker, each
// mapped, touched in every page and unmapped again (so that RLIMIT_AS no
// longer sees it; RLIMIT_FSIZE stops write(2)), until the broker refuses
// one, and reports how many bytes it holds and the refusal.
func hoard(ctx context.Context, s *renderer.Session, n int) string {
	var held []*os.File
	defer func() {
		for _, f := range held {
			f.Close()
		}
	}()
	for {
		f, err := s.Alloc(ctx, n)
		if err != nil {
			return fmt.Sprintf("held %d bytes; %v", len(held)*n, err)
		}
		held = append(held, f)
		b, err := unix.Mmap(int(f.Fd()), 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			return fmt.Sprintf("held %d bytes; mmap: %v", len(held)*n, err)
		}
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		if err := unix.Munmap(b); err != nil {
			return fmt.Sprintf("held %d bytes; munmap: %v", len(held)*n, err)
		}
	}
}
