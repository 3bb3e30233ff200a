package fuzz

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/internal/control"
	"github.com/sandkit/sandkit/internal/control/controlpb"
	"github.com/sandkit/sandkit/internal/testrenderer"
	"github.com/sandkit/sandkit/ipc"
	"github.com/sandkit/sandkit/ipc/wirepb"
	"github.com/sandkit/sandkit/policy"
)

// The ready report is the one message a locked-down renderer cannot
// fuzz: renderer.Main sends it, once, before serving anything. So
// FuzzReadyReport uses a fake renderer — this test binary started by the
// broker with fakeReadyFlag — that skips lockdown and sends the report
// the fuzzer wrote to a file, then serves bind and ping like a real one.

const (
	fakeReadyFlag = "-fuzz-fake-ready="
	// fakeExitFlag makes the fake renderer exit as soon as its report
	// is sent, without waiting for the broker's answer.
	fakeExitFlag = "-fuzz-fake-exit"
)

func fakeReadyInput(args []string) (string, bool) {
	for _, a := range args {
		if p, ok := strings.CutPrefix(a, fakeReadyFlag); ok {
			return p, true
		}
	}
	return "", false
}

// Descriptor choices of a fake report, modulo readyFDs.
const (
	readyNoFD = iota
	readyListener
	readyDevNull
	readyMemfd
	readyFDs
)

// readyInput is what a fake renderer reads: the method (even: Ready,
// odd: ReadyUnmonitored), the descriptor choice, then the payload.
func readyInput(method, fd byte, payload []byte) []byte {
	return append([]byte{method, fd}, payload...)
}

// fakeReadyRenderer runs in the child. It speaks raw on descriptor 3
// until its report is answered, then hands the socket to an ipc.Conn.
func fakeReadyRenderer(path string) int {
	in, err := os.ReadFile(path)
	if err != nil || len(in) < 2 {
		return 70
	}
	method := control.Ready.Spec().Name
	if in[0]%2 == 1 {
		method = control.ReadyUnmonitored.Spec().Name
	}
	var fds []int
	switch in[1] % readyFDs {
	case readyListener:
		fd, err := seccompListener()
		if err != nil {
			os.Stderr.WriteString("seccomp listener: " + err.Error() + "\n")
			return 71
		}
		fds = append(fds, fd)
	case readyDevNull:
		// Any descriptor that is not a listener; the empty root has no
		// /dev/null, so an eventfd stands for it.
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
		if err != nil {
			return 73
		}
		fds = append(fds, fd)
	case readyMemfd:
		fd, _ := unix.MemfdCreate("x", unix.MFD_CLOEXEC)
		fds = append(fds, fd)
	}
	env, _ := proto.Marshal(&wirepb.Envelope{Kind: wirepb.Kind_KIND_REQUEST, Id: 1, Method: method, Payload: in[2:], FdCount: uint32(len(fds))})
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := unix.Sendmsg(3, env, oob, nil, 0); err != nil {
		return 72
	}
	closeAll(fds)
	if slices.Contains(os.Args, fakeExitFlag) {
		return 0
	}
	// The broker's answer; if it rejects the report it kills us. The
	// broker binds a renderer as soon as it has read the report, so Bind
	// (and then the test's Ping) may arrive before the answer: requests
	// are answered here, by hand, until the answer has come.
	buf := make([]byte, 1<<16)
	for {
		n, _, _, _, err := unix.Recvmsg(3, buf, nil, 0)
		if err != nil {
			return 73
		}
		var got wirepb.Envelope
		if err := proto.Unmarshal(buf[:n], &got); err != nil {
			return 75
		}
		if got.GetKind() == wirepb.Kind_KIND_REPLY {
			break
		}
		if got.GetKind() != wirepb.Kind_KIND_REQUEST {
			continue
		}
		resp := got.GetPayload() // Ping echoes
		if got.GetMethod() == control.Bind.Spec().Name {
			resp, _ = proto.Marshal(&controlpb.BindResponse{})
		}
		reply, _ := proto.Marshal(&wirepb.Envelope{Kind: wirepb.Kind_KIND_REPLY, Id: got.GetId(), Payload: resp})
		if err := unix.Sendmsg(3, reply, nil, nil, 0); err != nil {
			return 76
		}
	}
	mux := ipc.NewMux()
	ipc.Handle(mux, control.Bind, func(context.Context, *controlpb.BindRequest, []*os.File) (*controlpb.BindResponse, []*os.File, error) {
		return &controlpb.BindResponse{}, nil, nil
	})
	ipc.Handle(mux, testrenderer.Ping, func(_ context.Context, req *wrapperspb.BytesValue, _ []*os.File) (*wrapperspb.BytesValue, []*os.File, error) {
		return req, nil, nil
	})
	conn, err := ipc.NewConn(os.NewFile(3, "broker"), ipc.WithMux(mux))
	if err != nil {
		return 74
	}
	<-conn.Done()
	return 0
}

