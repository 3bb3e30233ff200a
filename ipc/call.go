package ipc

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/sandkit/sandkit/ipc/wirepb"
)

// Call invokes m on the peer and waits for the reply.
//
// The caller keeps ownership of fds (the kernel duplicates them on send; do
// not close them before Call returns) and owns the returned fds. Errors:
// ctx's error, wrapped (a Cancel is sent to the peer); ErrSpec, wrapped, if
// req or fds do not fit m's spec (nothing sent); ErrClosed, ErrPeerClosed or
// a *ProtocolError if the Conn dies first; a *StatusError if the handler
// failed. A reply that does not fit the spec is a protocol violation by the
// peer and kills the Conn.
func Call[Req, Resp proto.Message](ctx context.Context, c *Conn, m *Method[Req, Resp], req Req, fds ...*os.File) (Resp, []*os.File, error) {
	var zero Resp
	sc, err := c.start(ctx, &m.spec, m.respType, req, fds)
	if err != nil {
		return zero, nil, err
	}
	resp, out, err := c.finish(ctx, sc)
	if err != nil {
		return zero, nil, err
	}
	return resp.(Resp), out, nil
}

// Started is a call whose request has been sent and whose reply has not
// been waited for yet. Its Wait must be called exactly once: until then the
// reply, and any descriptors that came with it, are held for it.
type Started[Resp proto.Message] struct {
	c      *Conn
	sc     startedCall
	waited atomic.Bool
}

// Start sends req like Call and returns without waiting for the reply.
// Requests on a Conn reach the peer in the order they were sent, so a
// request sent after Start returns arrives after this one (the peer may
// still run their handlers concurrently). ctx bounds the send, and its
// deadline travels with the request as Call's does.
func Start[Req, Resp proto.Message](ctx context.Context, c *Conn, m *Method[Req, Resp], req Req, fds ...*os.File) (*Started[Resp], error) {
	sc, err := c.start(ctx, &m.spec, m.respType, req, fds)
	if err != nil {
		return nil, err
	}
	return &Started[Resp]{c: c, sc: sc}, nil
}

// Wait waits for the reply of a started call, as Call does. If ctx ends
// first, the peer is told the call is cancelled. A second Wait returns an
// error.
func (s *Started[Resp]) Wait(ctx context.Context) (Resp, []*os.File, error) {
	var zero Resp
	if !s.waited.CompareAndSwap(false, true) {
		return zero, nil, fmt.Errorf("ipc: %s: Wait called twice", s.sc.name)
	}
	resp, out, err := s.c.finish(ctx, s.sc)
	if err != nil {
		return zero, nil, err
	}
	return resp.(Resp), out, nil
}

// startedCall is what finish needs of a sent request.
type startedCall struct {
	p     *pendingCall
	id    uint64
	name  string
	start time.Time
}

// start registers a call and sends its request.
func (c *Conn) start(ctx context.Context, spec *MethodSpec, respType protoreflect.MessageType, req proto.Message, fds []*os.File) (startedCall, error) {
	if err := ctx.Err(); err != nil {
		return startedCall{}, fmt.Errorf("ipc: %s: %w", spec.Name, err)
	}
	if len(fds) != len(spec.RequestFDs) {
		return startedCall{}, fmt.Errorf("ipc: %s: %w: %d fds, spec wants %d", spec.Name, ErrSpec, len(fds), len(spec.RequestFDs))
	}
	// Take an outgoing slot; it is released when the reply arrives (even
	// after we stop waiting for it), so the peer never sees more than
	// MaxInFlight of our requests at once.
	select {
	case c.sem <- struct{}{}:
	default:
		select {
		case c.sem <- struct{}{}:
		case <-ctx.Done():
			return startedCall{}, fmt.Errorf("ipc: %s: %w", spec.Name, ctx.Err())
		case <-c.done:
			return startedCall{}, fmt.Errorf("ipc: %s: %w", spec.Name, c.deadErr())
		}
	}
	p, _ := c.pcPool.Get().(*pendingCall)
	if p == nil {
		p = &pendingCall{ch: make(chan callResult, 1)}
	}
	p.spec, p.respType = spec, respType
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		<-c.sem
		return startedCall{}, fmt.Errorf("ipc: %s: %w", spec.Name, err)
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = p
	p.long = c.longCalls[spec.Name]
	c.mu.Unlock()
	start := time.Now()

	var timeout time.Duration
	if dl, ok := ctx.Deadline(); ok {
		if timeout = time.Until(dl); timeout <= 0 {
			timeout = 1 // already expired: the handler's ctx expires at once
		}
	}
	m := outMsg{kind: wirepb.Kind_KIND_REQUEST, id: id, method: spec.Name, timeout: timeout, payload: req,
		maxPayload: payloadLimit(spec.MaxRequestBytes, &c.lim), fds: fds, kinds: spec.RequestFDs}
	if err := c.send(ctx, &m); err != nil {
		// Nothing was sent: forget the call.
		c.mu.Lock()
		if c.pending != nil && c.pending[id] == p {
			delete(c.pending, id)
			<-c.sem
		}
		c.mu.Unlock()
		return startedCall{}, fmt.Errorf("ipc: %s: %w", spec.Name, err)
	}
	return startedCall{p: p, id: id, name: spec.Name, start: start}, nil
}

