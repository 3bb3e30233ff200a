package ipc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/sandkit/sandkit/ipc/wirepb"
)

// handleDatagram validates and dispatches one datagram. On a violation it
// closes every fd that came with the datagram and returns the violation.
// With inline set, a valid request is returned for the caller to serve
// instead of going to a worker goroutine.
func (c *Conn) handleDatagram(data, oob []byte, flags int, inline bool) (*job, *ProtocolError) {
	var j *job
	fds, perr := parseDatagram(data, oob, flags, &c.lim, &c.renv, c.rfds[:0])
	if perr == nil {
		switch c.renv.Kind {
		case wirepb.Kind_KIND_REQUEST:
			j, perr = c.handleRequest(&c.renv, fds, inline)
		case wirepb.Kind_KIND_REPLY:
			perr = c.handleReply(&c.renv, fds)
		case wirepb.Kind_KIND_CANCEL:
			perr = c.handleCancel(c.renv.Id)
		}
	}
	if perr != nil {
		closeFDs(fds)
	}
	return j, perr
}

func payloadLimit(specLimit int, lim *Limits) int {
	if specLimit == 0 || specLimit > lim.MaxDatagram {
		return lim.MaxDatagram
	}
	return specLimit
}

// handleRequest validates a request against its method and starts its
// handler, or with inline set returns it as a job for the caller to run.
// On success the fds belong to the handler.
func (c *Conn) handleRequest(env *wirepb.Envelope, fds []int, inline bool) (*job, *ProtocolError) {
	c.mu.Lock()
	_, dup := c.serving[env.Id]
	limited := c.lim.MaxRequestRate > 0 && !c.takeRequestTokenLocked()
	c.mu.Unlock()
	if limited {
		return nil, violation(ReasonRequestRate, "request %d (%s): more than %d requests/s (burst %d)",
			env.Id, env.Method, c.lim.MaxRequestRate, c.lim.RequestBurst)
	}
	e, req, perr := checkRequest(env, fds, c.mux, &c.lim, dup, int(c.busy.Load()))
	if perr != nil {
		return nil, perr
	}
	var ctx context.Context
	var cancel context.CancelFunc
	if env.TimeoutNanos > 0 {
		ctx, cancel = context.WithTimeout(c.ctx, time.Duration(env.TimeoutNanos))
	} else {
		ctx, cancel = context.WithCancel(c.ctx)
	}
	c.mu.Lock()
	if c.err != nil {
		// Dying (Close from another goroutine): drop the request.
		c.mu.Unlock()
		cancel()
		closeFDs(fds)
		return nil, nil
	}
	j := &job{ctx: ctx, cancel: cancel, id: env.Id, e: e, req: req, fds: wrapFDs(fds)}
	c.serving[env.Id] = j
	c.busy.Add(1)
	c.maxReqID = max(c.maxReqID, env.Id)
	c.mu.Unlock()
	if inline {
		return j, nil
	}
	select {
	case c.work <- j: // an idle worker takes it
	default:
		go c.worker(j)
	}
	return nil, nil
}

// peerBounds is what bounds the peer's requests: those in flight, the
// cancels the peer may still send, and its request rate. Conn.mu guards
// all but busy.
type peerBounds struct {
	// busy counts the peer's requests against MaxInFlight: from receipt
	// until their reply is handed to the kernel (see write). Only the
	// read token's holder adds, so its check-then-add needs no lock.
	busy atomic.Int64

	serving map[uint64]*job // peer's requests being handled or answered
	// maxReqID is the highest request id the peer has sent; a cancel
	// above it cancels nothing the peer could have sent.
	maxReqID uint64
	// lateCancels is how many cancels for requests no longer in serving
	// the peer may still send: one per reply sent for a request it had
	// not cancelled (its cancel may have crossed the reply), at most
	// MaxInFlight (the peer cannot have more calls waiting for a reply).
	lateCancels int
	// Token bucket for Limits.MaxRequestRate.
	rateTokens float64
	rateLast   time.Time
}

// job is one request for a handler.
type job struct {
	ctx    context.Context
	cancel context.CancelFunc
	id     uint64
	e      *muxEntry
	req    proto.Message
	fds    []*os.File
	// cancelled: the peer cancelled it (once is all it may). Guarded by
	// Conn.mu.
	cancelled bool
}

