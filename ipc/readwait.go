package ipc

import (
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// tokenWaits is what the read token's holder needs to wait for a datagram
// and what other goroutines need to interrupt its wait. Only the holder
// uses the scratch fields below the atomics.
type tokenWaits struct {
	// ev is an eventfd that wakes a holder of the read token waiting in
	// the netpoller (see waitSlow).
	ev   *os.File
	evrc syscall.RawConn
	// ep is an epoll instance holding the socket and ev, registered with
	// Go's netpoller: the token holder waits on it when a wait is expected
	// to outlast longWait (see waitSlow).
	ep   *os.File
	eprc syscall.RawConn
	// The socket's and ev's descriptor numbers, to arm the wait set. Only
	// fail closes them; a number reused after that is not in the wait set,
	// so arming fails, on a Conn that is already dead.
	sockFD, evFD int

	// A token holder expecting a short wait blocks in recvmsg on the
	// socket itself (see recvWait): the thread it blocks on, while it
	// does, and a count of wake calls, which the holder compares before
	// blocking.
	blockTID atomic.Int32
	wakes    atomic.Uint64
	pid      int

	recvWFn  func(fd uintptr)
	pollFn   func(fd uintptr)
	pollEv   func(fd uintptr)
	epollFn  func(fd uintptr) bool
	pollS    uintptr // socket fd while pollFn runs
	pollOK   bool    // ppoll saw the wake eventfd
	waitLong bool    // the holder expects a long wait (see longWait)
	// netpollOnly sends every wait to the netpoller: no thread blocks in
	// recvmsg and wake never signals one (see receiveMode).
	netpollOnly bool
	rMore       bool // the last receive found a datagram
	pollE       error
}

// poll waits until the socket is readable (or at EOF) or the wake eventfd
// fires; pollOK reports the latter. It is for waits expected to be long
// (short ones block in recvWait): it waits in Go's netpoller (waitSlow),
// and ppoll then only reports what is ready.
func (c *Conn) poll() error {
	if err := c.waitSlow(); err != nil {
		return err
	}
	c.pollE, c.pollOK = nil, false
	if err := c.rc.Control(c.pollFn); err != nil {
		return err
	}
	return c.pollE
}

func (c *Conn) doPoll(fd uintptr) {
	c.pollS = fd
	if err := c.evrc.Control(c.pollEv); err != nil {
		c.pollE = err
	}
}

func (c *Conn) doPollEv(efd uintptr) {
	fds := [2]unix.PollFd{
		{Fd: int32(c.pollS), Events: unix.POLLIN},
		{Fd: int32(efd), Events: unix.POLLIN},
	}
	for {
		_, err := unix.Ppoll(fds[:], nil, nil)
		if err == unix.EINTR {
			continue
		}
		c.pollE = err
		break
	}
	c.pollOK = fds[1].Revents != 0
}

// waitSlow waits in Go's netpoller until the socket or the wake eventfd
// is readable, holding no thread and no P.
//
// The wait set's entries are one-shot and armed only here. Armed all the
// time, every datagram would also wake the netpoller of an idle P, the
// cost the read token exists to avoid.
func (c *Conn) waitSlow() error {
	if err := c.armWaitSet(); err != nil {
		return err
	}
	return c.eprc.Read(c.epollFn)
}

func (c *Conn) armWaitSet() error {
	var err error
	cerr := c.eprc.Control(func(epfd uintptr) {
		for _, fd := range []int{c.sockFD, c.evFD} {
			ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLONESHOT, Fd: int32(fd)}
			if e := unix.EpollCtl(int(epfd), unix.EPOLL_CTL_MOD, fd, &ev); e != nil {
				err = fmt.Errorf("ipc: epoll_ctl: %w", e)
				return
			}
		}
	})
	if cerr != nil {
		return cerr
	}
	return err
}

// doEpoll reports whether the wait set has an event ready, without
// blocking: false sends the caller back to the netpoller.
func (c *Conn) doEpoll(fd uintptr) bool {
	var ev [2]unix.EpollEvent
	for {
		n, err := unix.EpollWait(int(fd), ev[:], 0)
		if err == unix.EINTR {
			continue
		}
		return n > 0 || err != nil
	}
}

// newWaitSet returns an epoll instance holding fds, disarmed (see
// waitSlow), as an *os.File registered with Go's netpoller: an epoll
// descriptor is itself readable while it has an event ready.
func newWaitSet(fds ...int) (*os.File, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	for _, fd := range fds {
		ev := unix.EpollEvent{Events: unix.EPOLLONESHOT, Fd: int32(fd)}
		if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			unix.Close(epfd)
			return nil, fmt.Errorf("epoll_ctl: %w", err)
		}
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("epoll: set O_NONBLOCK: %w", err)
	}
	return os.NewFile(uintptr(epfd), "ipc-waitset"), nil
}

