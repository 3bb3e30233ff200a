package ipc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/sandkit/sandkit/internal/fdkind"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func newPair(t testing.TB, muxA, muxB *Mux, lim Limits) (*Conn, *Conn) {
	t.Helper()
	a, b, err := SocketPair()
	require.NoError(t, err)
	oa := []Option{WithLimits(lim)}
	if muxA != nil {
		oa = append(oa, WithMux(muxA))
	}
	ob := []Option{WithLimits(lim)}
	if muxB != nil {
		ob = append(ob, WithMux(muxB))
	}
	ca, err := NewConn(a, oa...)
	require.NoError(t, err)
	cb, err := NewConn(b, ob...)
	require.NoError(t, err)
	t.Cleanup(func() { ca.Close(); cb.Close() })
	return ca, cb
}

// blockingMux returns a mux whose mBlock handler reports on started that
// it runs, then blocks until its context ends.
func blockingMux() (*Mux, chan struct{}) {
	started := make(chan struct{}, 1)
	mux := NewMux()
	Handle(mux, mBlock, func(ctx context.Context, req *testMsg, _ []*os.File) (*testMsg, []*os.File, error) {
		started <- struct{}{}
		<-ctx.Done()
		return nil, nil, ctx.Err()
	})
	return mux, started
}

// waitStarted waits for a handler's report that it runs.
func waitStarted(t testing.TB, started <-chan struct{}) {
	t.Helper()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler did not start")
	}
}

func TestCallEcho(t *testing.T) {
	a, _ := newPair(t, nil, testMux(), Limits{})
	resp, fds, err := Call(context.Background(), a, mEcho, &testMsg{Value: []byte("ping")})
	require.NoError(t, err)
	require.Empty(t, fds)
	require.Equal(t, "ping", string(resp.Value))
}

func TestCallWithFDs(t *testing.T) {
	warmUp(t)
	base := openFDs(t)
	mux := NewMux()
	Handle(mux, mGiveFD, func(ctx context.Context, req *testMsg, _ []*os.File) (*testMsg, []*os.File, error) {
		f, err := os.Open("/proc/self/exe")
		if err != nil {
			return nil, nil, err
		}
		return &testMsg{Value: []byte("x")}, []*os.File{f}, nil
	})
	Handle(mux, mMemfd, func(ctx context.Context, req *testMsg, fds []*os.File) (*testMsg, []*os.File, error) {
		defer closeFiles(fds)
		buf := make([]byte, 5)
		if _, err := fds[0].ReadAt(buf, 0); err != nil {
			return nil, nil, err
		}
		return &testMsg{Value: buf}, nil, nil
	})
	a, b := newPair(t, nil, mux, Limits{})
	resp, fds, err := Call(context.Background(), a, mGiveFD, &testMsg{})
	require.NoError(t, err)
	require.Len(t, fds, 1)
	require.NoError(t, checkFile(fds[0], ReadOnlyFile))
	require.Equal(t, "x", string(resp.Value))
	fds[0].Close()

	fd := memfdWithSeals(0)(t)
	_, err = unix.Pwrite(fd, []byte("hello"), 0)
	require.NoError(t, err)
	_, err = unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, fdkind.SealsImmutable)
	require.NoError(t, err)
	mf := os.NewFile(uintptr(fd), "memfd")
	resp, _, err = Call(context.Background(), a, mMemfd, &testMsg{}, mf)
	require.NoError(t, err)
	require.Equal(t, "hello", string(resp.Value))
	mf.Close()
	a.Close()
	b.Close()
	waitFDs(t, base)
}

func TestCallSpecErrors(t *testing.T) {
	a, _ := newPair(t, nil, testMux(), Limits{})
	_, _, err := Call(context.Background(), a, mEcho, &testMsg{Value: make([]byte, 2000)})
	require.ErrorIs(t, err, ErrSpec)
	_, _, err = Call(context.Background(), a, mMemfd, &testMsg{})
	require.ErrorIs(t, err, ErrSpec)
	f, err := os.Open("/dev/null")
	require.NoError(t, err)
	defer f.Close()
	_, _, err = Call(context.Background(), a, mMemfd, &testMsg{}, f)
	require.ErrorIs(t, err, ErrSpec)
	require.NotErrorIs(t, err, ErrProtocol)
	// The Conn is still fine.
	_, _, err = Call(context.Background(), a, mEcho, &testMsg{})
	require.NoError(t, err)
}