// seccompListener installs an allow-everything filter with a user
// notification listener on a thread of its own (locked and never
// unlocked, so the runtime retires the thread) and returns the listener:
// a real one, as the broker's kind check wants.
func seccompListener() (int, error) {
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			ch <- result{-1, err}
			return
		}
		prog := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW}}
		fprog := unix.SockFprog{Len: 1, Filter: &prog[0]}
		fd, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
			unix.SECCOMP_FILTER_FLAG_NEW_LISTENER, uintptr(unsafe.Pointer(&fprog)))
		if e != 0 {
			ch <- result{-1, e}
			return
		}
		ch <- result{int(fd), nil}
	}()
	r := <-ch
	return r.fd, r.err
}

// readyPolicy is strict, with one layer allowed degraded so that the
// broker's "inactive but acceptable" path is reachable.
func readyPolicy() *policy.Policy {
	p := strictPolicy()
	p.AllowDegraded = []policy.Layer{policy.LayerLandlockScope}
	return p
}

// readyVerdict is the oracle: what the broker must do with a report,
// from its documentation (renderer.checkReady fails closed: every
// requested layer active or allowed degraded, monitor iff listener).
func readyVerdict(p *policy.Policy, method, fd byte, payload []byte) (accept bool, why broker.ExitReason) {
	ready := method%2 == 0
	switch c := fd % readyFDs; {
	case ready && c != readyListener, !ready && c != readyNoFD:
		return false, broker.ExitBadMessage // fd count or kind
	}
	var req controlpb.ReadyRequest
	if len(payload) > 4096 || proto.Unmarshal(payload, &req) != nil {
		return false, broker.ExitBadMessage
	}
	if req.GetError() != "" {
		return false, broker.ExitLockdownFailed
	}
	reported := map[string]*controlpb.Layer{}
	for _, l := range req.GetLayers() {
		reported[l.GetName()] = l
	}
	for _, l := range p.Requested() {
		r := reported[string(l)]
		if r == nil || (!r.GetActive() && !p.Degradable(l)) {
			return false, broker.ExitLockdownFailed
		}
	}
	if reported[string(policy.LayerSeccompMonitor)].GetActive() != ready {
		return false, broker.ExitLockdownFailed
	}
	return true, ""
}

// fullReport is the report of a renderer with every requested layer in
// force.
func fullReport(p *policy.Policy) *controlpb.ReadyRequest {
	req := &controlpb.ReadyRequest{}
	for _, l := range p.Requested() {
		req.Layers = append(req.Layers, &controlpb.Layer{Name: string(l), Active: true, Detail: "on"})
	}
	return req
}

