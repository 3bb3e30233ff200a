package ipc

import (
	"fmt"
	"log/slog"
	"time"
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

// defaultLimits returns the defaults: 64 KiB datagrams, 8 fds per message,
// 64 calls in flight each way, 5 s for the peer to make room for a
// message, no request rate limit.
func defaultLimits() Limits {
	return Limits{MaxDatagram: 64 << 10, MaxFDs: 8, MaxInFlight: 64, SendTimeout: 5 * time.Second}
}

const (
	maxDatagramLimit = 1 << 20
	maxInFlightLimit = 1 << 16
)

func (l Limits) withDefaults() (Limits, error) {
	d := defaultLimits()
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
