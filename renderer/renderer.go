// Package renderer is the sandboxed side of a sandkit program.
//
// A renderer is started by a broker (package broker), locks itself down
// completely — namespaces, an empty root, rlimits, no capabilities,
// no_new_privs, Landlock, seccomp — reports which layers are in force, and
// only then serves the methods the program registered. It never sees a
// path: everything it reads arrives as a descriptor the broker opened.
//
// A program either ships a dedicated renderer binary whose main calls Main,
// or re-executes itself: the broker starts its own executable with a marker
// argument, and main begins with
//
//	if renderer.Requested() {
//		renderer.Main(register)
//	}
//
// Main does not return.
package renderer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/internal/control"
	"github.com/sandkit/sandkit/internal/control/controlpb"
	"github.com/sandkit/sandkit/internal/launch"
	"github.com/sandkit/sandkit/internal/seccompfilter"
	"github.com/sandkit/sandkit/ipc"
	"github.com/sandkit/sandkit/ipc/shm"
	"github.com/sandkit/sandkit/policy"
)

// socketFD is the descriptor on which a renderer finds its broker.
const socketFD = launch.SocketFD

// Requested reports whether this process was started by a broker as a
// renderer (os.Args[1] carries the policy).
func Requested() bool { return launch.Requested(os.Args) }

// Session is what a renderer's handlers know of their renderer.
type Session struct {
	conn    *ipc.Conn
	mu      sync.Mutex
	origin  string
	doc     string
	bound   bool
	boundCh chan struct{} // closed once bound
	// lockedCh is closed once the lockdown is complete in this process:
	// the seccomp listener, handed to the broker, is closed here.
	lockedCh chan struct{}
}

// Origin returns the origin and document the broker bound this renderer
// to, or "" before binding. Handlers run only after binding.
func (s *Session) Origin() (origin, document string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.origin, s.doc
}

// Open asks the broker for a read-only descriptor of a resource of this
// renderer's own origin, by a name relative to the origin's directory.
// The broker opens it; the renderer never resolves a path.
func (s *Session) Open(ctx context.Context, name string) (*os.File, error) {
	origin, doc := s.Origin()
	_, fds, err := ipc.Call(ctx, s.conn, control.Open, &controlpb.OpenRequest{Origin: origin, Document: doc, Name: name})
	if err != nil {
		return nil, fmt.Errorf("open %q: %w", name, err)
	}
	return fds[0], nil
}

// Alloc asks the broker for a memfd of exactly size bytes to return a bulk
// result in: fill it through shm.CreateIn, shm.NewRegionIn or
// shm.NewStreamIn, which take the file. A renderer cannot create shared
// memory itself; the broker counts every byte it hands out against the
// policy's Limits.SharedMemory, over the renderer's whole life, and refuses
// past it (ipc.CodeResourceExhausted). Make a reusable region or stream
// once rather than a memfd per result where results are many.
func (s *Session) Alloc(ctx context.Context, size int) (*os.File, error) {
	if size < 0 {
		return nil, fmt.Errorf("alloc %d bytes: negative size", size)
	}
	_, fds, err := ipc.Call(ctx, s.conn, control.Alloc, &controlpb.AllocRequest{Size: uint64(size)})
	if err != nil {
		return nil, fmt.Errorf("alloc %d bytes: %w", size, err)
	}
	return fds[0], nil
}

// Create is shm.Create for a renderer: a sealable memfd of size bytes
// from the broker (Alloc), mapped for writing.
func (s *Session) Create(ctx context.Context, size int) (*shm.Writer, error) {
	f, err := s.Alloc(ctx, size)
	if err != nil {
		return nil, err
	}
	return shm.CreateIn(f, size)
}

// NewRegion is shm.NewRegion for a renderer (see Alloc).
func (s *Session) NewRegion(ctx context.Context, size int) (*shm.Region, error) {
	f, err := s.Alloc(ctx, size)
	if err != nil {
		return nil, err
	}
	return shm.NewRegionIn(f, size)
}

// NewStream is shm.NewStream for a renderer (see Alloc).
func (s *Session) NewStream(ctx context.Context, capacity int) (*shm.StreamWriter, error) {
	if capacity <= 0 {
		return nil, fmt.Errorf("stream of %d bytes: capacity must be positive", capacity)
	}
	f, err := s.Alloc(ctx, shm.StreamSize(capacity))
	if err != nil {
		return nil, err
	}
	return shm.NewStreamIn(f, capacity)
}

// Conn is the connection to the broker, for programs that declare methods
// of their own in the renderer-to-broker direction. The broker treats
// everything on it as hostile.
func (s *Session) Conn() *ipc.Conn { return s.conn }

func (s *Session) bind(_ context.Context, req *controlpb.BindRequest, _ []*os.File) (*controlpb.BindResponse, []*os.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bound {
		return nil, nil, ipc.Errorf(ipc.CodePermissionDenied, "renderer already bound to %q", s.origin)
	}
	s.origin, s.doc, s.bound = req.GetOrigin(), req.GetDocument(), true
	close(s.boundCh)
	return &controlpb.BindResponse{}, nil, nil
}

// holdUntilBound keeps every request but Bind from its handler until the
// renderer is bound and its lockdown complete. The broker sends Bind
// before any other request and does not wait for its answer, and the Conn
// may run handlers concurrently: this is what makes Bind come first. The
// broker may also send Bind as soon as it has read the ready report, while
// this process still holds the seccomp listener it just handed over: no
// program handler runs until that copy is closed.
func (s *Session) holdUntilBound(ctx context.Context, method string) error {
	if method == bindMethod {
		return nil
	}
	for _, ch := range []chan struct{}{s.lockedCh, s.boundCh} {
		select {
		case <-ch:
		case <-ctx.Done():
			return ipc.Errorf(ipc.CodeFailedPrecondition, "renderer not bound: %v", ctx.Err())
		}
	}
	return nil
}

