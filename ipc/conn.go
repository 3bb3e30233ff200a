package ipc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/sandkit/sandkit/ipc/wirepb"
)

// Limits bound what one Conn accepts from its peer, and so what a peer
// can make it hold and spend. Both ends of a connection must use the same
// Limits: each side's sending is held to the limits the peer enforces on
// receipt (MaxRequestRate aside, which only the side that sets it enforces).
//
// Whatever the peer does, a Conn holds at most MaxInFlight+1 of the peer's
// requests (each a handler goroutine with its request's and its reply's
// descriptors, up to 2×MaxFDs), plus whatever the kernel keeps in the
// socket's send buffer (SO_SNDBUF; at most MaxUnreadFDs descriptors) for a
// peer that does not read it; no
// message waits longer than SendTimeout for the peer to make room. Every
// datagram the peer sends is either work it may ask for (a request, bounded
// by MaxInFlight and MaxRequestRate), the answer to one of ours, or a cancel
// that matches one of its requests; anything else kills the Conn.
type Limits struct {
	MaxDatagram int // bytes of one envelope (one datagram); default 64 KiB, at most 1 MiB
	MaxFDs      int // fds per message; default 8, at most 252
	// MaxInFlight bounds, separately, this side's outgoing calls awaiting a
	// reply (Call blocks for a free slot) and the peer's requests being
	// handled or answered (one more is ReasonTooManyInFlight). A request
	// counts until its reply is in the socket: a peer that stops reading
	// its replies runs out of slots. Default 64.
	MaxInFlight int
	// SendTimeout bounds how long one message waits for room in the
	// peer's receive queue. A peer that leaves it full that long has
	// stopped reading its socket, and the Conn dies with ReasonNotReading:
	// otherwise each unread reply would hold a goroutine and its
	// descriptors for as long as the peer likes. Default 5 s.
	SendTimeout time.Duration
	// MaxRequestRate, when positive, bounds the peer's requests per second
	// on average, with bursts of up to RequestBurst (default MaxInFlight);
	// one more is ReasonRequestRate. It bounds the CPU a peer can make
	// this side spend on requests that fail fast. Zero means unlimited.
	MaxRequestRate int
	RequestBurst   int
	// MaxUnreadFDs bounds the descriptors this side has sent that the
	// peer has not read yet: a message whose descriptors would exceed it
	// waits until the peer has read everything sent before (at most
	// SendTimeout). The kernel charges descriptors in a socket's queue to
	// the sending user and refuses to pass more once that user has more in
	// flight than the RLIMIT_NOFILE of whoever sends next, so a peer that
	// leaves them unread could otherwise stop every process of the same
	// user from passing descriptors. Default MaxFDs.
	MaxUnreadFDs int
}

// DefaultLimits returns the defaults: 64 KiB datagrams, 8 fds per message,
// 64 calls in flight each way, 5 s for the peer to make room for a
// message, no request rate limit.
func DefaultLimits() Limits {
	return Limits{MaxDatagram: 64 << 10, MaxFDs: 8, MaxInFlight: 64, SendTimeout: 5 * time.Second}
}

const (
	maxDatagramLimit = 1 << 20
	maxInFlightLimit = 1 << 16
)

func (l Limits) withDefaults() (Limits, error) {
	d := DefaultLimits()
	if l.MaxDatagram == 0 {
		l.MaxDatagram = d.MaxDatagram
	}
	if l.MaxFDs == 0 {
		l.MaxFDs = d.MaxFDs
	}
	if l.MaxInFlight == 0 {
		l.MaxInFlight = d.MaxInFlight
	}
	if l.SendTimeout == 0 {
		l.SendTimeout = d.SendTimeout
	}
	if l.RequestBurst == 0 {
		l.RequestBurst = l.MaxInFlight
	}
	if l.MaxUnreadFDs == 0 {
		l.MaxUnreadFDs = max(l.MaxFDs, 1)
	}
	if l.MaxDatagram < 64 || l.MaxDatagram > maxDatagramLimit ||
		l.MaxFDs < 0 || l.MaxFDs > maxSpecFDs ||
		l.MaxInFlight < 0 || l.MaxInFlight > maxInFlightLimit ||
		l.SendTimeout < 0 || l.MaxRequestRate < 0 || l.RequestBurst < 0 ||
		l.MaxUnreadFDs < l.MaxFDs {
		return l, fmt.Errorf("ipc: invalid limits %+v", l)
	}
	return l, nil
}

