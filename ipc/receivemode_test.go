package ipc

import (
	"bytes"
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// The receive mode comes from SANDKIT_IPC_RECEIVE, read by NewConn; a value
// it does not know fails NewConn rather than fall back to either mode.
func TestReceiveModeFromEnvironment(t *testing.T) {
	tests := []struct {
		value       string
		netpollOnly bool
		wantErr     bool
	}{
		{"", false, false},
		{"direct", false, false},
		{"netpoller", true, false},
		{"NetPoller", true, false},
		{"poll", false, true},
		{"direct,netpoller", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			t.Setenv(receiveModeEnv, tt.value)
			a, b, err := SocketPair()
			require.NoError(t, err)
			defer b.Close()
			c, err := NewConn(a)
			if tt.wantErr {
				require.ErrorContains(t, err, receiveModeEnv+"=")
				require.ErrorContains(t, err, "want direct or netpoller")
				return
			}
			require.NoError(t, err)
			defer c.Close()
			require.Equal(t, tt.netpollOnly, c.netpollOnly)
		})
	}
}

// In the netpoller mode the token's holder never blocks in recvmsg: with
// the socket's receive timeout raised to an hour and a peer that never
// sends, a waiting caller and the idle loop are each found waiting in the
// netpoller with no thread published for a signal, and a cancel or Close
// (the eventfd alone) ends the wait. In the direct mode the same waits sit
// in recvmsg for the hour, and these tests time out.
func TestNetpollerModeNeverBlocksInRecvmsg(t *testing.T) {
	tests := []struct {
		name   string
		byLoop bool
		run    func(a *Conn, cancel context.CancelFunc) error
	}{
		{"cancelled caller", false, func(a *Conn, cancel context.CancelFunc) error {
			cancel()
			return nil
		}},
		{"Close", true, func(a *Conn, _ context.CancelFunc) error {
			return a.Close()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(receiveModeEnv, "netpoller")
			mine, theirs, err := SocketPair()
			require.NoError(t, err)
			defer theirs.Close() // never read, never written
			a, err := NewConn(mine)
			require.NoError(t, err)
			defer a.Close()
			hour := unix.NsecToTimeval(time.Hour.Nanoseconds())
			require.NoError(t, a.rc.Control(func(fd uintptr) {
				require.NoError(t, unix.SetsockoptTimeval(int(fd), unix.SOL_SOCKET, unix.SO_RCVTIMEO, &hour))
			}))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			called := make(chan error, 1)
			if !tt.byLoop {
				go func() {
					_, _, err := Call(ctx, a, mEcho, &testMsg{})
					called <- err
				}()
			}
			waitInNetpoller(t, a, tt.byLoop)
			require.Zero(t, a.blockTID.Load(), "a thread published as blocked in recvmsg")
			require.NoError(t, waitFor(t, runAsync(func() error { return tt.run(a, cancel) }), "the wait to end"))
			if !tt.byLoop {
				require.ErrorIs(t, waitFor(t, called, "the caller"), context.Canceled)
			}
		})
	}
}

func runAsync(f func() error) <-chan error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	return done
}

// waitInNetpoller waits until the holder of c's read token (its loop, or a
// caller) waits in the netpoller (waitSlow). Only c may be receiving.
func waitInNetpoller(t *testing.T, c *Conn, byLoop bool) {
	t.Helper()
	buf := make([]byte, 1<<20)
	require.Eventually(t, func() bool {
		c.rd.mu.Lock()
		holder := c.rd.held && c.rd.heldByLoop == byLoop
		c.rd.mu.Unlock()
		n := runtime.Stack(buf, true)
		return holder && bytes.Contains(buf[:n], []byte("ipc.(*Conn).waitSlow("))
	}, 10*time.Second, time.Millisecond, "token holder (loop=%v) waiting in the netpoller", byLoop)
}

// skipInNetpollerMode skips a test of the direct mode's blocked recvmsg
// when the suite runs in the netpoller mode.
func skipInNetpollerMode(t *testing.T) {
	t.Helper()
	if mode, _ := receiveMode(); mode {
		t.Skipf("%s=netpoller: no wait blocks in recvmsg", receiveModeEnv)
	}
}
