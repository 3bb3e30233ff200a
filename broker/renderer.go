package broker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/internal/control"
	"github.com/sandkit/sandkit/internal/control/controlpb"
	"github.com/sandkit/sandkit/ipc"
	"github.com/sandkit/sandkit/policy"
)

// Renderer is the broker's handle on one renderer process.
type Renderer struct {
	b       *Broker
	reap    func() *os.ProcessState // waits for the process; supervise calls it once
	state   *os.ProcessState
	pid     int
	pidfd   *os.File
	conn    *ipc.Conn
	started time.Time
	logs    *logTail
	cgroup  *cgroup
	hostID  int // the host uid and gid of its own, or -1 (see Config.RendererIDs)

	ready  chan struct{} // closed when the renderer reported ready
	bound  chan struct{} // closed once Bind is sent (or failed to be)
	exited chan struct{} // closed once reaped and classified
	// logsRead is closed when the renderer's stderr reaches EOF: its last
	// words (what classify reads) have all been read.
	logsRead chan struct{}

	mu         sync.Mutex
	key        *key
	layers     policy.Status
	readyErr   error
	gotReady   bool
	bindErr    error
	inflight   int
	shared     uint64            // shared memory charged (onAlloc), less what came back sealed
	allocs     map[fileID]uint64 // memfds handed out and not back yet: their charge
	idleEnded  bool              // endIfIdle decided to end r: Acquire must not hand it out
	lastUsed   time.Time
	idleTimer  *time.Timer
	killReason *ExitError
	exitErr    *ExitError
	// threadFailSnap is the kernel's view of the renderer when it said a
	// thread could not be created, or why there was none (evidence.go).
	threadFailSnap    *taskSnapshot
	threadFailSnapErr error
}

// RendererStatus describes one live renderer.
type RendererStatus struct {
	PID      int
	Origin   string
	Document string
	Bound    bool
	Uptime   time.Duration
	InFlight int
	Layers   policy.Status
}

// Status reports what r serves and which layers are in force in it.
func (r *Renderer) Status() RendererStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := RendererStatus{PID: r.pid, Uptime: time.Since(r.started), InFlight: r.inflight, Layers: r.layers}
	if r.key != nil {
		s.Origin, s.Document, s.Bound = r.key.origin, r.key.document, true
	}
	return s
}

// PID returns the renderer's pid as the broker sees it.
func (r *Renderer) PID() int { return r.pid }

// Layers returns the isolation layers in force in r.
func (r *Renderer) Layers() policy.Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.layers
}

// Done is closed once the renderer has exited and its end is classified:
// from then on Err says why, and the exit is in Broker.Events.
func (r *Renderer) Done() <-chan struct{} { return r.exited }

// Err returns why the renderer ended, or nil while it runs.
func (r *Renderer) Err() *ExitError {
	select {
	case <-r.exited:
		return r.exitErr
	default:
		return nil
	}
}

// Kill ends a renderer the program caught misbehaving — a reply that
// failed the program's own checks — recording it as a bad message with
// detail, and waits until it is reaped.
func (r *Renderer) Kill(detail string) {
	r.kill(ExitBadMessage, detail)
	<-r.exited
}

// Close ends the renderer and waits until it is reaped.
func (r *Renderer) Close() {
	r.kill(ExitReleased, "")
	<-r.exited
}

// kill records why r must end (the first reason wins) and sends SIGKILL.
func (r *Renderer) kill(reason ExitReason, detail string) {
	r.killWith(&ExitError{Reason: reason, Detail: detail})
}

func (r *Renderer) killWith(e *ExitError) {
	r.mu.Lock()
	if r.killReason == nil {
		r.killReason = e
	}
	r.mu.Unlock()
	// Through the pidfd, which cannot hit a recycled pid. ESRCH or a
	// closed pidfd after the process was reaped are expected.
	if rc, err := r.pidfd.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) { _ = unix.PidfdSendSignal(int(fd), unix.SIGKILL, nil, 0) })
	}
}

// begin accounts for a call starting; it fails when r is gone or unbound.
func (r *Renderer) begin() error {
	select {
	case <-r.exited:
		return r.exitErr
	default:
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.key == nil {
		return errors.New("broker: renderer is not bound to an origin")
	}
	r.inflight++
	if r.idleTimer != nil {
		r.idleTimer.Stop()
	}
	return nil
}

func (r *Renderer) end() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inflight--
	r.lastUsed = time.Now()
	if r.inflight == 0 {
		r.armIdleLocked()
	}
}

