package ipc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

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

	rd         readState // the read token (read.go)
	tokenWaits           // the token holder's waits (readwait.go)

	work chan *job // idle handler workers wait here

	mu  sync.Mutex
	err error // why the Conn died; nil while alive

	callState  // our calls to the peer (call.go)
	peerBounds // the peer's requests, bounded (dispatch.go)
	sendState  // the one message being sent (send.go)
	recvBuf    // the datagram being received (receive.go)
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

// Pair returns two connected Conns with the same options, in this
// process: for testing a program's methods and handlers without a sandbox
// (the examples use it too).
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
// netpoller. For debugging and benchmarks, SANDKIT_IPC_RECEIVE=netpoller
// in the environment sends every wait to the netpoller (docs/ipc.md); a
// value other than that or "direct" is an error.
func NewConn(f *os.File, opts ...Option) (*Conn, error) {
	if f == nil {
		return nil, errors.New("ipc: NewConn: nil file")
	}
	defer f.Close()
	o := options{limits: defaultLimits()}
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
	netpollOnly, err := receiveMode()
	if err != nil {
		return nil, fmt.Errorf("ipc: NewConn: %w", err)
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
		f:    nf,
		rc:   nrc,
		lim:  lim,
		mux:  o.mux,
		log:  o.logger,
		done: make(chan struct{}),
		work: make(chan *job),
		tokenWaits: tokenWaits{
			ev:          ev,
			evrc:        evrc,
			ep:          ep,
			eprc:        eprc,
			sockFD:      nfd,
			evFD:        efd,
			netpollOnly: netpollOnly,
		},
		callState: callState{
			sem:       make(chan struct{}, lim.MaxInFlight),
			pending:   make(map[uint64]*pendingCall),
			longCalls: make(map[string]bool),
		},
		peerBounds: peerBounds{serving: make(map[uint64]*job)},
		sendState:  sendState{wlock: make(chan struct{}, 1)},
		recvBuf: recvBuf{
			rbuf: make([]byte, lim.MaxDatagram+1),
			// Room for exactly MaxFDs+1 descriptors (CmsgLen, not
			// CmsgSpace, whose padding could hold one more): one more
			// than allowed is detectable as ReasonFDCount, anything
			// beyond as MSG_CTRUNC.
			roob: make([]byte, unix.CmsgLen(4*(lim.MaxFDs+1))),
			rfds: make([]int, 0, lim.MaxFDs+1),
		},
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