type options struct {
	limits Limits
	mux    *Mux
	logger *slog.Logger
}

// Option configures a Conn.
type Option func(*options)

// WithLimits sets the Conn's limits; zero fields take the defaults.
func WithLimits(l Limits) Option { return func(o *options) { o.limits = l } }

// WithMux routes the peer's requests to mux. Without a mux, any request
// from the peer is a protocol violation (ReasonUnknownMethod).
func WithMux(m *Mux) Option { return func(o *options) { o.mux = m } }

// WithLogger sets the logger (default: discard). Violations are logged at
// Warn, connection death at Debug.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// Conn is one end of an AF_UNIX SOCK_SEQPACKET connection. Both ends can
// call and serve at the same time; calls are multiplexed by request id.
type Conn struct {
	f   *os.File
	rc  syscall.RawConn
	lim Limits
	mux *Mux
	log *slog.Logger

	ctx    context.Context // cancelled when the Conn dies; parent of handler contexts
	cancel context.CancelFunc
	done   chan struct{}
	bg     sync.WaitGroup // background cancel senders

	// ev is an eventfd that wakes a holder of the read token waiting in
	// the netpoller (see read.go).
	ev   *os.File
	evrc syscall.RawConn
	// ep is an epoll instance holding the socket and ev, registered with
	// Go's netpoller: the token holder waits on it when a wait is expected
	// to outlast longWait (see read.go).
	ep   *os.File
	eprc syscall.RawConn
	// The socket's and ev's descriptor numbers, to arm the wait set. Only
	// fail closes them; a number reused after that is not in the wait set,
	// so arming fails, on a Conn that is already dead.
	sockFD, evFD int
	rd           readState

	// A token holder expecting a short wait blocks in recvmsg on the
	// socket itself (see recvWait): the thread it blocks on, while it
	// does, and a count of wake calls, which the holder compares before
	// blocking.
	blockTID atomic.Int32
	wakes    atomic.Uint64
	pid      int

	sem    chan struct{} // outgoing call slots
	work   chan *job     // idle handler workers wait here
	pcPool sync.Pool     // *pendingCall, reused once their result is consumed

	// busy counts the peer's requests against MaxInFlight: from receipt
	// until their reply is handed to the kernel (see write). Only the
	// read token's holder adds, so its check-then-add needs no lock.
	busy atomic.Int64

	mu      sync.Mutex
	err     error // why the Conn died; nil while alive
	nextID  uint64
	pending map[uint64]*pendingCall // our requests awaiting a reply
	serving map[uint64]*job         // peer's requests being handled or answered
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
	// cancelQ holds the ids of our calls whose cancel is still to be
	// sent, by the one goroutine that sends them while cancelling is set.
	// Each is a call that holds its slot, so there are at most MaxInFlight.
	cancelQ    []uint64
	cancelling bool
	// longCalls records, per method called, whether its last reply took
	// longer than longWait. Keys are the local methods' names.
	longCalls map[string]bool

	// Send state, guarded by wlock (a channel so that waiting for it can
	// be abandoned).
	wlock  chan struct{}
	wenv   wirepb.Envelope
	pbuf   []byte
	wbuf   []byte
	woob   []byte
	wmsg   unix.Msghdr
	wiov   unix.Iovec
	wErr   error
	sendFn func(fd uintptr)
	// unreadFDs counts the descriptors sent since the peer's queue was
	// last seen empty (see roomForFDs).
	unreadFDs int

	// Receive state, owned by the holder of the read token.
	rbuf     []byte
	roob     []byte
	rmsg     unix.Msghdr
	riov     unix.Iovec
	rN       int
	rOOBN    int
	rFlags   int
	rErr     error
	renv     wirepb.Envelope
	rfds     []int
	recvFn   func(fd uintptr)
	recvWFn  func(fd uintptr)
	pollFn   func(fd uintptr)
	pollEv   func(fd uintptr)
	epollFn  func(fd uintptr) bool
	pollS    uintptr // socket fd while pollFn runs
	pollOK   bool    // ppoll saw the wake eventfd
	waitLong bool    // the holder expects a long wait (see longWait)
	rMore    bool    // the last receive found a datagram
	pollE    error
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

// SocketPair returns a connected AF_UNIX SOCK_SEQPACKET pair with
// close-on-exec set, in blocking mode. Hand one end to a child process (via
// exec.Cmd.ExtraFiles, which clears close-on-exec on the child's copy) and
// wrap the other with NewConn.
func SocketPair() (*os.File, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("ipc: socketpair: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "ipc-socket"), os.NewFile(uintptr(fds[1]), "ipc-socket"), nil
}

// Pair returns two connected Conns with the same options.
func Pair(opts ...Option) (*Conn, *Conn, error) {
	a, b, err := SocketPair()
	if err != nil {
		return nil, nil, err
	}
	ca, err := NewConn(a, opts...)
	if err != nil {
		b.Close()
		return nil, nil, err
	}
	cb, err := NewConn(b, opts...)
	if err != nil {
		ca.Close()
		return nil, nil, err
	}
	return ca, cb, nil
}

// NewConn wraps f, which must be an AF_UNIX SOCK_SEQPACKET socket, and
// starts the read loop. It takes ownership of f (closing it even on error):
// it puts the socket in blocking mode and sets its receive timeout, which
// a descriptor of the same socket kept elsewhere would see too.
//
// The Conn works on a duplicate that is kept out of Go's netpoller: the
// goroutine that receives blocks in recvmsg(2) itself, so the kernel wakes
// it directly when a datagram arrives, with no netpoller or goroutine
// hand-off in between (see read.go). Waits expected to be long go to the
// netpoller.
func NewConn(f *os.File, opts ...Option) (*Conn, error) {
	if f == nil {
		return nil, errors.New("ipc: NewConn: nil file")
	}
	defer f.Close()
	o := options{limits: DefaultLimits()}
	for _, opt := range opts {
		opt(&o)
	}
	lim, err := o.limits.withDefaults()
	if err != nil {
		return nil, err
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("ipc: NewConn: %w", err)
	}
	nfd := -1
	var cerr error
	err = rc.Control(func(fd uintptr) {
		typ, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE)
		if err != nil {
			cerr = fmt.Errorf("ipc: NewConn: SO_TYPE: %w", err)
			return
		}
		dom, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
		if err != nil {
			cerr = fmt.Errorf("ipc: NewConn: SO_DOMAIN: %w", err)
			return
		}
		if typ != unix.SOCK_SEQPACKET || dom != unix.AF_UNIX {
			cerr = fmt.Errorf("ipc: NewConn: not an AF_UNIX SOCK_SEQPACKET socket (domain %d, type %d)", dom, typ)
			return
		}
		nfd, cerr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
		if cerr != nil {
			return
		}
		if cerr = blockingReceives(nfd); cerr != nil {
			unix.Close(nfd)
			nfd = -1
			cerr = fmt.Errorf("ipc: NewConn: %w", cerr)
		}
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(nfd)
		return nil, fmt.Errorf("ipc: NewConn: eventfd: %w", err)
	}
	// Both are only ever waited for in a blocking recvmsg, in ppoll or
	// through the wait set (read.go), never registered with the netpoller
	// themselves; every send and every other receive on the socket passes
	// MSG_DONTWAIT.
	nf, err := newUnpolledFile(nfd, "ipc-conn")
	if err != nil {
		unix.Close(efd)
		return nil, fmt.Errorf("ipc: NewConn: %w", err)
	}
	opened := []*os.File{nf}
	fail := func(what string, err error) (*Conn, error) {
		for _, f := range opened {
			f.Close()
		}
		return nil, fmt.Errorf("ipc: NewConn: %s: %w", what, err)
	}
	ev, err := newUnpolledFile(efd, "ipc-wake")
	if err != nil {
		return fail("eventfd", err)
	}
	opened = append(opened, ev)
	ep, err := newWaitSet(nfd, efd)
	if err != nil {
		return fail("wait set", err)
	}
	opened = append(opened, ep)
	var rcs [3]syscall.RawConn
	for i, f := range opened {
		if rcs[i], err = f.SyscallConn(); err != nil {
			return fail(f.Name(), err)
		}
	}
	nrc, evrc, eprc := rcs[0], rcs[1], rcs[2]
	c := &Conn{
		f:         nf,
		rc:        nrc,
		ev:        ev,
		evrc:      evrc,
		ep:        ep,
		eprc:      eprc,
		sockFD:    nfd,
		evFD:      efd,
		lim:       lim,
		mux:       o.mux,
		log:       o.logger,
		done:      make(chan struct{}),
		sem:       make(chan struct{}, lim.MaxInFlight),
		pending:   make(map[uint64]*pendingCall),
		longCalls: make(map[string]bool),
		serving:   make(map[uint64]*job),
		wlock:     make(chan struct{}, 1),
		work:      make(chan *job),
		rbuf:      make([]byte, lim.MaxDatagram+1),
		// Room for exactly MaxFDs+1 descriptors (CmsgLen, not CmsgSpace,
		// whose padding could hold one more): one more than allowed is
		// detectable as ReasonFDCount, anything beyond as MSG_CTRUNC.
		roob: make([]byte, unix.CmsgLen(4*(lim.MaxFDs+1))),
		rfds: make([]int, 0, lim.MaxFDs+1),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.sendFn = c.doSend
	c.recvFn = c.doRecv
	c.recvWFn = c.doRecvWait
	c.pid = os.Getpid()
	c.pollFn = c.doPoll
	c.pollEv = c.doPollEv
	c.epollFn = c.doEpoll
	c.rd.init(c)
	return c, nil
}

// Done is closed when the Conn is dead for any reason.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err reports why the Conn died: nil while it is alive; a *ProtocolError
// (errors.Is(err, ErrProtocol)) if the peer violated the protocol;
// ErrPeerClosed on EOF; ErrClosed after Close; otherwise a wrapped socket
// error.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close kills the Conn: pending calls fail with ErrClosed, running
// handlers' contexts are cancelled, the socket is closed. It waits until
// nothing receives on the Conn any more (not for handlers to return). It is
// idempotent and returns nil.
func (c *Conn) Close() error {
	c.fail(ErrClosed)
	c.rd.wait()
	c.bg.Wait()
	return nil
}

// PeerCred returns the peer's credentials as recorded by the kernel when the
// connection was made (SO_PEERCRED).
func (c *Conn) PeerCred() (*unix.Ucred, error) {
	var cred *unix.Ucred
	var gerr error
	err := c.rc.Control(func(fd uintptr) {
		cred, gerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err != nil {
		if c.dead() {
			return nil, c.deadErr()
		}
		return nil, fmt.Errorf("ipc: SO_PEERCRED: %w", err)
	}
	if gerr != nil {
		return nil, fmt.Errorf("ipc: SO_PEERCRED: %w", gerr)
	}
	return cred, nil
}

// Unread returns how much of what this side sent the peer has not read
// yet, in bytes of kernel buffer (SIOCOUTQ: each datagram counts with its
// overhead). Nonzero for long while the peer is alive means it stopped
// reading its socket.
func (c *Conn) Unread() (int, error) {
	var n int
	var ierr error
	err := c.rc.Control(func(fd uintptr) {
		n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ)
	})
	if err != nil {
		return 0, c.deadErr()
	}
	if ierr != nil {
		return 0, fmt.Errorf("ipc: SIOCOUTQ: %w", ierr)
	}
	return n, nil
}

// fail marks the Conn dead with err (first caller wins), closes the socket,
// cancels handlers and fails pending calls.
func (c *Conn) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	pend := c.pending
	c.pending = nil
	c.serving = nil
	c.mu.Unlock()

	close(c.done)
	c.cancel()
	c.rd.shutdown() // wakes whoever waits holding the token; no one takes it again
	// The descriptors close once the last syscall using them returns
	// (os.File reference counts), so their numbers are never reused under
	// a goroutine still blocked in recvmsg or ppoll.
	c.f.Close()
	c.ev.Close()
	c.ep.Close()
	for _, p := range pend {
		if !p.cancelled {
			p.ch <- callResult{err: err}
		}
	}
	var perr *ProtocolError
	if errors.As(err, &perr) {
		c.log.Warn("ipc: peer violated the protocol", "reason", string(perr.Reason), "detail", perr.Detail)
	} else {
		c.log.Debug("ipc: connection closed", "err", err)
	}
}

// dead reports whether the Conn has died. Errors from the socket after
// that are consequences of closing it and are reported as deadErr.
func (c *Conn) dead() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func (c *Conn) deadErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		return ErrClosed
	}
	return c.err
}

// ---- receiving ----

// doRecv receives one datagram into rbuf/roob without blocking
// (MSG_DONTWAIT): a raw system call, which never waits.
func (c *Conn) doRecv(fd uintptr) { c.recvmsg(fd, false) }

// doRecvWait is doRecv blocking: a system call the scheduler knows may
// block (syscall.Syscall), without MSG_DONTWAIT.
func (c *Conn) doRecvWait(fd uintptr) { c.recvmsg(fd, true) }

func (c *Conn) recvmsg(fd uintptr, block bool) {
	c.riov.Base = &c.rbuf[0]
	c.riov.SetLen(len(c.rbuf))
	c.rmsg = unix.Msghdr{Iov: &c.riov, Iovlen: 1, Control: &c.roob[0]}
	c.rmsg.SetControllen(len(c.roob))
	var (
		n uintptr
		e syscall.Errno
	)
	if block {
		n, _, e = syscall.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&c.rmsg)), unix.MSG_CMSG_CLOEXEC)
	} else {
		n, _, e = unix.RawSyscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&c.rmsg)), unix.MSG_CMSG_CLOEXEC|unix.MSG_DONTWAIT)
	}
	c.rErr = nil
	if e != 0 {
		c.rErr = e
		return
	}
	c.rN, c.rOOBN, c.rFlags = int(n), int(c.rmsg.Controllen), int(c.rmsg.Flags)
}

