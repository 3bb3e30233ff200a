package ipc

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sandkit/sandkit/ipc/wirepb"
)

type testMsg = wrapperspb.BytesValue

var (
	mEcho     = NewMethod[*testMsg, *testMsg](MethodSpec{Name: "echo", MaxRequestBytes: 1024, MaxResponseBytes: 1024})
	mMemfd    = NewMethod[*testMsg, *testMsg](MethodSpec{Name: "memfd", RequestFDs: []FDKind{SealedMemfd}})
	mReadOnly = NewMethod[*testMsg, *testMsg](MethodSpec{Name: "readonly", RequestFDs: []FDKind{ReadOnlyFile}})
	mSeccomp  = NewMethod[*testMsg, *testMsg](MethodSpec{Name: "seccomp", RequestFDs: []FDKind{SeccompListener}})
	mBlock    = NewMethod[*testMsg, *testMsg](MethodSpec{Name: "block"})
	mGiveFD   = NewMethod[*testMsg, *testMsg](MethodSpec{Name: "givefd", ResponseFDs: []FDKind{ReadOnlyFile}, MaxResponseBytes: 16})
)

// testMux serves the test methods. Handlers close the fds they receive.
func testMux() *Mux {
	mux := NewMux()
	echo := func(ctx context.Context, req *testMsg, fds []*os.File) (*testMsg, []*os.File, error) {
		closeFiles(fds)
		return req, nil, nil
	}
	Handle(mux, mEcho, echo)
	Handle(mux, mMemfd, echo)
	Handle(mux, mReadOnly, echo)
	Handle(mux, mSeccomp, echo)
	Handle(mux, mBlock, func(ctx context.Context, req *testMsg, fds []*os.File) (*testMsg, []*os.File, error) {
		<-ctx.Done()
		return nil, nil, ctx.Err()
	})
	return mux
}

// rawEnd is the test's hand-driven end of a socket pair.
type rawEnd struct {
	t  testing.TB
	f  *os.File
	fd int
}

func (r *rawEnd) send(data []byte, fds ...int) {
	r.t.Helper()
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := unix.Sendmsg(r.fd, data, oob, nil, 0); err != nil {
		r.t.Fatalf("sendmsg: %v", err)
	}
}

// recvEnvelope reads one envelope (closing any fds that came with it).
func (r *rawEnd) recvEnvelope() *wirepb.Envelope {
	r.t.Helper()
	buf := make([]byte, 1<<16)
	oob := make([]byte, 1024)
	n, oobn, _, _, err := unix.Recvmsg(r.fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
	require.NoError(r.t, err)
	fds, _ := parseControl(oob[:oobn], nil)
	closeFDs(fds)
	env := &wirepb.Envelope{}
	require.NoError(r.t, proto.Unmarshal(buf[:n], env))
	return env
}

func newVictim(t testing.TB, lim Limits, mux *Mux, prep func(fd int)) (*Conn, *rawEnd) {
	t.Helper()
	a, b, err := SocketPair()
	require.NoError(t, err)
	if prep != nil {
		prep(int(a.Fd()))
	}
	opts := []Option{WithLimits(lim)}
	if mux != nil {
		opts = append(opts, WithMux(mux))
	}
	c, err := NewConn(a, opts...)
	require.NoError(t, err)
	return c, &rawEnd{t: t, f: b, fd: int(b.Fd())}
}

func envBytes(e *wirepb.Envelope) []byte {
	b, err := proto.Marshal(e)
	if err != nil {
		panic(err)
	}
	return b
}

func request(id uint64, method string, payload []byte, nfds int) []byte {
	return envBytes(&wirepb.Envelope{Kind: wirepb.Kind_KIND_REQUEST, Id: id, Method: method, Payload: payload, FdCount: uint32(nfds)})
}

func payloadOf(m proto.Message) []byte {
	b, _ := proto.Marshal(m)
	return b
}

func waitDead(t testing.TB, c *Conn) error {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("conn did not die")
	}
	return c.Err()
}

func requireReason(t testing.TB, err error, want Reason) {
	t.Helper()
	var perr *ProtocolError
	require.True(t, errors.As(err, &perr), "want a *ProtocolError, got %v", err)
	require.Equal(t, want, perr.Reason, "error: %v", err)
	require.ErrorIs(t, err, ErrProtocol)
}

var warmOnce sync.Once

// warmUp makes the runtime open its long-lived descriptors (netpoller)
// before a test takes its baseline count.
func warmUp(t testing.TB) {
	warmOnce.Do(func() {
		a, b, err := Pair()
		require.NoError(t, err)
		a.Close()
		b.Close()
	})
}