// finish waits for the reply of a sent request.
func (c *Conn) finish(ctx context.Context, sc startedCall) (proto.Message, []*os.File, error) {
	p, id := sc.p, sc.id
	if r, ok := c.await(ctx, p); ok {
		if long := time.Since(sc.start) > longWait; long != p.long {
			c.mu.Lock()
			if c.longCalls != nil {
				c.longCalls[sc.name] = long
			}
			c.mu.Unlock()
		}
		c.putPending(p)
		if r.err != nil {
			return nil, nil, fmt.Errorf("ipc: %s: %w", sc.name, r.err)
		}
		return r.resp, r.fds, nil
	}
	c.mu.Lock()
	waiting := c.pending != nil && c.pending[id] == p
	if waiting {
		p.cancelled = true
		c.queueCancelLocked(id)
	}
	c.mu.Unlock()
	if !waiting {
		// The reply (or the Conn's death) won the race and is on its way.
		r := <-p.ch
		c.putPending(p)
		if r.err != nil {
			return nil, nil, fmt.Errorf("ipc: %s: %w", sc.name, r.err)
		}
		return r.resp, r.fds, nil
	}
	return nil, nil, fmt.Errorf("ipc: %s: %w", sc.name, ctx.Err())
}

// putPending recycles p once its one result has been received: nothing
// else refers to it any more. Cancelled calls are never recycled.
func (c *Conn) putPending(p *pendingCall) {
	p.spec, p.respType, p.cancelled = nil, nil, false
	c.pcPool.Put(p)
}

// queueCancelLocked has the peer told that we no longer wait for request
// id. The call's slot stays taken until the peer's (now ignored) reply
// arrives. One goroutine (tracked, so Close waits for it) sends the queued
// cancels, so that the caller returns promptly even if the peer is not
// reading, and a peer that does not read costs one goroutine, not one per
// cancel. Called with mu held.
func (c *Conn) queueCancelLocked(id uint64) {
	if c.err != nil {
		return
	}
	c.cancelQ = append(c.cancelQ, id)
	if c.cancelling {
		return
	}
	c.cancelling = true
	c.bg.Add(1) // under mu with the Conn alive: never concurrent with Close's Wait
	go c.sendCancels()
}

// unqueueCancelLocked drops the cancel of request id if it is not sent
// yet: its reply arrived, so there is nothing left to cancel. Called with
// mu held.
func (c *Conn) unqueueCancelLocked(id uint64) {
	for i, q := range c.cancelQ {
		if q == id {
			c.cancelQ = append(c.cancelQ[:i], c.cancelQ[i+1:]...)
			return
		}
	}
}

// sendCancels sends the queued cancels in order until none is left or the
// Conn dies. Each waits at most SendTimeout for room, like any message.
func (c *Conn) sendCancels() {
	defer c.bg.Done()
	for {
		c.mu.Lock()
		if c.err != nil || len(c.cancelQ) == 0 {
			c.cancelling = false
			c.mu.Unlock()
			return
		}
		id := c.cancelQ[0]
		c.cancelQ = append(c.cancelQ[:0], c.cancelQ[1:]...)
		c.mu.Unlock()
		m := outMsg{kind: wirepb.Kind_KIND_CANCEL, id: id}
		_ = c.send(context.Background(), &m)
	}
}

// callState is the state of our calls to the peer. sem and pcPool are safe
// for concurrent use; Conn.mu guards the rest.
type callState struct {
	sem    chan struct{} // outgoing call slots
	pcPool sync.Pool     // *pendingCall, reused once their result is consumed

	nextID  uint64
	pending map[uint64]*pendingCall // our requests awaiting a reply
	// cancelQ holds the ids of our calls whose cancel is still to be
	// sent, by the one goroutine that sends them while cancelling is set.
	// Each is a call that holds its slot, so there are at most MaxInFlight.
	cancelQ    []uint64
	cancelling bool
	// longCalls records, per method called, whether its last reply took
	// longer than longWait. Keys are the local methods' names.
	longCalls map[string]bool
}

type pendingCall struct {
	spec      *MethodSpec
	respType  protoreflect.MessageType
	ch        chan callResult // capacity 1, receives exactly one result unless cancelled
	cancelled bool            // guarded by Conn.mu
	long      bool            // the method's last call outlasted longWait
}

type callResult struct {
	resp proto.Message
	fds  []*os.File
	err  error
}
