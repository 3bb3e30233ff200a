package ipc

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"github.com/sandkit/sandkit/ipc/wirepb"
	"golang.org/x/sys/unix"
)

// recvBuf is the datagram being received and its buffers, reused from one
// datagram to the next. Only the goroutine that receives (the read
// token's holder) uses it.
type recvBuf struct {
	rbuf   []byte
	roob   []byte
	rmsg   unix.Msghdr
	riov   unix.Iovec
	rN     int
	rOOBN  int
	rFlags int
	rErr   error
	renv   wirepb.Envelope
	rfds   []int
	recvFn func(fd uintptr)
}

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

// die kills the Conn because receiving failed with err, and returns the
// Conn's error.
func (c *Conn) die(err error) error {
	switch {
	case c.dead() || errors.Is(err, os.ErrClosed):
		c.fail(ErrClosed) // no-op if already dead
	case errors.Is(err, ErrProtocol), err == ErrPeerClosed:
		c.fail(err)
	default:
		c.fail(fmt.Errorf("ipc: recvmsg: %w", err))
	}
	return c.deadErr()
}
