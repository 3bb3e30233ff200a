package ipc

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/ipc/wirepb"
)

// Tests of the bounds on what a peer can make a Conn hold and spend, met
// the way a hostile peer meets them: raw datagrams on its end of the
// socket.

// givesFD serves mGiveFD with a fresh read-only descriptor and a payload
// as large as the spec allows, so that each unread reply holds a
// descriptor and fills the socket buffer fast.
func givesFD(mux *Mux) *Mux {
	Handle(mux, mGiveFD, func(ctx context.Context, req *testMsg, _ []*os.File) (*testMsg, []*os.File, error) {
		f, err := os.Open("/proc/self/exe")
		if err != nil {
			return nil, nil, err
		}
		return &testMsg{Value: make([]byte, 12)}, []*os.File{f}, nil
	})
	return mux
}

// smallSendBuffer shrinks the victim's socket send buffer so that few
// unread replies fill it.
func smallSendBuffer(fd int) {
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4096)
}

// flood sends datagrams made by next from the raw end, never reading,
// until the victim dies or n are sent; it reports how many it sent.
func (r *rawEnd) flood(c *Conn, n int, next func(i int) []byte) int {
	r.t.Helper()
	for i := 0; i < n; i++ {
		for {
			err := unix.Sendmsg(r.fd, next(i), nil, nil, unix.MSG_DONTWAIT)
			if err == nil {
				break
			}
			if err == unix.EPIPE || err == unix.ECONNRESET || c.dead() {
				return i
			}
			require.ErrorIs(r.t, err, unix.EAGAIN)
			r.waitWritable()
		}
	}
	return n
}

// waitWritable waits until the kernel reports room in the victim's queue
// (or its end closed), or 10 ms at most so the caller re-checks the victim.
func (r *rawEnd) waitWritable() {
	r.t.Helper()
	pfd := []unix.PollFd{{Fd: int32(r.fd), Events: unix.POLLOUT}}
	if _, err := unix.Poll(pfd, 10); err != nil && err != unix.EINTR {
		r.t.Fatalf("poll: %v", err)
	}
}

// A peer that sends requests and never reads the replies holds at most
// MaxInFlight of them (goroutines and descriptors) before the next request
// kills the Conn as ReasonTooManyInFlight. Before requests stayed counted
// until their reply was sent, every unread reply was a goroutine and an
// open descriptor of its own, without bound.
func TestUnreadRepliesAreBounded(t *testing.T) {
	warmUp(t)
	base := openFDs(t)
	goroutines := runtime.NumGoroutine()
	const maxInFlight = 8
	lim := Limits{MaxInFlight: maxInFlight, SendTimeout: time.Minute}
	c, r := newVictim(t, lim, givesFD(NewMux()), smallSendBuffer)
	defer r.f.Close()
	defer c.Close()

	var peak int
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			peak = max(peak, runtime.NumGoroutine())
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	sent := r.flood(c, 20000, func(i int) []byte { return request(uint64(i+1), "givefd", nil, 0) })
	err := waitDead(t, c)
	close(stop)
	<-sampled
	requireReason(t, err, ReasonTooManyInFlight)
	require.Less(t, sent, 20000)
	// A handler goroutine per request in flight, plus the Conn's own few.
	require.LessOrEqual(t, peak-goroutines, maxInFlight+10, "goroutines held for unread replies")
	r.f.Close()
	waitFDs(t, base)
}

// A reply the peer leaves unread for SendTimeout kills the Conn with
// ReasonNotReading, naming the reply, rather than holding its goroutine
// and descriptor for as long as the peer likes.
func TestUnreadReplyTimesOut(t *testing.T) {
	warmUp(t)
	base := openFDs(t)
	lim := Limits{MaxInFlight: 64, SendTimeout: 200 * time.Millisecond}
	c, r := newVictim(t, lim, givesFD(NewMux()), smallSendBuffer)
	defer r.f.Close()
	defer c.Close()
	// Fewer requests than MaxInFlight, more replies than the buffer holds.
	r.flood(c, 60, func(i int) []byte { return request(uint64(i+1), "givefd", nil, 0) })
	err := waitDead(t, c)
	requireReason(t, err, ReasonNotReading)
	require.Regexp(t, `reply to givefd \(request \d+\) not read within 200ms`, err.Error())
	r.f.Close()
	waitFDs(t, base)
}