func TestHandlerSpecViolationBecomesInternal(t *testing.T) {
	mux := NewMux()
	Handle(mux, mGiveFD, func(ctx context.Context, req *testMsg, _ []*os.File) (*testMsg, []*os.File, error) {
		return &testMsg{}, nil, nil // spec wants one fd
	})
	a, _ := newPair(t, nil, mux, Limits{})
	_, _, err := Call(context.Background(), a, mGiveFD, &testMsg{})
	var se *StatusError
	require.ErrorAs(t, err, &se)
	require.Equal(t, CodeInternal, se.Code)
	require.NoError(t, a.Err())
}

func TestStatusErrors(t *testing.T) {
	mStatus := NewMethod[*testMsg, *testMsg](MethodSpec{Name: "status"})
	mux := NewMux()
	Handle(mux, mStatus, func(ctx context.Context, req *testMsg, _ []*os.File) (*testMsg, []*os.File, error) {
		switch string(req.Value) {
		case "notfound":
			return nil, nil, Errorf(CodeNotFound, "no %s here", "thing")
		case "wrapped":
			return nil, nil, fmt.Errorf("ctx: %w", Errorf(CodePermissionDenied, "nope"))
		case "plain":
			return nil, nil, errors.New("plain failure")
		case "canceled":
			return nil, nil, fmt.Errorf("gave up: %w", context.Canceled)
		case "deadline":
			return nil, nil, context.DeadlineExceeded
		case "badutf8":
			return nil, nil, errors.New("bad \xff")
		case "zero":
			return nil, nil, Errorf(0, "zero")
		case "nil":
			return nil, nil, nil
		}
		return req, nil, nil
	})
	a, _ := newPair(t, nil, mux, Limits{})
	for _, tt := range []struct {
		in   string
		code Code
		msg  string
	}{
		{"notfound", CodeNotFound, "no thing here"},
		{"wrapped", CodePermissionDenied, "nope"},
		{"plain", CodeUnknown, "plain failure"},
		{"canceled", CodeCanceled, "gave up: context canceled"},
		{"deadline", CodeDeadlineExceeded, "context deadline exceeded"},
		{"badutf8", CodeUnknown, "bad \uFFFD"},
		{"zero", CodeUnknown, "zero"},
	} {
		t.Run(tt.in, func(t *testing.T) {
			_, _, err := Call(context.Background(), a, mStatus, &testMsg{Value: []byte(tt.in)})
			var se *StatusError
			require.ErrorAs(t, err, &se)
			require.Equal(t, tt.code, se.Code)
			require.Equal(t, tt.msg, se.Message)
		})
	}
	resp, _, err := Call(context.Background(), a, mStatus, &testMsg{Value: []byte("nil")})
	require.NoError(t, err)
	require.Empty(t, resp.Value)
	require.Equal(t, "ipc: not found: x", Errorf(CodeNotFound, "x").Error())
	require.Equal(t, "code(99)", Code(99).String())
}

func TestConcurrentCallsBothWays(t *testing.T) {
	a, b := newPair(t, testMux(), testMux(), Limits{MaxInFlight: 8})
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := a
			if i%2 == 1 {
				c = b
			}
			want := fmt.Appendf(nil, "msg-%d", i)
			resp, _, err := Call(context.Background(), c, mEcho, &testMsg{Value: want})
			if err != nil {
				t.Error(err)
				return
			}
			if !bytes.Equal(resp.Value, want) {
				t.Errorf("got %q want %q", resp.Value, want)
			}
		}()
	}
	wg.Wait()
	require.NoError(t, a.Err())
	require.NoError(t, b.Err())
}