var bindMethod = control.Bind.Spec().Name

// Main turns the process into a renderer: it connects to the broker, locks
// the process down, reports ready, and serves until the broker hangs up.
// register adds the program's methods to mux; it runs before the ready
// report and before seccomp, but already inside the empty root and
// Landlock, which the process applied before the Go runtime started (see
// lockdown): it may prepare what it needs from the policy's read-only paths
// (fonts, tables), and must not touch untrusted input. If register returns
// an error, the renderer exits before its ready report and the broker's
// Acquire fails with a *broker.ExitError whose Detail includes that error.
// Main exits the process.
func Main(register func(s *Session, mux *ipc.Mux) error) {
	os.Exit(run(register))
}

func run(register func(*Session, *ipc.Mux) error) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if !Requested() {
		fmt.Fprintln(os.Stderr, "renderer: not started by a sandkit broker")
		return launch.ExitUsage
	}
	proc := takeEarlyProc()
	defer proc.Close()
	p, prog, spec, err := policyFromArg(os.Args[1])
	if err != nil {
		log.Error("renderer: bad policy argument", "err", err)
		return launch.ExitUsage
	}
	l := &lockdown{p: p, prog: prog, spec: spec, proc: proc}
	// Only the broker's fds may survive into the renderer. The runtime
	// must first stop using the ones it opened for itself.
	pinGOMAXPROCS()
	if err := sanitizeStdio(proc); err != nil {
		return lockdownFailed("descriptors", err)
	}
	s := &Session{boundCh: make(chan struct{}), lockedCh: make(chan struct{})}
	mux := ipc.NewMux()
	ipc.Handle(mux, control.Bind, s.bind)
	mux.Before(s.holdUntilBound)
	if err := register(s, mux); err != nil {
		log.Error("renderer: register methods", "err", err)
		return launch.ExitUsage
	}
	if err := mux.Prepare(); err != nil {
		log.Error("renderer: methods", "err", err)
		return launch.ExitUsage
	}
	conn, err := ipc.NewConn(os.NewFile(socketFD, "broker"), ipc.WithMux(mux), ipc.WithLogger(log))
	if err != nil {
		log.Error("renderer: broker connection", "err", err)
		return launch.ExitUsage
	}
	s.conn = conn
	defer conn.Close()

	listener, lockErr := l.apply()
	// The renderer's /proc/self files go before anything untrusted can
	// run: no handler runs before the ready report.
	proc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := &controlpb.ReadyRequest{}
	for _, ls := range l.status {
		req.Layers = append(req.Layers, &controlpb.Layer{Name: string(ls.Layer), Active: ls.Active, Detail: ls.Detail})
	}
	if lockErr != nil {
		step := "lockdown"
		var ue *policy.UnavailableError
		if errors.As(lockErr, &ue) {
			step, lockErr = string(ue.Layer), ue.Err
			req.FailedLayer = step
		}
		req.Error = step + ": " + describe(lockErr)
		_, _, _ = ipc.Call(ctx, conn, control.ReadyUnmonitored, req)
		return lockdownFailed(step, lockErr)
	}
	if listener != nil {
		var ready *ipc.Started[*controlpb.ReadyResponse]
		ready, err = ipc.Start(ctx, conn, control.Ready, req, listener)
		// The sent datagram holds the broker's copy; the renderer must
		// not keep one, and closes it before the answer can arrive.
		listener.Close()
		close(s.lockedCh)
		if err == nil {
			_, _, err = ready.Wait(ctx)
		}
	} else {
		close(s.lockedCh)
		_, _, err = ipc.Call(ctx, conn, control.ReadyUnmonitored, req)
	}
	cancel()
	if err != nil {
		return lockdownFailed("ready report", err)
	}
	_ = conn.Serve() // until the broker hangs up
	return launch.ExitOK
}

// lockdownFailed writes the failing step and its error as the renderer's
// last line on stderr (launch.LockdownFailedPrefix) and returns
// launch.ExitLockdown. The ready report, when it gets through, says the same;
// this line is what the broker reports when it cannot.
func lockdownFailed(step string, err error) int {
	fmt.Fprintf(os.Stderr, "%s%s: %s\n", launch.LockdownFailedPrefix, step, describe(err))
	return launch.ExitLockdown
}

// describe renders err with the name of its errno, if it wraps one:
// "mount /proc: operation not permitted (EPERM)".
func describe(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) && errno != 0 {
		return fmt.Sprintf("%v (%s)", err, unix.ErrnoName(errno))
	}
	return err.Error()
}

// policyFromArg decodes the argument launch.Arg made: the policy, the
// seccomp program when the broker compiled it, and the constructor's spec
// (which the constructor has applied already; see lockdownplan.EarlySpec).
func policyFromArg(arg string) (p *policy.Policy, prog *seccompfilter.Program, spec string, err error) {
	p, progPart, spec, err := launch.ParseArg(arg)
	if err != nil {
		return nil, nil, "", err
	}
	if progPart == "" {
		return p, nil, spec, nil
	}
	if prog, err = seccompfilter.Decode(progPart); err != nil {
		return nil, nil, "", fmt.Errorf("seccomp program: %w", err)
	}
	return p, prog, spec, nil
}