// A call whose request cannot be sent because the peer does not read says
// so, and a request unread for SendTimeout kills the Conn.
func TestUnreadRequest(t *testing.T) {
	lim := Limits{SendTimeout: 300 * time.Millisecond}
	c, r := newVictim(t, lim, nil, smallSendBuffer)
	defer r.f.Close()
	defer c.Close()
	big := NewMethod[*testMsg, *testMsg](MethodSpec{Name: "big"})
	unread, err := c.Unread()
	require.NoError(t, err)
	require.Zero(t, unread)
	// Fill the peer's queue with requests (Start: no reply awaited, so no
	// cancels), until one finds no room before its context ends.
	for range 100 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		_, err = Start(ctx, c, big, &testMsg{Value: make([]byte, 4000)})
		cancel()
		if err != nil {
			break
		}
	}
	require.ErrorIs(t, err, ErrPeerNotReading)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NoError(t, c.Err())
	unread, err = c.Unread()
	require.NoError(t, err)
	require.Positive(t, unread)
	_, _, err = Call(context.Background(), c, big, &testMsg{Value: make([]byte, 4000)})
	requireReason(t, err, ReasonNotReading)
	require.Regexp(t, `request \d+ \(big\) not read within 300ms`, err.Error())
}

func cancelMsg(id uint64) []byte {
	return envBytes(&wirepb.Envelope{Kind: wirepb.Kind_KIND_CANCEL, Id: id})
}

// A cancel is legitimate when it matches a request in flight or crossed
// the reply to one; any other is work the peer would get for free, and
// kills the Conn before it can cost more than a few datagrams.
func TestCancels(t *testing.T) {
	echo := func(id uint64) []byte { return request(id, "echo", payloadOf(&testMsg{Value: []byte("hi")}), 0) }
	tests := []struct {
		name string
		// run drives the raw end; it returns how many datagrams it sent.
		run  func(r *rawEnd, c *Conn) int
		want Reason // "" means the Conn must stay alive
	}{
		{"crossing cancel after each reply", func(r *rawEnd, c *Conn) int {
			for id := uint64(1); id <= 100; id++ {
				r.send(echo(id))
				require.Equal(t, id, r.recvEnvelope().Id)
				r.send(cancelMsg(id))
			}
			return 200
		}, ""},
		{"crossing cancels after a burst of replies", func(r *rawEnd, c *Conn) int {
			for id := uint64(1); id <= 64; id++ {
				r.send(echo(id))
			}
			for range 64 {
				r.recvEnvelope()
			}
			for id := uint64(1); id <= 64; id++ {
				r.send(cancelMsg(id))
			}
			return 128
		}, ""},
		{"cancel in flight", func(r *rawEnd, c *Conn) int {
			r.send(request(1, "block", nil, 0))
			r.send(cancelMsg(1))
			env := r.recvEnvelope()
			require.Equal(t, int32(CodeCanceled), env.StatusCode)
			return 2
		}, ""},
		{"cancel never requested", func(r *rawEnd, c *Conn) int {
			r.send(cancelMsg(99))
			return 1
		}, ReasonUnexpectedCancel},
		{"two cancels in flight", func(r *rawEnd, c *Conn) int {
			r.send(request(1, "block", nil, 0))
			r.send(cancelMsg(1))
			r.send(cancelMsg(1))
			return 3
		}, ReasonUnexpectedCancel},
		{"cancel twice after the reply", func(r *rawEnd, c *Conn) int {
			r.send(echo(1))
			r.recvEnvelope()
			r.send(cancelMsg(1))
			r.send(cancelMsg(1))
			return 4
		}, ReasonUnexpectedCancel},
		{"flood of random cancels", func(r *rawEnd, c *Conn) int {
			return r.flood(c, 500000, func(int) []byte { return cancelMsg(rand.Uint64()) })
		}, ReasonUnexpectedCancel},
		{"flood of old ids after one reply", func(r *rawEnd, c *Conn) int {
			r.send(echo(1000))
			r.recvEnvelope()
			return 2 + r.flood(c, 500000, func(i int) []byte { return cancelMsg(uint64(1 + i%999)) })
		}, ReasonUnexpectedCancel},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, r := newVictim(t, defaultLimits(), testMux(), nil)
			defer r.f.Close()
			defer c.Close()
			sent := tt.run(r, c)
			if tt.want == "" {
				// Still alive and serving.
				r.send(echo(1 << 40))
				require.Equal(t, uint64(1<<40), r.recvEnvelope().Id)
				require.NoError(t, c.Err())
				return
			}
			requireReason(t, waitDead(t, c), tt.want)
			// Dead within a few datagrams: the flood stopped at once
			// (what it sent is at most what the socket buffers held).
			require.Less(t, sent, 500000)
		})
	}
}

