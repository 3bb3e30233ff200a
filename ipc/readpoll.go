package ipc

import (
	"context"
	"sync"

	"golang.org/x/sys/unix"
)

// pollReader is the receiver that withNetpoll selects, for debugging and
// A/B benchmarks: one goroutine receives for the Conn's whole life, with
// non-blocking recvmsg calls that wait in Go's netpoller, and hands every
// datagram on as the read token's holder does (replies to their callers,
// requests to worker goroutines), never running a handler itself. It has
// none of the read token's signals, eventfd, wait set or standby timer, so
// a problem that persists with it is not in them; it costs a netpoller
// wakeup and a goroutine hand-off per datagram, which is what the read
// token saves (see read.go).
type pollReader struct {
	c      *Conn
	recvFn func(fd uintptr) bool
	users  sync.WaitGroup
}

// newPollReader returns the netpoller receiver for c, whose socket is
// non-blocking and registered with the netpoller.
func newPollReader(c *Conn) *pollReader {
	r := &pollReader{c: c}
	r.recvFn = func(fd uintptr) bool {
		c.recvmsg(fd, false)
		return c.rErr != unix.EAGAIN // false: wait in the netpoller, then retry
	}
	return r
}

// start starts the loop.
func (r *pollReader) start() {
	r.users.Add(1)
	go r.loop()
}

// loop receives and dispatches datagrams until the Conn dies.
func (r *pollReader) loop() {
	defer r.users.Done()
	c := r.c
	for {
		n, oobn, flags, err := 0, 0, 0, c.rc.Read(r.recvFn)
		if err == nil {
			n, oobn, flags, err = c.rN, c.rOOBN, c.rFlags, c.rErr
		}
		if _, err := c.received(n, oobn, flags, err, false); err != nil {
			return
		}
	}
}

// await waits for p's result, which the loop delivers; it reports false
// if ctx ended first.
func (r *pollReader) await(ctx context.Context, p *pendingCall) (callResult, bool) {
	select {
	case res := <-p.ch:
		return res, true
	default:
	}
	select {
	case res := <-p.ch:
		return res, true
	case <-ctx.Done():
		return callResult{}, false
	}
}

// serve has nothing to do: the loop receives at all times.
func (r *pollReader) serve() {}

// shutdown has nothing to wake: Conn.fail closes the socket next, which
// ends the loop's wait in the netpoller.
func (r *pollReader) shutdown() {}

// wait returns when the loop has returned. Only after shutdown.
func (r *pollReader) wait() { r.users.Wait() }