// touch restarts r's idle clock: Acquire hands out an already bound
// renderer, whose caller is about to use it, so neither eviction nor the
// idle timeout may take it in between. It reports false when r is already
// being ended for idleness, and must not be handed out.
func (r *Renderer) touch() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.idleEnded {
		return false
	}
	r.lastUsed = time.Now()
	if r.inflight == 0 {
		r.armIdleLocked()
	}
	return true
}

// endIfIdle ends r, with detail as the reason, if it is bound, has no call
// in flight and has not been used for at least idle. The check and the
// decision are one step under r.mu, so a renderer that Acquire hands out
// (touch) or a call begins on meanwhile is never taken.
func (r *Renderer) endIfIdle(idle time.Duration, detail string) {
	r.mu.Lock()
	select {
	case <-r.bound:
	default:
		r.mu.Unlock()
		return
	}
	end := !r.idleEnded && r.inflight == 0 && time.Since(r.lastUsed) >= idle
	if end {
		r.idleEnded = true
	}
	r.mu.Unlock()
	if end {
		r.kill(ExitIdle, detail)
	}
}

// armIdleLocked (re)starts the idle clock; r.mu is held.
func (r *Renderer) armIdleLocked() {
	if r.b.cfg.IdleTimeout > 0 {
		if r.idleTimer == nil {
			r.idleTimer = time.AfterFunc(r.b.cfg.IdleTimeout, func() {
				r.endIfIdle(r.b.cfg.IdleTimeout, fmt.Sprintf("no call for %v", r.b.cfg.IdleTimeout))
			})
		} else {
			r.idleTimer.Reset(r.b.cfg.IdleTimeout)
		}
	}
}

// idleSince reports when r was last used, and whether it is idle now.
func (r *Renderer) idleSince() (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.bound:
	default:
		return time.Time{}, false
	}
	return r.lastUsed, r.inflight == 0
}

// bind tells r which origin it serves. It happens once per renderer.
//
// It returns once the Bind request is sent, without waiting for the
// renderer's answer. The renderer handles requests in the order they are
// sent as far as binding goes: it holds every other request until Bind has
// been handled (renderer.Main's Mux.Before). So the caller's first call
// can follow at once, and the renderer's wakeup from the warm pool
// overlaps whatever the caller does before that call. The answer is
// checked in the background: a renderer that refuses the binding, or does
// not answer within ReadyTimeout, is killed, and calls to it fail with
// its *ExitError like any other renderer's death.
//
// Acquire has published r under its key (bindLocked) before it calls bind.
func (r *Renderer) bind(ctx context.Context) error {
	k := *r.key // written before bind, under b.mu, and never again
	sendCtx, cancelSend := context.WithTimeout(ctx, r.b.cfg.ReadyTimeout)
	started, err := ipc.Start(sendCtx, r.conn, control.Bind, &controlpb.BindRequest{Origin: k.origin, Document: k.document})
	cancelSend()
	if err != nil {
		select {
		case <-r.conn.Done():
			// The connection died under the bind: the renderer
			// crashed or was killed, and its exit says how (watchConn
			// kills it if it lives on without its connection).
		default:
			if errors.Is(err, ipc.ErrPeerClosed) {
				// The send met the closed socket of a renderer that
				// died (SIGKILLed from outside, say) before the
				// connection's reader saw the end: its exit says how,
				// if it comes within the grace watchConn gives.
				grace := time.NewTimer(time.Second)
				select {
				case <-r.exited:
				case <-grace.C:
				}
				grace.Stop()
			}
			r.kill(ExitBadMessage, fmt.Sprintf("bind failed: %v", err)) // no effect once it has exited
		}
		<-r.exited
		r.mu.Lock()
		r.bindErr = r.exitErr
		r.mu.Unlock()
		close(r.bound)
		return r.exitErr
	}
	// Bound, and so evictable, only from now on: its idle clock starts
	// now, not when Acquire published it, however long the send took.
	r.mu.Lock()
	close(r.bound)
	r.lastUsed = time.Now()
	r.armIdleLocked()
	r.mu.Unlock()
	r.b.emit(Event{Kind: EventBound, Origin: k.origin, Document: k.document, PID: r.pid})
	// The answer is awaited for ReadyTimeout whatever the caller's ctx
	// does. The goroutine is counted like the renderer's others, so that
	// Close leaves none behind; it ends when the answer comes or the
	// connection dies.
	waitCtx, cancelWait := context.WithTimeout(context.WithoutCancel(ctx), r.b.cfg.ReadyTimeout)
	r.b.wg.Add(1)
	go func() {
		defer r.b.wg.Done()
		defer cancelWait()
		_, _, err := started.Wait(waitCtx)
		var status *ipc.StatusError
		switch {
		case err == nil:
		case errors.As(err, &status):
			r.kill(ExitBadMessage, fmt.Sprintf("bind refused: %v", err))
		case errors.Is(err, context.DeadlineExceeded):
			r.kill(ExitTimeout, fmt.Sprintf("bind not answered within %v", r.b.cfg.ReadyTimeout))
		default:
			// The connection died: the renderer's exit says why.
		}
	}()
	return nil
}