// More requests than MaxRequestRate and RequestBurst allow kill the Conn
// with ReasonRequestRate; within them, requests are served.
func TestRequestRate(t *testing.T) {
	lim := defaultLimits()
	lim.MaxRequestRate, lim.RequestBurst = 1, 10
	c, r := newVictim(t, lim, testMux(), nil)
	defer r.f.Close()
	defer c.Close()
	for id := uint64(1); id <= 5; id++ {
		r.send(request(id, "echo", nil, 0))
		require.Equal(t, id, r.recvEnvelope().Id)
	}
	require.NoError(t, c.Err())
	sent := r.flood(c, 100000, func(i int) []byte { return request(uint64(i+6), "echo", nil, 0) })
	err := waitDead(t, c)
	requireReason(t, err, ReasonRequestRate)
	require.Contains(t, err.Error(), "more than 1 requests/s (burst 10)")
	require.Less(t, sent, 100000)
}

// A legitimate peer never trips a bound: calls both ways at full
// MaxInFlight concurrency, many of them cancelled as their reply crosses
// the cancel, with a request rate limit that the calls stay under. A
// request must stop counting against MaxInFlight before its reply can
// reach the peer, and a crossing cancel must find its credit.
func TestLegitimateLoadTripsNothing(t *testing.T) {
	const maxInFlight = 4
	lim := Limits{MaxInFlight: maxInFlight, MaxRequestRate: 1 << 20, RequestBurst: 1 << 20}
	a, b := newPair(t, testMux(), testMux(), lim)
	calls := 3000
	if testing.Short() {
		calls = 500
	}
	var wg sync.WaitGroup
	errc := make(chan error, 4*maxInFlight)
	for _, c := range []*Conn{a, b} {
		for g := range maxInFlight {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(g), 1))
				for range calls {
					ctx, cancel := context.Background(), context.CancelFunc(func() {})
					if rng.IntN(4) == 0 {
						// Often ends while the reply is on its way.
						ctx, cancel = context.WithTimeout(ctx, time.Duration(rng.IntN(40))*time.Microsecond)
					}
					_, _, err := Call(ctx, c, mEcho, &testMsg{Value: []byte("x")})
					cancel()
					if err != nil && !errors.Is(err, context.DeadlineExceeded) {
						errc <- err
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	require.NoError(t, a.Err())
	require.NoError(t, b.Err())
}

// A peer that leaves descriptors unread holds at most MaxUnreadFDs of
// ours in its queue: the kernel charges them to our user, and refuses to
// pass more for every process of that user once they pass its
// RLIMIT_NOFILE. The next reply with a descriptor waits, and kills the
// Conn after SendTimeout.
func TestUnreadDescriptorsAreBounded(t *testing.T) {
	warmUp(t)
	base := openFDs(t)
	lim := Limits{MaxFDs: 4, MaxInFlight: 64, SendTimeout: 300 * time.Millisecond}
	c, r := newVictim(t, lim, givesFD(NewMux()), nil)
	defer r.f.Close()
	defer c.Close()
	r.flood(c, 20, func(i int) []byte { return request(uint64(i+1), "givefd", nil, 0) })
	err := waitDead(t, c)
	requireReason(t, err, ReasonNotReading)
	require.Contains(t, err.Error(), "not read within 300ms: 4 descriptors already unread")
	queued := 0
	buf, oob := make([]byte, 1<<16), make([]byte, 1024)
	for {
		n, oobn, _, _, err := unix.Recvmsg(r.fd, buf, oob, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
		if err != nil || n == 0 {
			break
		}
		fds, _ := parseControl(oob[:oobn], nil)
		queued += len(fds)
		closeFDs(fds)
	}
	require.Equal(t, 4, queued, "descriptors queued for the peer")
	r.f.Close()
	waitFDs(t, base)
}
