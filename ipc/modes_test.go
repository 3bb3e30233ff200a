package ipc

import (
	"context"
	"flag"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// netpollFlag runs the benchmarks (and the tests that do not run in both
// modes anyway) with the netpoller receiver, in both processes of the
// cross-process ones, for A/B comparisons with the read token:
//
//	go test -run XXX -bench . ./ipc/ -args -ipc.netpoll
var netpollFlag = flag.Bool("ipc.netpoll", false, "receive with a plain netpoller read loop instead of the read token")

// flagMode is the receive mode -ipc.netpoll selects.
func flagMode() recvMode {
	if *netpollFlag {
		return recvModes()[1]
	}
	return recvModes()[0]
}

// recvMode is one way a Conn receives (see receiver). The tests of Conn's
// behaviour run in each, so that both keep the same contract.
type recvMode struct {
	name string
	opts []Option
}

func recvModes() []recvMode {
	return []recvMode{
		{"token", nil},
		{"netpoll", []Option{withNetpoll()}},
	}
}

// forEachMode runs test once per receive mode, each as a subtest.
func forEachMode(t *testing.T, test func(t *testing.T, m recvMode)) {
	for _, m := range recvModes() {
		t.Run(m.name, func(t *testing.T) { test(t, m) })
	}
}

// with returns opts after the mode's own options.
func (m recvMode) with(opts ...Option) []Option {
	return append(append([]Option(nil), m.opts...), opts...)
}

func (m recvMode) newPair(t testing.TB, muxA, muxB *Mux, lim Limits) (*Conn, *Conn) {
	t.Helper()
	return newPair(t, muxA, muxB, lim, m.opts...)
}

func (m recvMode) newVictim(t testing.TB, lim Limits, mux *Mux, prep func(fd int)) (*Conn, *rawEnd) {
	t.Helper()
	return newVictim(t, lim, mux, prep, m.opts...)
}

// tokenOf returns c's read token, for the tests of the token itself.
func tokenOf(t testing.TB, c *Conn) *tokenReader {
	t.Helper()
	r, ok := c.rd.(*tokenReader)
	require.True(t, ok, "receiver is %T, want the read token", c.rd)
	return r
}

// Each mode is what it says: the read token receives on a blocking socket
// kept out of the netpoller, with the receive timeout that bounds a missed
// wakeup; the netpoller mode on a non-blocking one.
func TestReceiveModes(t *testing.T) {
	tests := []struct {
		mode         recvMode
		wantReceiver string
		wantNonblock bool
	}{
		{recvModes()[0], "*ipc.tokenReader", false},
		{recvModes()[1], "*ipc.pollReader", true},
	}
	for _, tt := range tests {
		t.Run(tt.mode.name, func(t *testing.T) {
			a, _ := tt.mode.newPair(t, nil, testMux(), Limits{})
			require.Equal(t, tt.wantReceiver, fmt.Sprintf("%T", a.rd))
			var fl int
			var tv *unix.Timeval
			var ferr, terr error
			require.NoError(t, a.rc.Control(func(fd uintptr) {
				fl, ferr = unix.FcntlInt(fd, unix.F_GETFL, 0)
				tv, terr = unix.GetsockoptTimeval(int(fd), unix.SOL_SOCKET, unix.SO_RCVTIMEO)
			}))
			require.NoError(t, ferr)
			require.NoError(t, terr)
			require.Equal(t, tt.wantNonblock, fl&unix.O_NONBLOCK != 0)
			if !tt.wantNonblock {
				// The kernel rounds the timeout up to whole jiffies.
				require.GreaterOrEqual(t, time.Duration(tv.Nano()), recvTick)
			}
			resp, _, err := Call(context.Background(), a, mEcho, &testMsg{Value: []byte("x")})
			require.NoError(t, err)
			require.Equal(t, "x", string(resp.Value))
		})
	}
}
