package ipc

import (
	"context"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Receiving is organised around a read token so that a datagram is
// received by the goroutine that wants it, woken straight from recvmsg by
// the kernel.
//
// Measured between two processes on a 2-core machine, waiting in Go's
// netpoller costs about 10 µs per side on top of a thread blocked in
// recvmsg, and handing a datagram from a read-loop goroutine to the
// goroutine that wants it costs about 10 µs more (a goroutine wake plus a
// spinning thread that competes with the peer for a core). A round trip
// through a read loop and a handler goroutine paid both on both sides.
//
// So whoever holds the token is the only goroutine that receives. For a
// short wait it blocks in recvmsg on the socket; other goroutines that need
// to interrupt it (wake) send its thread a signal. For a long wait it waits
// in Go's netpoller, on the socket and an eventfd that wake writes:
//
//   - A caller waiting for its reply takes the token when it is free and
//     receives until its own reply arrives: the common case (one call at a
//     time) has no hand-off at all. Other datagrams it receives are
//     dispatched as the loop would (replies to their callers, requests to
//     worker goroutines). Callers that find the token taken wait for their
//     reply or for the token, whichever comes first.
//   - A loop goroutine holds the token when no caller does, so that the
//     peer's requests and cancels are read while nothing is being called.
//     It yields to a caller on request (wake). It runs a request's
//     handler itself, after releasing the token, so serving a call has no
//     hand-off either.
//   - Releasing the token arms a timer (standbyDelay). If nobody has taken
//     the token when it fires, a loop goroutine takes it. This keeps a
//     reader on the socket while a handler runs inline or after a caller
//     has its reply, without waking a goroutine on every call: a caller
//     that calls again within the delay takes the token straight back.
//
// Messages are never lost while nobody holds the token: they wait in the
// socket's receive queue, for at most standbyDelay plus a wakeup.

// standbyDelay is how long the token may stay free before a loop goroutine
// takes it.
const standbyDelay = 50 * time.Microsecond

// longWait is the wait beyond which the token holder waits in Go's
// netpoller rather than blocked in recvmsg. A thread blocked in a system
// call keeps its P; once the
// wait outlasts a few of sysmon's 20 µs ticks, sysmon takes the P back,
// starts a spinning thread to look for work and keeps ticking, which on a
// busy machine preempts the goroutines doing the work. The netpoller
// costs about 10 µs more per wakeup, which only short waits notice.
//
// A wait is expected to be long from the last one like it: a call's from
// the last reply time of its method on this Conn, the loop's from its own
// last wait; a call not yet known to be slow moves to the netpoller once
// it has waited longWait. (Timing a ppoll out instead cost a kernel
// high-resolution timer on every wait, measured at 8 µs per side of a round
// trip on a virtual machine; the socket's receive timeout, recvTick, is a
// coarse timer and did not measurably cost anything.)
const longWait = 100 * time.Microsecond

type readState struct {
	c *Conn

	mu         sync.Mutex
	held       bool          // a goroutine holds the token
	heldByLoop bool          // ...a loop goroutine, which yields to callers
	yieldAsked bool          // a caller asked the loop holding it to yield
	free       chan struct{} // closed at the next release; made only when someone waits
	idleLoop   bool          // a loop goroutine waits on loopWake
	loopWake   chan struct{} // capacity 1
	loops      int           // loop goroutines running (see loop)
	shut       bool          // the Conn is dead: the token is never taken again
	users      sync.WaitGroup

	standby *time.Timer
	// standbyAfter is standbyDelay; tests lengthen it to decide
	// themselves when a loop goroutine takes the token (startLoop).
	standbyAfter time.Duration
	// loopLong says the loop's last wait outlasted longWait; only the
	// token holder reads or writes it.
	loopLong bool
}

func (r *readState) init(c *Conn) {
	r.c = c
	r.loopWake = make(chan struct{}, 1)
	r.standbyAfter = standbyDelay
	r.standby = time.AfterFunc(time.Hour, r.startLoop)
	r.standby.Stop()
	r.users.Add(1)
	r.loops++
	go r.loop()
}

// shutdown marks the Conn dead for readers and wakes the token holder. Called
// once, by Conn.fail.
func (r *readState) shutdown() {
	r.mu.Lock()
	r.shut = true
	r.mu.Unlock()
	r.standby.Stop()
	r.c.wake()
	// A holder blocked in recvmsg returns at once (EOF) once the socket
	// cannot receive any more, whether or not wake's signal reached it.
	_ = r.c.rc.Control(func(fd uintptr) { unix.Shutdown(int(fd), unix.SHUT_RD) })
	// Wake a parked loop goroutine so it can exit.
	select {
	case r.loopWake <- struct{}{}:
	default:
	}
}

// wait returns when no goroutine receives on the Conn or can start to.
// Only after shutdown.
func (r *readState) wait() { r.users.Wait() }

// Serve receives and serves the peer's requests until the Conn dies, then
// returns Err. It is for a program whose work from now on is only to serve
// (a renderer once it has reported ready): the next request is read at
// once, on the calling goroutine unless a loop goroutine already receives
// (a Conn keeps one loop goroutine, see loop).
//
// Without Serve, a Conn starts receiving on its own standbyDelay after the
// last call returned. The delay is a Go timer, and in a process with
// nothing else to do the runtime sleeps in epoll, which counts in whole
// milliseconds: a request that arrives then waits up to a millisecond in
// the socket. Calls made while Serve runs work as usual; Serve yields the
// socket to them and takes it back.
func (c *Conn) Serve() error {
	r := &c.rd
	r.mu.Lock()
	if !r.shut {
		r.users.Add(1) // under mu with shut false, as in take
		r.loops++
		r.mu.Unlock()
		r.loop()
	} else {
		r.mu.Unlock()
	}
	<-c.done
	return c.Err()
}

// take tries to take the token; byLoop says who takes it. It reports
// false if the token is held or the Conn is dead. Called with mu held.
func (r *readState) take(byLoop bool) bool {
	if r.held || r.shut {
		return false
	}
	r.held, r.heldByLoop, r.yieldAsked = true, byLoop, false
	r.users.Add(1) // under mu with shut false: never concurrent with wait
	return true
}

// release gives the token up and arms the standby timer.
func (r *readState) release() {
	r.mu.Lock()
	r.held, r.heldByLoop, r.yieldAsked = false, false, false
	if r.free != nil {
		close(r.free)
		r.free = nil
	}
	shut, delay := r.shut, r.standbyAfter
	r.mu.Unlock()
	if !shut {
		r.standby.Reset(delay)
	}
	r.users.Done()
}

// startLoop runs when the token has stayed free for standbyDelay: it wakes
// the idle loop goroutine, or starts one.
func (r *readState) startLoop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.held || r.shut {
		return
	}
	if r.idleLoop {
		select {
		case r.loopWake <- struct{}{}:
		default:
		}
		return
	}
	r.users.Add(1)
	r.loops++
	go r.loop()
}