// FuzzReadyReport sends a fuzzed first ready report (sandkit.Ready or
// ReadyUnmonitored, with or without a listener or a descriptor posing as
// one, any payload) to a real broker and checks that it fails closed:
// a renderer is accepted exactly when readyVerdict accepts it, and then
// with every required layer reported active; otherwise spawning fails
// with the classified reason. No descriptor or goroutine leaks.
func FuzzReadyReport(f *testing.F) {
	p := readyPolicy()
	full := fullReport(p)
	add := func(method, fd byte, req *controlpb.ReadyRequest) {
		b, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(method, fd, b)
	}
	add(0, readyListener, full)
	add(1, readyNoFD, full) // monitor claimed without its listener
	add(0, readyDevNull, full)
	add(0, readyMemfd, full)
	add(0, readyNoFD, full)
	add(1, readyListener, full)
	degraded := proto.Clone(full).(*controlpb.ReadyRequest)
	for _, l := range degraded.Layers {
		if l.Name == string(policy.LayerLandlockScope) || l.Name == string(policy.LayerSeccompMonitor) {
			l.Active = false
		}
	}
	add(1, readyNoFD, degraded)
	missing := proto.Clone(full).(*controlpb.ReadyRequest)
	missing.Layers = missing.Layers[1:]
	add(0, readyListener, missing)
	off := proto.Clone(full).(*controlpb.ReadyRequest)
	off.Layers[3].Active = false
	add(0, readyListener, off)
	dup := proto.Clone(full).(*controlpb.ReadyRequest)
	dup.Layers = append(dup.Layers, &controlpb.Layer{Name: string(policy.LayerSeccomp), Active: false})
	add(0, readyListener, dup)
	add(1, readyNoFD, &controlpb.ReadyRequest{FailedLayer: string(policy.LayerLandlockFS), Error: "no landlock"})
	f.Add(byte(0), byte(readyListener), []byte{0xff})

	input := filepath.Join(renderersCanRead(f, f.TempDir()), "report")
	// The fake renderer reads its report by path, from inside its empty
	// root: the directory is one of the policy's read-only paths.
	p.Filesystem.ReadOnlyPaths = append(p.Filesystem.ReadOnlyPaths, filepath.Dir(input))
	b, err := broker.New(context.Background(), broker.Config{
		Policy: p, Args: []string{fakeReadyFlag + input}, ReadyTimeout: 10 * time.Second,
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { b.Close() })
	try := func(tb testing.TB, method, fd byte, payload []byte) (*broker.Renderer, error) {
		if err := os.WriteFile(input, readyInput(method, fd, payload), 0o644); err != nil {
			tb.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return b.Acquire(ctx, "https://ready.example", "")
	}
	// The leak baseline is taken after the first input: a fuzz worker
	// runs inputs alongside goroutines of its own that do not exist yet.
	fds, gs := -1, -1
	f.Fuzz(func(t *testing.T, method, fd byte, payload []byte) {
		accept, why := readyVerdict(p, method, fd, payload)
		r, err := try(t, method, fd, payload)
		if accept {
			if err != nil {
				t.Fatalf("a valid report was refused: %v", err)
			}
			resp, _, err := broker.Call(context.Background(), r, testrenderer.Ping, wrapperspb.Bytes([]byte("p")))
			if err != nil || string(resp.GetValue()) != "p" {
				t.Fatalf("accepted renderer does not answer: %v", err)
			}
			var req controlpb.ReadyRequest
			proto.Unmarshal(payload, &req)
			layers := r.Layers()
			for _, l := range p.Requested() {
				if !layers.Active(l) && !p.Degradable(l) {
					t.Fatalf("accepted with required layer %s not in force: %v", l, layers)
				}
				if !p.Degradable(l) && !reportedActive(&req, l) {
					t.Fatalf("accepted although the report never said %s is active", l)
				}
			}
			r.Close()
		} else {
			if err == nil {
				r.Close()
				t.Fatalf("an invalid report was accepted (want %s)", why)
			}
			var ee *broker.ExitError
			if !errors.As(err, &ee) || ee.Reason != why {
				t.Fatalf("refused with %v, want %s", err, why)
			}
		}
		if gs < 0 {
			fds, gs = openFDs(t), goroutines()
			return
		}
		settle(t, "goroutines", gs, goroutines)
		settle(t, "descriptors", fds, func() int { return openFDs(t) })
	})
}

func reportedActive(req *controlpb.ReadyRequest, l policy.Layer) bool {
	for _, r := range req.GetLayers() {
		if r.GetName() == string(l) && r.GetActive() {
			return true
		}
	}
	return false
}

// TestViolationThenExit is the regression test for a renderer that breaks
// the protocol and exits at once passing for a clean exit: a
// renderer sends a ready report the protocol forbids (Ready without its
// listener: a descriptor-count violation) and exits 0 at once. The broker
// must classify it ExitBadMessage, whichever of its goroutines notices
// first (the broker drains the connection before it classifies the exit).
func TestViolationThenExit(t *testing.T) {
	input := filepath.Join(renderersCanRead(t, t.TempDir()), "report")
	p := readyPolicy()
	p.Filesystem.ReadOnlyPaths = append(p.Filesystem.ReadOnlyPaths, filepath.Dir(input)) // read inside the empty root
	report, err := proto.Marshal(fullReport(p))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(input, readyInput(0, readyNoFD, report), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := broker.New(context.Background(), broker.Config{Policy: p, Args: []string{fakeReadyFlag + input, fakeExitFlag}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// Several at once: the broker's goroutines then compete for the
	// CPU with the renderers' exits, which is when the race is lost.
	const runs, parallel = 64, 8
	got := map[broker.ExitReason]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range runs / parallel {
				_, err := b.Acquire(context.Background(), fmt.Sprint("https://exit.example/", i), "")
				var ee *broker.ExitError
				mu.Lock()
				if errors.As(err, &ee) {
					got[ee.Reason]++
				} else {
					got["no ExitError"]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	switch {
	case got[broker.ExitBadMessage] == runs:
	default:
		t.Fatalf("classified %v, want %d × %s", got, runs, broker.ExitBadMessage)
	}
}

// renderersCanRead opens dir to everyone: a root broker runs each renderer
// as a host uid of its own, which reads the fake report by path.
func renderersCanRead(tb testing.TB, dir string) string {
	// t.TempDir's parent, made per test, is private too.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}
