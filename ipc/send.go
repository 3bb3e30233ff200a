package ipc

import (
	"context"
	"fmt"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/sandkit/sandkit/ipc/wirepb"
)

// sendState is the message being sent and its buffers, reused from one
// message to the next. It is guarded by wlock, a channel so that waiting
// for it can be abandoned.
type sendState struct {
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
}

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