// loop takes the token whenever it is free, receives until a caller wants
// the token, and runs the requests it receives.
//
// A Conn needs one loop goroutine: the one holding the token, or while a
// caller holds it, one parked on loopWake for startLoop to wake. Others
// start while that one runs a handler inline or has yielded but not yet
// parked (startLoop finds no idle loop then), so each one exits once it
// finds another loop holding the token or parked. A loop that takes the
// token while another is parked wakes it, to exit: else an idle Conn kept a
// parked loop goroutine beside the holder until the Conn died.
func (r *readState) loop() {
	defer r.users.Done()
	c := r.c
	yielded := false
	r.mu.Lock()
	for {
		if r.shut || r.held && r.heldByLoop {
			break
		}
		// After yielding, wait to be woken rather than race the caller
		// the token was yielded to.
		if !yielded && r.take(true) {
			if r.idleLoop {
				select {
				case r.loopWake <- struct{}{}:
				default: // a wake is already pending
				}
			}
			r.mu.Unlock()
			r.standby.Stop()
			j := c.receiveAsLoop()
			r.release()
			if j != nil {
				c.serve(j)
			}
			yielded = j == nil
			r.mu.Lock()
			continue
		}
		yielded = false
		if r.idleLoop {
			break
		}
		r.idleLoop = true
		r.mu.Unlock()
		<-r.loopWake
		r.mu.Lock()
		r.idleLoop = false
	}
	r.loops--
	r.mu.Unlock()
}