func TestCancel(t *testing.T) {
	warmUp(t)
	base := openFDs(t)
	mSlow := NewMethod[*testMsg, *testMsg](MethodSpec{Name: "slow", ResponseFDs: []FDKind{ReadOnlyFile}})
	started := make(chan struct{}, 1)
	sawCancel := make(chan error, 1)
	release := make(chan struct{})
	mux := NewMux()
	Handle(mux, mSlow, func(ctx context.Context, req *testMsg, _ []*os.File) (*testMsg, []*os.File, error) {
		started <- struct{}{}
		<-ctx.Done()
		sawCancel <- ctx.Err()
		<-release // reply late, after the caller gave up, with an fd
		f, err := os.Open("/proc/self/exe")
		if err != nil {
			return nil, nil, err
		}
		return &testMsg{}, []*os.File{f}, nil
	})
	a, b := newPair(t, nil, mux, Limits{MaxInFlight: 1})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, fds, err := Call(ctx, a, mSlow, &testMsg{})
		closeFiles(fds)
		errc <- err
	}()
	<-started
	cancel()
	err := <-errc
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorIs(t, <-sawCancel, context.Canceled)

	// The cancelled call still holds the only slot until its late reply
	// arrives; then the reply is dropped (its fd closed) and the slot freed.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, _, err = Call(ctx2, a, mSlow, &testMsg{})
	cancel2()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	close(release)
	mEcho2 := NewMethod[*testMsg, *testMsg](MethodSpec{Name: "echo"})
	Handle(mux, mEcho2, func(ctx context.Context, req *testMsg, _ []*os.File) (*testMsg, []*os.File, error) {
		return req, nil, nil
	})
	_, _, err = Call(context.Background(), a, mEcho2, &testMsg{})
	require.NoError(t, err)
	require.NoError(t, a.Err())
	require.NoError(t, b.Err())
	a.Close()
	b.Close()
	waitFDs(t, base)
}

func TestDeadlinePropagates(t *testing.T) {
	mux := NewMux()
	type seen struct {
		remaining time.Duration
		ok        bool
		err       error
	}
	got := make(chan seen, 1)
	Handle(mux, mBlock, func(ctx context.Context, req *testMsg, _ []*os.File) (*testMsg, []*os.File, error) {
		dl, ok := ctx.Deadline()
		rem := time.Until(dl)
		<-ctx.Done()
		got <- seen{rem, ok, ctx.Err()}
		return nil, nil, ctx.Err()
	})
	a, _ := newPair(t, nil, mux, Limits{})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, _, err := Call(ctx, a, mBlock, &testMsg{})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	s := <-got
	require.True(t, s.ok, "handler ctx has no deadline")
	require.Greater(t, s.remaining, time.Duration(0))
	require.LessOrEqual(t, s.remaining, 200*time.Millisecond)
	// The handler's own deadline and the caller's Cancel race; either
	// ends the handler.
	require.True(t, errors.Is(s.err, context.DeadlineExceeded) || errors.Is(s.err, context.Canceled), "handler ctx: %v", s.err)

	// Without a deadline, none is made up.
	Handle(mux, NewMethod[*testMsg, *testMsg](MethodSpec{Name: "dl"}), func(ctx context.Context, req *testMsg, _ []*os.File) (*testMsg, []*os.File, error) {
		_, ok := ctx.Deadline()
		return &testMsg{Value: []byte(fmt.Sprint(ok))}, nil, nil
	})
	resp, _, err := Call(context.Background(), a, NewMethod[*testMsg, *testMsg](MethodSpec{Name: "dl"}), &testMsg{})
	require.NoError(t, err)
	require.Equal(t, "false", string(resp.Value))
}