// recv receives one datagram into rbuf/roob without blocking: it reports
// unix.EAGAIN if nothing is queued. The caller holds the read token.
func (c *Conn) recv() (n, oobn, flags int, err error) {
	if err := c.rc.Control(c.recvFn); err != nil {
		return 0, 0, 0, err
	}
	if c.rErr != nil {
		return 0, 0, 0, c.rErr
	}
	return c.rN, c.rOOBN, c.rFlags, nil
}

func (c *Conn) zeroRead() error {
	n, oobn, _, err := c.recv()
	switch {
	case err == unix.EAGAIN:
		return violation(ReasonMalformed, "empty datagram")
	case err != nil:
		return ErrPeerClosed
	case n == 0 && oobn == 0:
		return ErrPeerClosed
	}
	fds, _ := parseControl(c.roob[:oobn], c.rfds[:0])
	closeFDs(fds)
	return violation(ReasonMalformed, "empty datagram")
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

// ---- sending ----

type outMsg struct {
	kind       wirepb.Kind
	id         uint64
	method     string
	name       string // of the method a reply answers, for errors
	served     bool   // a reply: counted in busy until it is in the peer's queue
	timeout    time.Duration
	code       Code
	msg        string
	payload    proto.Message
	maxPayload int
	fds        []*os.File
	kinds      []FDKind
}

func (c *Conn) lockWrite(ctx context.Context) error {
	select {
	case c.wlock <- struct{}{}:
		return nil
	default:
	}
	var ctxDone <-chan struct{}
	if ctx != nil {
		ctxDone = ctx.Done()
	}
	select {
	case c.wlock <- struct{}{}:
		return nil
	case <-c.done:
		return c.deadErr()
	case <-ctxDone:
		return ctx.Err()
	}
}

func (c *Conn) unlockWrite() { <-c.wlock }

// send encodes and sends one message. ctx (may be nil: wait until the Conn
// dies) bounds waiting for the write lock and for socket buffer space.
// Errors wrapping ErrSpec mean m does not fit its spec or the limits; nothing
// was sent. The caller keeps ownership of m.fds.
func (c *Conn) send(ctx context.Context, m *outMsg) error {
	if err := c.lockWrite(ctx); err != nil {
		return err
	}
	defer c.unlockWrite()
	select {
	case <-c.done:
		return c.deadErr()
	default:
	}
	env := &c.wenv
	env.Reset()
	env.Kind, env.Id, env.Method = m.kind, m.id, m.method
	env.TimeoutNanos, env.StatusCode, env.StatusMessage = int64(m.timeout), int32(m.code), m.msg
	env.FdCount = uint32(len(m.fds))
	if m.payload != nil && m.payload.ProtoReflect().IsValid() {
		var err error
		c.pbuf, err = proto.MarshalOptions{}.MarshalAppend(c.pbuf[:0], m.payload)
		if err != nil {
			// The caller's own message cannot be encoded (a proto3
			// string that is not UTF-8, say): a local error, like a
			// spec violation, and nothing was sent.
			return fmt.Errorf("%w: marshal %v: %w", ErrSpec, m.payload.ProtoReflect().Descriptor().FullName(), err)
		}
		if len(c.pbuf) > m.maxPayload {
			return fmt.Errorf("%w: payload of %d bytes, limit %d", ErrSpec, len(c.pbuf), m.maxPayload)
		}
		env.Payload = c.pbuf
	}
	var err error
	c.wbuf, err = proto.MarshalOptions{}.MarshalAppend(c.wbuf[:0], env)
	env.Payload = nil
	if err != nil {
		return fmt.Errorf("ipc: marshal envelope: %w", err)
	}
	if len(c.wbuf) > c.lim.MaxDatagram {
		return fmt.Errorf("%w: message of %d bytes, limit %d", ErrSpec, len(c.wbuf), c.lim.MaxDatagram)
	}
	if len(m.fds) > c.lim.MaxFDs {
		return fmt.Errorf("%w: %d fds, limit %d", ErrSpec, len(m.fds), c.lim.MaxFDs)
	}
	if len(m.fds) != len(m.kinds) {
		return fmt.Errorf("%w: %d fds, spec wants %d", ErrSpec, len(m.fds), len(m.kinds))
	}
	if len(m.fds) == 0 {
		return c.write(ctx, m, nil)
	}
	return withRawFDs(m.fds, make([]int, 0, len(m.fds)), func(raw []int) error {
		for i, fd := range raw {
			if m.kinds[i] == SeccompListener {
				// Only a sandboxed renderer sends one, and it has no
				// /proc to check it with; the receiver checks.
				continue
			}
			if perr := checkFD(fd, m.kinds[i]); perr != nil {
				return fmt.Errorf("%w: fd %d: %v", ErrSpec, i, perr)
			}
		}
		if err := c.roomForFDs(ctx, m, len(raw)); err != nil {
			return err
		}
		c.woob = putRights(c.woob[:0], raw)
		return c.write(ctx, m, c.woob)
	})
}

// withRawFDs calls fn with the descriptors of files, holding a reference on
// each (RawConn.Control) so that none can be closed and reused underneath.
// It never calls Fd(), which would switch a pollable file to blocking mode
// for everyone sharing its open file description.
func withRawFDs(files []*os.File, raw []int, fn func([]int) error) error {
	if len(files) == 0 {
		return fn(raw)
	}
	if files[0] == nil {
		return fmt.Errorf("%w: nil *os.File", ErrSpec)
	}
	rc, err := files[0].SyscallConn()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrSpec, err)
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = withRawFDs(files[1:], append(raw, int(fd)), fn) }); err != nil {
		return fmt.Errorf("%w: %v", ErrSpec, err)
	}
	return ferr
}