// takeRequestTokenLocked takes one request from the MaxRequestRate token
// bucket, reporting false if it is empty. Called with mu held, only when
// MaxRequestRate is set: the clock is read for requests only.
func (c *Conn) takeRequestTokenLocked() bool {
	now := time.Now()
	burst := float64(c.lim.RequestBurst)
	if c.rateLast.IsZero() {
		c.rateTokens = burst
	} else {
		c.rateTokens = min(burst, c.rateTokens+now.Sub(c.rateLast).Seconds()*float64(c.lim.MaxRequestRate))
	}
	c.rateLast = now
	if c.rateTokens < 1 {
		return false
	}
	c.rateTokens--
	return true
}

// worker runs handlers: first j, then whatever the read loop hands it
// while it is idle, until the Conn dies. Reusing goroutines (at most
// MaxInFlight of them, since each one is either serving a request in
// flight or idle) spares a goroutine start and stack growth per request.
func (c *Conn) worker(j *job) {
	for {
		c.serve(j)
		select {
		case j = <-c.work:
		case <-c.done:
			return
		}
	}
}

// checkRequest validates a request (whose envelope is valid) against mux
// and lim and decodes its payload. dup says whether its id is in flight,
// busy how many requests are. Apart from the fd kind checks (fstat, fcntl)
// it is pure, for fuzzing.
func checkRequest(env *wirepb.Envelope, fds []int, mux *Mux, lim *Limits, dup bool, busy int) (*muxEntry, proto.Message, *ProtocolError) {
	var e *muxEntry
	if mux != nil {
		e = mux.lookup(env.Method)
	}
	if e == nil {
		return nil, nil, violation(ReasonUnknownMethod, "request %d: %q", env.Id, env.Method)
	}
	if dup {
		return nil, nil, violation(ReasonDuplicateID, "request %d (%s) already in flight", env.Id, env.Method)
	}
	if busy >= lim.MaxInFlight {
		return nil, nil, violation(ReasonTooManyInFlight, "request %d (%s): %d already in flight", env.Id, env.Method, busy)
	}
	if max := payloadLimit(e.spec.MaxRequestBytes, lim); len(env.Payload) > max {
		return nil, nil, violation(ReasonPayloadTooLarge, "request %d (%s): %d bytes, limit %d", env.Id, env.Method, len(env.Payload), max)
	}
	if len(fds) != len(e.spec.RequestFDs) {
		return nil, nil, violation(ReasonFDCount, "request %d (%s): %d fds, spec wants %d", env.Id, env.Method, len(fds), len(e.spec.RequestFDs))
	}
	if perr := checkKinds(fds, e.spec.RequestFDs); perr != nil {
		perr.Detail = fmt.Sprintf("request %d (%s): %s", env.Id, env.Method, perr.Detail)
		return nil, nil, perr
	}
	req := e.reqType.New().Interface()
	if err := proto.Unmarshal(env.Payload, req); err != nil {
		return nil, nil, violation(ReasonMalformed, "request %d (%s) payload: %v", env.Id, env.Method, err)
	}
	return e, req, nil
}

func (c *Conn) serve(j *job) {
	id, e, cancel := j.id, j.e, j.cancel
	var (
		resp proto.Message
		out  []*os.File
		herr error
	)
	if herr = c.mux.runBefore(j.ctx, e.spec.Name); herr == nil {
		resp, out, herr = e.call(j.ctx, j.req, j.fds)
	} else {
		closeFiles(j.fds) // the handler that would have owned them never runs
	}
	cancel()
	// The request stays in flight (busy, and in serving) while its reply
	// waits for room in the peer's queue: a peer that does not read holds
	// at most MaxInFlight replies, each for at most SendTimeout. write
	// stops counting it just before the reply enters the peer's queue,
	// since the peer may reuse the slot as soon as it has the reply.
	sent := c.reply(j, resp, out, herr)
	closeFiles(out)
	c.mu.Lock()
	if c.serving != nil {
		delete(c.serving, id)
		if sent && !j.cancelled {
			c.lateCancels = min(c.lateCancels+1, c.lim.MaxInFlight)
		}
	}
	c.mu.Unlock()
}

// reply sends j's reply: resp and out, or herr's status. It reports
// whether a reply was sent.
func (c *Conn) reply(j *job, resp proto.Message, out []*os.File, herr error) bool {
	e := j.e
	if herr == nil {
		m := outMsg{kind: wirepb.Kind_KIND_REPLY, id: j.id, name: e.spec.Name, served: true, payload: resp,
			maxPayload: payloadLimit(e.spec.MaxResponseBytes, &c.lim), fds: out, kinds: e.spec.ResponseFDs}
		err := c.send(context.Background(), &m)
		if err == nil || !errors.Is(err, ErrSpec) {
			return err == nil
		}
		c.log.Error("ipc: handler response violates its method spec", "method", e.spec.Name, "err", err)
		herr = Errorf(CodeInternal, "response violates the method spec")
	}
	code, msg := statusOf(herr)
	m := outMsg{kind: wirepb.Kind_KIND_REPLY, id: j.id, name: e.spec.Name, served: true, code: code, msg: msg}
	return c.send(context.Background(), &m) == nil
}