// waitBound waits until r is bound (by whichever Acquire bound it).
func (r *Renderer) waitBound(ctx context.Context) error {
	select {
	case <-r.bound:
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.bindErr
	case <-r.exited:
		return r.exitErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// handlers are the requests a renderer may make of the broker.
func (r *Renderer) handlers() *ipc.Mux {
	mux := ipc.NewMux()
	ready := func(_ context.Context, req *controlpb.ReadyRequest, fds []*os.File) (*controlpb.ReadyResponse, []*os.File, error) {
		return r.onReady(req, fds)
	}
	ipc.Handle(mux, control.Ready, ready)
	ipc.Handle(mux, control.ReadyUnmonitored, ready)
	ipc.Handle(mux, control.Open, r.onOpen)
	ipc.Handle(mux, control.Alloc, r.onAlloc)
	return mux
}

func (r *Renderer) onReady(req *controlpb.ReadyRequest, fds []*os.File) (*controlpb.ReadyResponse, []*os.File, error) {
	r.mu.Lock()
	already := r.gotReady
	r.gotReady = true
	r.mu.Unlock()
	if already {
		closeAll(fds)
		r.kill(ExitBadMessage, "second ready report")
		return nil, nil, ipc.Errorf(ipc.CodePermissionDenied, "already ready")
	}
	status, err := r.checkReady(req, len(fds) == 1)
	if err != nil {
		closeAll(fds)
		r.mu.Lock()
		r.readyErr = err
		r.mu.Unlock()
		close(r.ready)
		return &controlpb.ReadyResponse{}, nil, nil
	}
	if r.b.cfg.Learn != nil {
		status = learningStatus(status)
	}
	r.mu.Lock()
	r.layers = status
	r.mu.Unlock()
	if len(fds) == 1 {
		r.b.wg.Add(1)
		go func() {
			defer r.b.wg.Done()
			r.monitor(fds[0])
		}()
	}
	close(r.ready)
	return &controlpb.ReadyResponse{}, nil, nil
}

// checkReady turns the renderer's report into a Status and fails closed:
// every layer the policy requested must be active or allowed degraded,
// and the monitor must be attached when reported active.
func (r *Renderer) checkReady(req *controlpb.ReadyRequest, hasListener bool) (policy.Status, error) {
	if req.GetError() != "" {
		// Both strings come from the renderer: keep the layer only if it
		// names one, and the detail bounded and printable.
		layer := policy.Layer(req.GetFailedLayer())
		if !slices.Contains(policy.AllLayers(), layer) {
			layer = ""
		}
		detail := req.GetError()
		if len(detail) > maxLogLine {
			detail = detail[:maxLogLine]
		}
		detail = strings.ToValidUTF8(detail, "?")
		return nil, &ExitError{Reason: ExitLockdownFailed, Layer: layer, Detail: detail}
	}
	p := r.b.policy
	reported := map[policy.Layer]*controlpb.Layer{}
	for _, l := range req.GetLayers() {
		reported[policy.Layer(l.GetName())] = l
	}
	var status policy.Status
	for _, layer := range p.Requested() {
		l := reported[layer]
		switch {
		case l == nil:
			return nil, &ExitError{Reason: ExitLockdownFailed, Layer: layer, Detail: "renderer did not report layer " + string(layer)}
		case !l.GetActive() && !p.Degradable(layer):
			return nil, &ExitError{Reason: ExitLockdownFailed, Layer: layer, Detail: fmt.Sprintf("layer %s not in force: %s", layer, l.GetDetail())}
		}
		status = append(status, policy.LayerStatus{Layer: layer, Active: l.GetActive(), Detail: l.GetDetail()})
	}
	if status.Active(policy.LayerSeccompMonitor) != hasListener {
		return nil, &ExitError{Reason: ExitLockdownFailed, Layer: policy.LayerSeccompMonitor, Detail: "monitor reported without its listener, or the reverse"}
	}
	if r.cgroup != nil {
		status = append(status, policy.LayerStatus{Layer: policy.LayerCgroup, Active: true, Detail: r.cgroup.path})
	}
	return status, nil
}

func closeAll(fds []*os.File) {
	for _, f := range fds {
		f.Close()
	}
}