func TestExpiredContext(t *testing.T) {
	a, _ := newPair(t, nil, testMux(), Limits{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err := Call(ctx, a, mEcho, &testMsg{})
	require.ErrorIs(t, err, context.Canceled)
}

func TestCloseFailsPendingAndCancelsHandlers(t *testing.T) {
	handlerDone := make(chan error, 1)
	started := make(chan struct{}, 1)
	mux := NewMux()
	Handle(mux, mBlock, func(ctx context.Context, req *testMsg, _ []*os.File) (*testMsg, []*os.File, error) {
		started <- struct{}{}
		<-ctx.Done()
		handlerDone <- ctx.Err()
		return nil, nil, ctx.Err()
	})
	a, b := newPair(t, nil, mux, Limits{})
	errc := make(chan error, 1)
	go func() {
		_, _, err := Call(context.Background(), a, mBlock, &testMsg{})
		errc <- err
	}()
	waitStarted(t, started) // the call is pending and its handler runs
	require.NoError(t, b.Close())
	require.ErrorIs(t, <-handlerDone, context.Canceled)
	require.ErrorIs(t, <-errc, ErrPeerClosed)
	require.ErrorIs(t, b.Err(), ErrClosed)
	require.NoError(t, b.Close()) // idempotent
	_, _, err := Call(context.Background(), b, mEcho, &testMsg{})
	require.ErrorIs(t, err, ErrClosed)
	a.Close()
	_, err = a.PeerCred()
	require.ErrorIs(t, err, ErrPeerClosed) // a died first, of b's Close
	_, err = b.PeerCred()
	require.ErrorIs(t, err, ErrClosed)
}

func TestLocalCloseFailsPendingCalls(t *testing.T) {
	mux, started := blockingMux()
	a, _ := newPair(t, nil, mux, Limits{})
	errc := make(chan error, 1)
	go func() {
		_, _, err := Call(context.Background(), a, mBlock, &testMsg{})
		errc <- err
	}()
	waitStarted(t, started) // the call is pending
	a.Close()
	select {
	case err := <-errc:
		require.ErrorIs(t, err, ErrClosed)
	case <-time.After(5 * time.Second):
		t.Fatal("pending call hangs after Close")
	}
}

func TestPeerCred(t *testing.T) {
	a, _ := newPair(t, nil, nil, Limits{})
	cred, err := a.PeerCred()
	require.NoError(t, err)
	require.Equal(t, int32(os.Getpid()), cred.Pid)
	require.Equal(t, uint32(os.Getuid()), cred.Uid)
}

// A peer that stops reading must not make Call ignore its context: once the
// socket buffer is full, sends are abandoned when ctx expires, and nothing
// half-sent is left behind.
func TestBlockedSendHonoursContext(t *testing.T) {
	c, r := newVictim(t, defaultLimits(), nil, nil)
	defer r.f.Close()
	defer c.Close()
	big := NewMethod[*testMsg, *testMsg](MethodSpec{Name: "big"})
	pending := func() int {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.pending)
	}
	for i := 0; ; i++ {
		require.Less(t, i, 60, "socket buffer never filled")
		before := pending()
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		start := time.Now()
		_, _, err := Call(ctx, c, big, &testMsg{Value: make([]byte, 60000)})
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Less(t, time.Since(start), 3*time.Second)
		require.NoError(t, c.Err())
		if pending() == before {
			return // this one was never sent
		}
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	settle := func(want int) int {
		var n int
		for range 200 {
			runtime.GC()
			n = runtime.NumGoroutine()
			if n <= want {
				return n
			}
			time.Sleep(5 * time.Millisecond)
		}
		return n
	}
	before := settle(0)
	for range 10 {
		mux := testMux()
		a, b, err := Pair(WithMux(mux))
		require.NoError(t, err)
		var wg sync.WaitGroup
		for range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _, _ = Call(context.Background(), a, mEcho, &testMsg{Value: []byte("x")})
			}()
		}
		// A few calls left blocked in handlers and cancelled ones.
		go func() { _, _, _ = Call(context.Background(), a, mBlock, &testMsg{}) }()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		_, _, _ = Call(ctx, b, mBlock, &testMsg{})
		cancel()
		wg.Wait()
		a.Close()
		b.Close()
	}
	after := settle(before)
	require.LessOrEqual(t, after, before, "goroutines leaked")
}