// handleReply matches a reply with our pending call and validates it.
func (c *Conn) handleReply(env *wirepb.Envelope, fds []int) *ProtocolError {
	c.mu.Lock()
	p := c.pending[env.Id]
	if p != nil {
		delete(c.pending, env.Id)
		if p.cancelled {
			c.unqueueCancelLocked(env.Id)
		}
	}
	c.mu.Unlock()
	if p == nil {
		return violation(ReasonUnknownReply, "reply %d", env.Id)
	}
	<-c.sem // the call's slot is free: the peer is done with it
	res, perr := decodeReply(env, fds, p.spec, p.respType, &c.lim)
	if perr != nil {
		if !p.cancelled {
			p.ch <- callResult{err: perr}
		}
		return perr
	}
	if p.cancelled {
		// The caller gave up; the late reply is dropped.
		closeFiles(res.fds)
		return nil
	}
	p.ch <- res
	return nil
}

// decodeReply validates a reply (whose envelope is valid) against the spec
// of the call it answers and decodes it. On success the fds are wrapped in
// the result. Apart from the fd kind checks it is pure, for fuzzing.
func decodeReply(env *wirepb.Envelope, fds []int, spec *MethodSpec, respType protoreflect.MessageType, lim *Limits) (callResult, *ProtocolError) {
	if env.StatusCode != 0 {
		return callResult{err: &StatusError{Code: Code(env.StatusCode), Message: env.StatusMessage}}, nil
	}
	name := spec.Name
	if max := payloadLimit(spec.MaxResponseBytes, lim); len(env.Payload) > max {
		return callResult{}, violation(ReasonPayloadTooLarge, "reply %d (%s): %d bytes, limit %d", env.Id, name, len(env.Payload), max)
	}
	if len(fds) != len(spec.ResponseFDs) {
		return callResult{}, violation(ReasonFDCount, "reply %d (%s): %d fds, spec wants %d", env.Id, name, len(fds), len(spec.ResponseFDs))
	}
	if perr := checkKinds(fds, spec.ResponseFDs); perr != nil {
		perr.Detail = fmt.Sprintf("reply %d (%s): %s", env.Id, name, perr.Detail)
		return callResult{}, perr
	}
	resp := respType.New().Interface()
	if err := proto.Unmarshal(env.Payload, resp); err != nil {
		return callResult{}, violation(ReasonMalformed, "reply %d (%s) payload: %v", env.Id, name, err)
	}
	return callResult{resp: resp, fds: wrapFDs(fds)}, nil
}

// handleCancel cancels the handler of the peer's request id. A cancel for
// a request no longer in flight is legitimate only if it crossed our reply,
// so each reply sent allows one (lateCancels); any other cancel is work
// the peer gets for free, and a violation.
func (c *Conn) handleCancel(id uint64) *ProtocolError {
	c.mu.Lock()
	j := c.serving[id]
	var perr *ProtocolError
	switch {
	case j != nil && !j.cancelled:
		j.cancelled = true
	case j != nil:
		perr = violation(ReasonUnexpectedCancel, "request %d (%s) cancelled twice", id, j.e.spec.Name)
	case id == 0 || id > c.maxReqID:
		perr = violation(ReasonUnexpectedCancel, "cancel of request %d, never sent (highest %d)", id, c.maxReqID)
	case c.lateCancels > 0:
		c.lateCancels--
	default:
		perr = violation(ReasonUnexpectedCancel, "cancel of request %d, already answered, and more cancels than replies they could have crossed", id)
	}
	c.mu.Unlock()
	if j != nil && perr == nil {
		j.cancel()
	}
	return perr
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

func closeFiles(fs []*os.File) {
	for _, f := range fs {
		if f != nil {
			f.Close()
		}
	}
}

// checkKinds checks received fds against the spec; the count must already
// match.
func checkKinds(fds []int, kinds []FDKind) *ProtocolError {
	for i, fd := range fds {
		if perr := checkFD(fd, kinds[i]); perr != nil {
			perr.Detail = fmt.Sprintf("fd %d of %d: %s", i, len(fds), perr.Detail)
			return perr
		}
	}
	return nil
}

func wrapFDs(fds []int) []*os.File {
	if len(fds) == 0 {
		return nil
	}
	fs := make([]*os.File, len(fds))
	for i, fd := range fds {
		fs[i] = os.NewFile(uintptr(fd), "ipc-fd")
	}
	return fs
}