// wake interrupts the token holder's wait, if any: a thread blocked in
// recvmsg by a signal, a wait in the netpoller or ppoll through the
// eventfd. A wakeup nobody needed costs the next holder one extra loop.
func (c *Conn) wake() {
	c.wakes.Add(1)
	if tid := c.blockTID.Load(); tid != 0 {
		// To this process's own thread only (tgkill checks the thread
		// group). SIGURG is the runtime's own preemption signal: every
		// Go program already takes it at any time, and a thread in a
		// system call only sees EINTR.
		_ = unix.Tgkill(c.pid, int(tid), unix.SIGURG)
	}
	one := uint64(1)
	c.evrc.Control(func(fd uintptr) {
		unix.Write(int(fd), (*[8]byte)(unsafe.Pointer(&one))[:])
	})
}

// recvTick is the socket's receive timeout: how long a blocked recvmsg
// waits at most before its holder re-checks why it waits. It only matters
// when a wake's signal lands in the few instructions between the holder's
// last check and its entry into recvmsg; a timeout also makes recvmsg
// return EINTR on a signal rather than restart (signal(7)).
const recvTick = 2 * time.Millisecond

// blockingReceives puts the socket fd in blocking mode, with the receive
// timeout recvTick. Every other receive and send passes MSG_DONTWAIT.
func blockingReceives(fd int) error {
	if err := unix.SetNonblock(fd, false); err != nil {
		return fmt.Errorf("clear O_NONBLOCK: %w", err)
	}
	tv := unix.NsecToTimeval(recvTick.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("SO_RCVTIMEO: %w", err)
	}
	return nil
}

// recvWait receives one datagram, blocking in recvmsg for at most
// recvTick. It returns EAGAIN or EINTR without a datagram when it timed
// out, when a signal interrupted it, or when a wake happened since seq.
//
// The holder publishes its thread before it compares the wake count, and
// wake counts before it reads the thread, so a wake either shows in the
// comparison or finds the thread to signal. The signal misses only if it
// arrives in the few instructions between the comparison and the system
// call, or if the scheduler moved the goroutine to another thread in
// between (the stray signal then costs that thread an EINTR, which Go code
// retries): recvTick bounds the delay. The goroutine is not locked to its
// thread for this, because a locked goroutine that loses its P while
// blocked needs a thread hand-off to get one back, which made the round
// trip with a one-P peer 17 % slower.
func (c *Conn) recvWait(seq uint64) (n, oobn, flags int, err error) {
	c.blockTID.Store(int32(unix.Gettid()))
	defer c.blockTID.Store(0)
	if c.wakes.Load() != seq {
		return 0, 0, 0, unix.EAGAIN
	}
	if err := c.rc.Control(c.recvWFn); err != nil {
		return 0, 0, 0, err
	}
	if c.rErr != nil {
		return 0, 0, 0, c.rErr
	}
	return c.rN, c.rOOBN, c.rFlags, nil
}

// drainWake resets the eventfd. Only the token holder does, and only after
// ppoll reported it; whoever wrote it set its reason first (under the
// token's mutex, or in ctx or the Conn's death), and the holder re-checks
// every reason after draining.
func (c *Conn) drainWake() {
	var buf [8]byte
	c.evrc.Control(func(fd uintptr) { unix.Read(int(fd), buf[:]) })
}

// newUnpolledFile wraps fd in an *os.File that Go's netpoller never
// registers, whatever the descriptor's O_NONBLOCK flag, which it leaves as
// it found it. On error fd is closed.
func newUnpolledFile(fd int, name string) (*os.File, error) {
	// os.NewFile registers non-blocking descriptors with the netpoller;
	// clear the flag for the call and restore it.
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("F_GETFL: %w", err)
	}
	nb := fl&unix.O_NONBLOCK != 0
	if nb {
		if err := unix.SetNonblock(fd, false); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("clear O_NONBLOCK: %w", err)
		}
	}
	f := os.NewFile(uintptr(fd), name)
	if nb {
		if err := unix.SetNonblock(fd, true); err != nil {
			f.Close()
			return nil, fmt.Errorf("restore O_NONBLOCK: %w", err)
		}
	}
	return f, nil
}

// receiveModeEnv names the environment variable that selects how the read
// token's holder waits, read by NewConn:
//
//   - "direct" (or unset): short waits block in recvmsg, long ones go to
//     the netpoller, as described in read.go. The fast path.
//   - "netpoller": every wait goes to Go's netpoller (the wait set and
//     ppoll, as a long wait does), so no thread ever blocks in recvmsg and
//     no wake signals a thread. It is for debugging (a stack or a trace
//     without threads parked in system calls and SIGURG wakes) and for
//     measuring what the direct path buys (A/B benchmarks).
//
// Both modes share everything else: the read token, dispatch, sending.
const receiveModeEnv = "SANDKIT_IPC_RECEIVE"

// receiveMode reports whether the environment asks for the netpoller-only
// receive mode, and rejects a value it does not know rather than guess.
func receiveMode() (netpollOnly bool, err error) {
	switch v := os.Getenv(receiveModeEnv); strings.ToLower(v) {
	case "", "direct":
		return false, nil
	case "netpoller":
		return true, nil
	default:
		return false, fmt.Errorf("%s=%q: want direct or netpoller", receiveModeEnv, v)
	}
}