// putRights appends one SCM_RIGHTS control message carrying fds.
func putRights(b []byte, fds []int) []byte {
	n := unix.CmsgSpace(4 * len(fds))
	if cap(b) < n {
		b = make([]byte, n)
	}
	b = b[:n]
	clear(b)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = unix.SOL_SOCKET
	h.Type = unix.SCM_RIGHTS
	h.SetLen(unix.CmsgLen(4 * len(fds)))
	data := b[unix.CmsgLen(0):]
	for i, fd := range fds {
		*(*int32)(unsafe.Pointer(&data[4*i])) = int32(fd)
	}
	return b
}

func (c *Conn) doSend(fd uintptr) {
	c.wiov.Base = &c.wbuf[0]
	c.wiov.SetLen(len(c.wbuf))
	c.wmsg = unix.Msghdr{Iov: &c.wiov, Iovlen: 1}
	if len(c.woob) > 0 {
		c.wmsg.Control = &c.woob[0]
		c.wmsg.SetControllen(len(c.woob))
	}
	_, _, e := unix.RawSyscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&c.wmsg)), unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT)
	c.wErr = nil
	if e != 0 {
		c.wErr = e
	}
}

// writeWaitSlice bounds one wait for room in the peer's receive queue, so
// that a blocked sender notices its context ending or the Conn dying.
const writeWaitSlice = 5 * time.Millisecond