func TestViolations(t *testing.T) {
	small := Limits{MaxDatagram: 4096, MaxFDs: 8, MaxInFlight: 2}
	type tc struct {
		name string
		lim  Limits
		mux  bool
		prep func(fd int)
		// run drives the raw end; fds are fresh fixtures it may attach.
		run  func(t *testing.T, r *rawEnd, c *Conn, fds func(kind string, n int) []int)
		want Reason
	}
	cases := []tc{
		{name: "truncated", run: func(t *testing.T, r *rawEnd, c *Conn, fds func(string, int) []int) {
			r.send(make([]byte, 4097), fds("memfd-sealed", 1)...)
		}, want: ReasonTruncated},
		{name: "truncated far over", run: func(t *testing.T, r *rawEnd, c *Conn, fds func(string, int) []int) {
			r.send(make([]byte, 100000), fds("memfd-sealed", 2)...)
		}, want: ReasonTruncated},
		{name: "ctrunc", run: func(t *testing.T, r *rawEnd, c *Conn, fds func(string, int) []int) {
			r.send(request(1, "memfd", nil, 10), fds("memfd-sealed", 10)...)
		}, want: ReasonCtrlTruncated},
		{name: "ctrunc many", run: func(t *testing.T, r *rawEnd, c *Conn, fds func(string, int) []int) {
			r.send(request(1, "memfd", nil, 200), fds("devnull", 200)...)
		}, want: ReasonCtrlTruncated},
		{name: "more fds than MaxFDs", run: func(t *testing.T, r *rawEnd, c *Conn, fds func(string, int) []int) {
			r.send(request(1, "memfd", nil, 9), fds("memfd-sealed", 9)...)
		}, want: ReasonFDCount},
		{name: "fd count above envelope", run: func(t *testing.T, r *rawEnd, c *Conn, fds func(string, int) []int) {
			r.send(request(1, "memfd", nil, 1), fds("memfd-sealed", 2)...)
		}, want: ReasonFDCount},
		{name: "fd count below envelope", run: func(t *testing.T, r *rawEnd, c *Conn, fds func(string, int) []int) {
			r.send(request(1, "memfd", nil, 3), fds("memfd-sealed", 1)...)
		}, want: ReasonFDCount},
		{name: "fd count vs spec", run: func(t *testing.T, r *rawEnd, c *Conn, fds func(string, int) []int) {
			r.send(request(1, "echo", nil, 1), fds("memfd-sealed", 1)...)
		}, want: ReasonFDCount},
		{name: "missing fd vs spec", run: func(t *testing.T, r *rawEnd, c *Conn, fds func(string, int) []int) {
			r.send(request(1, "memfd", nil, 0))
		}, want: ReasonFDCount},
		{name: "cancel with fds", run: func(t *testing.T, r *rawEnd, c *Conn, fds func(string, int) []int) {
			r.send(envBytes(&wirepb.Envelope{Kind: wirepb.Kind_KIND_CANCEL, Id: 1, FdCount: 1}), fds("memfd-sealed", 1)...)
		}, want: ReasonFDCount},
		{name: "unknown method", run: func(t *testing.T, r *rawEnd, c *Conn, fds func(string, int) []int) {
			r.send(request(1, "nosuch", nil, 1), fds("memfd-sealed", 1)...)
		}, want: ReasonUnknownMethod},
		{name: "no mux", mux: false, run: func(t *testing.T, r *rawEnd, c *Conn, fds func(string, int) []int) {
			r.send(request(1, "memfd", nil, 1), fds("memfd-sealed", 1)...)
		}, want: ReasonUnknownMethod},
		{name: "payload too large", run: func(t *testing.T, r *rawEnd, c *Conn, fds func(string, int) []int) {
			r.send(request(1, "echo", payloadOf(&testMsg{Value: make([]byte, 1100)}), 0))
		}, want: ReasonPayloadTooLarge},
		{name: "garbage envelope", run: func(t *testing.T, r *rawEnd, c *Conn, fds func(string, int) []int) {
			r.send([]byte{0xff, 0xff, 0xff}, fds("memfd-sealed", 1)...)
		}, want: ReasonMalformed},
		{name: "garbage payload", run: func(t *testing.T, r *rawEnd, c *Conn, fds func(string, int) []int) {
			r.send(request(1, "memfd", []byte{0x0a, 0x7f}, 1), fds("memfd-sealed", 1)...)
		}, want: ReasonMalformed},
		{name: "zero id", run: func(t *testing.T, r *rawEnd, c *Conn, fds func(string, int) []int) {
			r.send(request(0, "memfd", nil, 1), fds("memfd-sealed", 1)...)
		}, want: ReasonMalformed},
		{name: "no kind", run: func(t *testing.T, r *rawEnd, c *Conn, fds func(string, int) []int) {
			r.send(envBytes(&wirepb.Envelope{Id: 1, Method: "echo"}))
		}, want: ReasonMalformed},
		{name: "request with status", run: func(t *testing.T, r *rawEnd, c *Conn, fds func(string, int) []int) {
			r.send(envBytes(&wirepb.Envelope{Kind: wirepb.Kind_KIND_REQUEST, Id: 1, Method: "echo", StatusCode: 2}))
		}, want: ReasonMalformed},
		{name: "reply with method", run: func(t *testing.T, r *rawEnd, c *Conn, fds func(string, int) []int) {
			r.send(envBytes(&wirepb.Envelope{Kind: wirepb.Kind_KIND_REPLY, Id: 1, Method: "echo"}))
		}, want: ReasonMalformed},
		{name: "negative timeout", run: func(t *testing.T, r *rawEnd, c *Conn, fds func(string, int) []int) {
			r.send(envBytes(&wirepb.Envelope{Kind: wirepb.Kind_KIND_REQUEST, Id: 1, Method: "echo", TimeoutNanos: -1}))
		}, want: ReasonMalformed},
		{name: "unknown envelope field", run: func(t *testing.T, r *rawEnd, c *Conn, fds func(string, int) []int) {
			r.send(append(request(1, "echo", nil, 0), 0xf8, 0x01, 0x01)) // field 31, varint 1
		}, want: ReasonMalformed},
		{name: "empty datagram", run: func(t *testing.T, r *rawEnd, c *Conn, fds func(string, int) []int) {
			r.send(nil)
		}, want: ReasonMalformed},
		{name: "one zero byte with fds", run: func(t *testing.T, r *rawEnd, c *Conn, fds func(string, int) []int) {
			r.send(nil, fds("memfd-sealed", 1)...) // x/sys sends one dummy byte with the rights
		}, want: ReasonMalformed},
		{name: "duplicate id", run: func(t *testing.T, r *rawEnd, c *Conn, fds func(string, int) []int) {
			r.send(request(7, "block", nil, 0))
			r.send(request(7, "memfd", nil, 1), fds("memfd-sealed", 1)...)
		}, want: ReasonDuplicateID},
		{name: "too many in flight", run: func(t *testing.T, r *rawEnd, c *Conn, fds func(string, int) []int) {
			r.send(request(1, "block", nil, 0))
			r.send(request(2, "block", nil, 0))
			r.send(request(3, "memfd", nil, 1), fds("memfd-sealed", 1)...)
		}, want: ReasonTooManyInFlight},
		{name: "reply to unknown id", run: func(t *testing.T, r *rawEnd, c *Conn, fds func(string, int) []int) {
			r.send(envBytes(&wirepb.Envelope{Kind: wirepb.Kind_KIND_REPLY, Id: 5, FdCount: 1}), fds("readonly", 1)...)
		}, want: ReasonUnknownReply},
		{name: "bad control (SCM_CREDENTIALS)", prep: func(fd int) {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
				panic(err)
			}
		}, run: func(t *testing.T, r *rawEnd, c *Conn, fds func(string, int) []int) {
			r.send(request(1, "memfd", nil, 1), fds("memfd-sealed", 1)...)
		}, want: ReasonBadControl},
	}
	// Replies that do not fit the spec of the call they answer.
	replyCase := func(name string, reply func(id uint64, fds func(string, int) []int) ([]byte, []int), want Reason) tc {
		return tc{name: name, run: func(t *testing.T, r *rawEnd, c *Conn, fds func(string, int) []int) {
			errc := make(chan error, 1)
			go func() {
				_, out, err := Call(context.Background(), c, mGiveFD, &testMsg{})
				closeFiles(out)
				errc <- err
			}()
			req := r.recvEnvelope()
			data, fs := reply(req.Id, fds)
			r.send(data, fs...)
			err := <-errc
			requireReason(t, err, want)
		}, want: want}
	}
	cases = append(cases,
		replyCase("reply fd count", func(id uint64, fds func(string, int) []int) ([]byte, []int) {
			return envBytes(&wirepb.Envelope{Kind: wirepb.Kind_KIND_REPLY, Id: id, FdCount: 2}), fds("readonly", 2)
		}, ReasonFDCount),
		replyCase("reply fd kind", func(id uint64, fds func(string, int) []int) ([]byte, []int) {
			return envBytes(&wirepb.Envelope{Kind: wirepb.Kind_KIND_REPLY, Id: id, FdCount: 1}), fds("writable", 1)
		}, ReasonFDKind),
		replyCase("reply payload too large", func(id uint64, fds func(string, int) []int) ([]byte, []int) {
			return envBytes(&wirepb.Envelope{Kind: wirepb.Kind_KIND_REPLY, Id: id, FdCount: 1,
				Payload: payloadOf(&testMsg{Value: make([]byte, 17)})}), fds("readonly", 1)
		}, ReasonPayloadTooLarge),
		replyCase("error reply with fds", func(id uint64, fds func(string, int) []int) ([]byte, []int) {
			return envBytes(&wirepb.Envelope{Kind: wirepb.Kind_KIND_REPLY, Id: id, FdCount: 1, StatusCode: 2}), fds("readonly", 1)
		}, ReasonFDCount),
		replyCase("reply garbage payload", func(id uint64, fds func(string, int) []int) ([]byte, []int) {
			return envBytes(&wirepb.Envelope{Kind: wirepb.Kind_KIND_REPLY, Id: id, FdCount: 1, Payload: []byte{0xff}}), fds("readonly", 1)
		}, ReasonMalformed),
		replyCase("reply invalid code", func(id uint64, fds func(string, int) []int) ([]byte, []int) {
			return envBytes(&wirepb.Envelope{Kind: wirepb.Kind_KIND_REPLY, Id: id, StatusCode: 999}), nil
		}, ReasonMalformed),
	)
	// Wrong fd kinds, for each kind-checked method.
	wrong := map[string][]string{
		"memfd":    {"pipe", "socket", "directory", "devnull", "opath", "writable", "readonly", "memfd-unsealed", "memfd-no-write", "memfd-no-grow", "memfd-no-shrink", "memfd-no-seal", "memfd-opath", "eventfd"},
		"readonly": {"pipe", "socket", "directory", "devnull", "opath", "writable", "writeonly", "memfd-sealed", "eventfd"},
		"seccomp":  {"pipe", "eventfd", "memfd-sealed", "readonly", "devnull"},
	}
	for method, kinds := range wrong {
		for _, kind := range kinds {
			cases = append(cases, tc{name: "fd kind " + method + " " + kind, run: func(t *testing.T, r *rawEnd, c *Conn, fds func(string, int) []int) {
				r.send(request(1, method, nil, 1), fds(kind, 1)...)
			}, want: ReasonFDKind})
		}
	}

	warmUp(t)
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			base := openFDs(t)
			lim := tt.lim
			if lim == (Limits{}) {
				lim = small
			}
			var mux *Mux
			if tt.mux || tt.name != "no mux" {
				mux = testMux()
			}
			c, r := newVictim(t, lim, mux, tt.prep)
			var sent []int
			fds := func(kind string, n int) []int {
				mk := fixtures[kind]
				out := make([]int, n)
				for i := range out {
					out[i] = mk(t)
				}
				sent = append(sent, out...)
				return out
			}
			tt.run(t, r, c, fds)
			// The fds we sent are our copies; the Conn got its own.
			closeFDs(sent)
			requireReason(t, waitDead(t, c), tt.want)
			require.NoError(t, c.Close())
			requireReason(t, c.Err(), tt.want) // Close does not overwrite the cause
			r.f.Close()
			waitFDs(t, base)
		})
	}
}