// receiveAsLoop receives while the loop holds the token. It returns a
// request for the loop to serve, or nil when a caller asked for the token
// or the Conn died.
func (c *Conn) receiveAsLoop() *job {
	r := &c.rd
	for {
		seq := c.wakes.Load() // before the checks: see recvWait
		r.mu.Lock()
		stop := r.yieldAsked || r.shut
		r.mu.Unlock()
		if stop {
			return nil
		}
		c.waitLong = r.loopLong
		start := time.Now()
		j, err := c.receiveOne(true, seq)
		r.loopLong = time.Since(start) > longWait
		if err != nil {
			return nil
		}
		if j != nil {
			return j
		}
	}
}

// await waits for p's result: as the reader if the token is free,
// otherwise until the reply is delivered or the token is released. It
// reports false if ctx ended first.
func (c *Conn) await(ctx context.Context, p *pendingCall) (callResult, bool) {
	r := &c.rd
	for {
		select {
		case res := <-p.ch:
			return res, true
		default:
		}
		r.mu.Lock()
		if r.take(false) {
			r.mu.Unlock()
			r.standby.Stop()
			res, ok := c.receiveFor(ctx, p)
			r.release()
			return res, ok
		}
		askYield := r.heldByLoop && !r.yieldAsked && !r.shut
		if askYield {
			r.yieldAsked = true
		}
		if r.free == nil {
			r.free = make(chan struct{})
		}
		free := r.free
		r.mu.Unlock()
		if askYield {
			c.wake()
		}
		select {
		case res := <-p.ch:
			return res, true
		case <-free:
		case <-ctx.Done():
			return callResult{}, false
		}
	}
}

// receiveFor receives, holding the token, until p has its result or ctx
// ends. When the Conn dies, Conn.fail delivers the error to p.
func (c *Conn) receiveFor(ctx context.Context, p *pendingCall) (callResult, bool) {
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, c.wake)
		defer stop()
	}
	start := time.Now()
	for {
		seq := c.wakes.Load() // before the checks: see recvWait
		select {
		case res := <-p.ch:
			return res, true
		default:
		}
		if ctx.Err() != nil {
			return callResult{}, false
		}
		if c.dead() {
			return <-p.ch, true
		}
		// A call of a method not yet known to be slow blocks in recvmsg
		// until it has waited longWait (woken every recvTick), then goes
		// to the netpoller like a known slow one.
		c.waitLong = p.long || time.Since(start) > longWait
		c.receiveOne(false, seq)
	}
}

// receiveOne waits until a datagram, EOF or a wakeup arrives, and handles
// what arrived. It returns a request to serve (inline only), or an error
// when the Conn is dead. The token is held; seq is the wake count the
// caller read before it checked its reasons to stop waiting.
//
// Its first branch is the seam between the two receive modes
// (receiveModeEnv): the direct mode takes a wait expected to be short
// blocked in recvmsg; the netpoller mode takes every wait the way this
// mode takes a long one.
func (c *Conn) receiveOne(inline bool, seq uint64) (*job, error) {
	n, oobn, flags, err := 0, 0, 0, error(unix.EAGAIN)
	if !c.waitLong && !c.netpollOnly {
		// A short wait: block in recvmsg, which also returns at once
		// with a datagram that is already queued.
		n, oobn, flags, err = c.recvWait(seq)
		if err == unix.EAGAIN || err == unix.EINTR {
			return nil, nil // woken, timed out or interrupted: the caller re-checks
		}
	} else if c.rMore {
		// Try recvmsg before waiting only when the last receive found a
		// datagram (more may be queued).
		n, oobn, flags, err = c.recv()
	}
	c.rMore = err == nil
	if err == unix.EAGAIN {
		if err := c.poll(); err != nil {
			return nil, c.die(err)
		}
		if c.pollOK {
			c.drainWake()
		}
		n, oobn, flags, err = c.recv()
		if err == unix.EAGAIN {
			return nil, nil // woken, or a spurious wakeup: the caller re-checks
		}
		c.rMore = err == nil
	}
	if err != nil {
		return nil, c.die(err)
	}
	if n == 0 && oobn == 0 && flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) == 0 {
		// EOF and an empty datagram look the same; tell them apart by
		// receiving again: EOF repeats, a live peer leaves nothing.
		return nil, c.die(c.zeroRead())
	}
	j, perr := c.handleDatagram(c.rbuf[:n], c.roob[:oobn], flags, inline)
	if perr != nil {
		return nil, c.die(perr)
	}
	return j, nil
}