// write sends wbuf with oob, m's encoding, in one sendmsg; the write lock
// is held. A SEQPACKET datagram is sent whole or not at all, so abandoning
// a blocked write never leaves half a message on the wire.
//
// A message that finds no room in the peer's queue for SendTimeout kills
// the Conn (ReasonNotReading). A reply (m.served) stops counting against
// MaxInFlight just before each sendmsg, and counts again if there was no
// room: the peer cannot have the reply before sendmsg succeeds, so it
// never sees its next request refused for a slot it got back, and at most
// one reply (the write lock's holder's) is outside the count.
func (c *Conn) write(ctx context.Context, m *outMsg, oob []byte) error {
	c.woob = oob
	defer func() { c.woob = nil }()
	var waitStart time.Time
	for {
		if m.served {
			c.busy.Add(-1)
		}
		if err := c.rc.Control(c.sendFn); err != nil {
			return c.deadErr()
		}
		if c.wErr != unix.EAGAIN {
			break
		}
		if m.served {
			c.busy.Add(1)
		}
		// The peer's receive queue is full: wait for room, but no longer
		// than SendTimeout and ctx allow.
		if c.dead() {
			return c.deadErr()
		}
		if waitStart.IsZero() {
			waitStart = time.Now()
		} else if time.Since(waitStart) >= c.lim.SendTimeout {
			c.fail(violation(ReasonNotReading, "%s not read within %v", m.describe(), c.lim.SendTimeout))
			return c.deadErr()
		}
		if ctx != nil && ctx.Err() != nil {
			return fmt.Errorf("%w (its queue stayed full for %v): %w", ErrPeerNotReading, time.Since(waitStart).Round(time.Millisecond), ctx.Err())
		}
		if err := c.waitWritable(); err != nil {
			if c.dead() {
				return c.deadErr()
			}
			return fmt.Errorf("ipc: wait to send: %w", err)
		}
	}
	if c.wErr != nil {
		if c.wErr == unix.EPIPE || c.wErr == unix.ECONNRESET {
			return ErrPeerClosed
		}
		return fmt.Errorf("ipc: sendmsg: %w", c.wErr)
	}
	return nil
}