// A violation fails every pending call with the violation.
func TestViolationFailsPendingCalls(t *testing.T) {
	c, r := newVictim(t, defaultLimits(), nil, nil)
	defer r.f.Close()
	defer c.Close()
	errc := make(chan error, 1)
	go func() {
		_, _, err := Call(context.Background(), c, mEcho, &testMsg{})
		errc <- err
	}()
	r.recvEnvelope()
	r.send([]byte("\xff"))
	requireReason(t, <-errc, ReasonMalformed)
	_, _, err := Call(context.Background(), c, mEcho, &testMsg{})
	requireReason(t, err, ReasonMalformed)
}

func TestPeerClose(t *testing.T) {
	c, r := newVictim(t, defaultLimits(), nil, nil)
	errc := make(chan error, 1)
	go func() {
		_, _, err := Call(context.Background(), c, mEcho, &testMsg{})
		errc <- err
	}()
	r.recvEnvelope()
	r.f.Close()
	err := <-errc
	require.ErrorIs(t, err, ErrPeerClosed)
	require.ErrorIs(t, waitDead(t, c), ErrPeerClosed)
	require.NoError(t, c.Close())
	require.ErrorIs(t, c.Err(), ErrPeerClosed)
}

func TestNewConnRejectsOtherSockets(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	unix.Close(fds[1])
	_, err = NewConn(os.NewFile(uintptr(fds[0]), "stream"))
	require.Error(t, err)
	f, err := os.Open("/dev/null")
	require.NoError(t, err)
	_, err = NewConn(f)
	require.Error(t, err)
	a, b, err := SocketPair()
	require.NoError(t, err)
	defer b.Close()
	_, err = NewConn(a, WithLimits(Limits{MaxFDs: 1000}))
	require.Error(t, err)
	_, err = NewConn(nil)
	require.Error(t, err)
}
