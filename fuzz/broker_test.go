package fuzz

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/internal/control/controlpb"
	"github.com/sandkit/sandkit/internal/testrenderer"
	"github.com/sandkit/sandkit/ipc"
	"github.com/sandkit/sandkit/ipc/wirepb"
	"github.com/sandkit/sandkit/policy"
)

const (
	// targetOrigin is the origin the fuzzed renderer is bound to. It is
	// fixed, so that the fuzzer can learn it from the seeds: a renderer
	// that dies is replaced by a fresh one for the same origin.
	targetOrigin = "https://fuzz.example"
	// bystanderOrigin's renderer is never sent anything hostile and must
	// keep answering whatever happens to the others.
	bystanderOrigin = "https://bystander.example"
	// secret is the content of a file outside the granted directory.
	secret = "TOP-SECRET-7f3a9c"
)

// strictPolicy is policy.Strict as a test binary can run it: under the
// race detector the memory limit is lifted (see raceEnabled). The fuzzing
// renderer forges memfds of every seal combination to attack the broker's
// descriptor checks, so it may make them, which a real renderer may not.
func strictPolicy() *policy.Policy {
	p := policy.Strict()
	p.Seccomp.Allow = append(p.Seccomp.Allow, "memfd_create", "ftruncate")
	if raceEnabled {
		p.Limits.Memory = 0
	}
	return p
}