// roomForFDs waits, holding the write lock, until n more descriptors keep
// at most MaxUnreadFDs of ours unread in the peer's queue. It counts what
// it sends since the queue was last seen empty (SIOCOUTQ 0), and asks the
// kernel only when the count would pass the limit: a peer that reads
// promptly costs an ioctl every few messages with descriptors. It gives up
// like write: at ctx's end, or killing the Conn after SendTimeout.
func (c *Conn) roomForFDs(ctx context.Context, m *outMsg, n int) error {
	if c.unreadFDs+n <= c.lim.MaxUnreadFDs {
		c.unreadFDs += n
		return nil
	}
	var waitStart time.Time
	for delay := 20 * time.Microsecond; ; delay = min(2*delay, writeWaitSlice) {
		q, err := c.Unread()
		if err != nil {
			if c.dead() {
				return c.deadErr()
			}
			return err
		}
		if q == 0 {
			c.unreadFDs = n
			return nil
		}
		if c.dead() {
			return c.deadErr()
		}
		if waitStart.IsZero() {
			waitStart = time.Now()
		} else if time.Since(waitStart) >= c.lim.SendTimeout {
			c.fail(violation(ReasonNotReading, "%s not read within %v: %d descriptors already unread", m.describe(), c.lim.SendTimeout, c.unreadFDs))
			return c.deadErr()
		}
		if ctx != nil && ctx.Err() != nil {
			return fmt.Errorf("%w (%d descriptors unread for %v): %w", ErrPeerNotReading, c.unreadFDs, time.Since(waitStart).Round(time.Millisecond), ctx.Err())
		}
		time.Sleep(delay)
	}
}

// describe names m for errors.
func (m *outMsg) describe() string {
	switch m.kind {
	case wirepb.Kind_KIND_REQUEST:
		return fmt.Sprintf("request %d (%s)", m.id, m.method)
	case wirepb.Kind_KIND_REPLY:
		return fmt.Sprintf("reply to %s (request %d)", m.name, m.id)
	default:
		return fmt.Sprintf("cancel of request %d", m.id)
	}
}

// waitWritable waits up to writeWaitSlice for the socket to take a
// datagram. It is the rare path (the peer is not reading), so it polls in
// slices rather than taking part in the read token's wakeups.
func (c *Conn) waitWritable() error {
	var perr error
	err := c.rc.Control(func(fd uintptr) {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		ts := unix.NsecToTimespec(int64(writeWaitSlice))
		_, perr = unix.Ppoll(pfd, &ts, nil)
	})
	if err != nil {
		return err
	}
	if perr != nil && perr != unix.EINTR {
		return perr
	}
	return nil
}

// ---- calling ----

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