// grantedTree builds the resource tree of the target origin: a granted
// directory with files, a FIFO, a subdirectory and symlinks, and beside
// it a directory holding the secret, which must never be handed out. It
// returns the granted directory and the contents a renderer may receive.
func grantedTree(tb testing.TB) (string, map[string]bool) {
	tb.Helper()
	root := tb.TempDir()
	granted := filepath.Join(root, "granted")
	secretDir := filepath.Join(root, "secret")
	for _, d := range []string{filepath.Join(granted, "sub"), secretDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	files := map[string]string{
		filepath.Join(granted, "public.txt"):     "public contents",
		filepath.Join(granted, "sub/nested.txt"): "nested contents",
		filepath.Join(granted, "empty"):          "",
		filepath.Join(secretDir, "secret.txt"):   secret,
	}
	allowed := map[string]bool{}
	for p, c := range files {
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			tb.Fatal(err)
		}
		if c != secret {
			allowed[c] = true
		}
	}
	for link, to := range map[string]string{
		"link":        "../secret/secret.txt",
		"abslink":     filepath.Join(secretDir, "secret.txt"),
		"innerlink":   "public.txt",
		"sub/up":      "../../secret",
		"dirlink":     "../secret",
		"proclink":    "/proc/self/root" + secretDir + "/secret.txt",
		"selfloop":    "selfloop",
		"sub/sibling": "../public.txt",
	} {
		if err := os.Symlink(to, filepath.Join(granted, link)); err != nil {
			tb.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(filepath.Join(granted, "fifo"), 0o644); err != nil {
		tb.Fatal(err)
	}
	return granted, allowed
}

// brokerHarness is one real broker per fuzz process, with a bystander
// renderer and a target renderer that is replaced whenever it dies.
type brokerHarness struct {
	b         *broker.Broker
	allowed   map[string]bool // contents Open may return
	target    *broker.Renderer
	bystander *broker.Renderer
	// The baseline with both renderers alive, taken after the first
	// input: a fuzz worker runs inputs alongside goroutines of its own
	// that do not exist yet when the harness is built.
	fds, gs int
}

func newBrokerHarness(tb testing.TB) *brokerHarness {
	tb.Helper()
	granted, allowed := grantedTree(tb)
	logger := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	b, err := broker.New(context.Background(), broker.Config{Policy: strictPolicy(), Logger: logger, CallTimeout: 20 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { b.Close() })
	if err := b.GrantDir(targetOrigin, granted); err != nil {
		tb.Fatal(err)
	}
	h := &brokerHarness{b: b, allowed: allowed}
	h.bystander = h.acquire(tb, bystanderOrigin)
	h.pingBystander(tb)
	h.target = h.acquire(tb, targetOrigin)
	h.fds, h.gs = -1, -1
	return h
}

func (h *brokerHarness) acquire(tb testing.TB, origin string) *broker.Renderer {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := h.b.Acquire(ctx, origin, "")
	if err != nil {
		tb.Fatalf("acquire %s: %v", origin, err)
	}
	return r
}

func (h *brokerHarness) pingBystander(tb testing.TB) {
	tb.Helper()
	resp, _, err := broker.Call(context.Background(), h.bystander, testrenderer.Ping, wrapperspb.Bytes([]byte("ping")))
	if err != nil || string(resp.GetValue()) != "ping" {
		tb.Fatalf("the bystander renderer stopped answering: %v", err)
	}
}

// call makes the target renderer send one message (see send) and returns
// its answer.
func (h *brokerHarness) call(tb testing.TB, op int, origin, document, name string, body, kinds []byte) (string, error) {
	tb.Helper()
	switch op {
	case sendOpen:
		body = marshalOrEmpty(&controlpb.OpenRequest{Origin: origin, Document: document, Name: name})
	case sendReady, sendReadyFD:
		body = marshalOrEmpty(&controlpb.ReadyRequest{
			Layers:      []*controlpb.Layer{{Name: name, Active: true, Detail: document}},
			FailedLayer: document, Error: origin,
		})
	}
	req, err := encodeSend(op, name, body, kinds)
	if err != nil {
		tb.Fatal(err)
	}
	resp, _, err := broker.Call(context.Background(), h.target, mSend, req)
	return string(resp.GetValue()), err
}

// marshalOrEmpty marshals m; invalid UTF-8 in a string field (which
// proto3 refuses to encode) is replaced first.
func marshalOrEmpty(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err == nil {
		return b
	}
	switch m := m.(type) {
	case *controlpb.OpenRequest:
		m.Origin, m.Document, m.Name = validUTF8(m.Origin), validUTF8(m.Document), validUTF8(m.Name)
	case *controlpb.ReadyRequest:
		m.FailedLayer, m.Error = validUTF8(m.FailedLayer), validUTF8(m.Error)
		for _, l := range m.Layers {
			l.Name, l.Detail = validUTF8(l.Name), validUTF8(l.Detail)
		}
	}
	b, _ = proto.Marshal(m)
	return b
}

func validUTF8(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

// exitReason returns the reason of the ExitError err carries, or "".
func exitReason(err error) broker.ExitReason {
	var ee *broker.ExitError
	if errors.As(err, &ee) {
		return ee.Reason
	}
	return ""
}

// settleRenderers replaces a dead target and waits until descriptors and
// goroutines are back at the baseline (taken here the first time): every dead renderer's conn, pidfd,
// log pipe, listener and goroutines are gone.
func (h *brokerHarness) settleRenderers(tb testing.TB) {
	tb.Helper()
	if h.target.Err() != nil {
		h.target = h.acquire(tb, targetOrigin)
	}
	h.pingBystander(tb)
	if h.gs < 0 {
		h.fds, h.gs = openFDs(tb), goroutines()
		return
	}
	settle(tb, "goroutines", h.gs, goroutines)
	settle(tb, "descriptors", h.fds, func() int { return openFDs(tb) })
}

// FuzzBrokerMethods has a locked-down renderer send what the fuzzer chose
// to a real broker — typed sandkit.Open calls with any origin, document and
// name, repeated ready reports (with and without a descriptor posing as
// the seccomp listener), raw datagrams and request envelopes for any
// method with any payload and descriptors — and checks: the broker never
// panics; a message the protocol or the broker forbids gets the renderer
// killed with ExitBadMessage, and nothing else does; Open never returns a
// file outside the granted directory (the secret beside it never shows
// up); a renderer of another origin keeps answering; and no descriptor or
// goroutine leaks in the broker.
func FuzzBrokerMethods(f *testing.F) {
	open := func(origin, doc, name string) { f.Add(uint8(sendOpen), origin, doc, name, []byte{}, []byte{}) }
	open(targetOrigin, "", "public.txt")
	open(targetOrigin, "", "sub/nested.txt")
	open(targetOrigin, "", "../secret/secret.txt")
	open(targetOrigin, "", "link")
	open(targetOrigin, "", "sub/up/secret.txt")
	open(targetOrigin, "", "dirlink/secret.txt")
	open(targetOrigin, "", "proclink")
	open(targetOrigin, "", "fifo")
	open(targetOrigin, "", "/etc/passwd")
	open(targetOrigin, "", "sub/sibling")
	open(targetOrigin, "doc", "public.txt")
	open(bystanderOrigin, "", "public.txt")
	f.Add(uint8(sendReady), "", "", string(policy.LayerSeccomp), []byte{}, []byte{})
	f.Add(uint8(sendReadyFD), "", "", string(policy.LayerSeccompMonitor), []byte{}, []byte{3})
	openReq, _ := proto.Marshal(&controlpb.OpenRequest{Origin: targetOrigin, Name: "public.txt"})
	f.Add(uint8(sendRequest), "", "", "sandkit.Open", openReq, []byte{})
	f.Add(uint8(sendRequest), "", "", "sandkit.Open", []byte{0xff}, []byte{})
	f.Add(uint8(sendRequest), "", "", "sandkit.Bind", []byte{}, []byte{})
	f.Add(uint8(sendRequest), "", "", "sandkit.ReadyUnmonitored", []byte{}, []byte{})
	f.Add(uint8(sendRaw), "", "", "", []byte{0x08, 0x03, 0x10, 0x05}, []byte{}) // a cancel
	f.Add(uint8(sendRaw), "", "", "", []byte{0x08, 0x02, 0x10, 0x01}, []byte{}) // a reply
	f.Add(uint8(sendRaw), "", "", "", []byte{0xff, 0x00}, []byte{0, 1, 7})
	h := newBrokerHarness(f)
	f.Fuzz(func(t *testing.T, op uint8, origin, document, name string, body, kinds []byte) {
		o := int(op) % sendOps
		if h.target.Err() != nil {
			h.target = h.acquire(t, targetOrigin)
		}
		resp, err := h.call(t, o, origin, document, name, body, kinds)
		if strings.Contains(resp, secret) {
			t.Fatalf("Open(%q, %q, %q) returned the secret outside the granted directory: %q", origin, document, name, resp)
		}
		if o == sendOpen && strings.HasPrefix(resp, "ok:") && !h.allowed[strings.TrimPrefix(resp, "ok:")] {
			t.Fatalf("Open(%q) returned contents that are no granted file: %q", name, resp)
		}
		reason := exitReason(err)
		if err != nil && reason == "" {
			t.Fatalf("call failed without an ExitError: %v", err)
		}
		switch o {
		case sendOpen:
			wire := marshalOrEmpty(&controlpb.OpenRequest{Origin: origin, Document: document, Name: name})
			var sent controlpb.OpenRequest
			proto.Unmarshal(wire, &sent)
			mustDie := len(wire) <= 4096 && (sent.Origin != targetOrigin || sent.Document != "")
			if mustDie && reason != broker.ExitBadMessage {
				t.Fatalf("Open naming %q %q: renderer not killed for a bad message (answer %q, err %v)", sent.Origin, sent.Document, resp, err)
			}
			if !mustDie && err != nil {
				t.Fatalf("Open of %q killed the renderer: %v", name, err)
			}
		case sendReady, sendReadyFD:
			// Only a report too large for the method's spec stays
			// unsent (the renderer's own Conn refuses it).
			unsent := err == nil && strings.Contains(resp, ipc.ErrSpec.Error())
			if reason != broker.ExitBadMessage && !unsent {
				t.Fatalf("a second ready report did not get the renderer killed for a bad message: %q, %v", resp, err)
			}
		default:
			// Raw messages: the renderer may survive them (a valid
			// cancel), be killed for a bad message, or end itself when
			// the broker's answer to its forged request confuses its
			// own connection. Never anything else.
			switch reason {
			case "", broker.ExitBadMessage, broker.ExitBrokerLimit, broker.ExitClean:
			default:
				t.Fatalf("raw message ended the renderer with %v", err)
			}
			if certainViolation(o, name, body, len(kinds)) && reason != broker.ExitBadMessage && reason != broker.ExitBrokerLimit {
				t.Fatalf("invalid message %x (method %q) not classified as a bad message: %q, %v", body, name, resp, err)
			}
		}
		if err != nil || o == sendRaw || o == sendRequest {
			// Retire the renderer: an answer to a forged request may
			// still be on its way, and must not hit the next input.
			h.target.Close()
			if r := h.target.Err().Reason; err == nil && r != broker.ExitReleased && r != broker.ExitBadMessage && r != broker.ExitBrokerLimit && r != broker.ExitClean {
				t.Fatalf("renderer ended with %v", h.target.Err())
			}
		}
		h.settleRenderers(t)
	})
}

// certainViolation reports inputs the broker must reject whatever its
// state: a raw datagram that is no envelope at all, or a request for a
// method the broker does not serve.
func certainViolation(op int, method string, body []byte, nfds int) bool {
	switch op {
	case sendRaw:
		var env wirepb.Envelope
		return len(body) == 0 && nfds == 0 || proto.Unmarshal(body, &env) != nil
	case sendRequest:
		switch validUTF8(method) {
		case "sandkit.Open", "sandkit.Ready", "sandkit.ReadyUnmonitored":
			return false
		}
		return true
	}
	return false
}
