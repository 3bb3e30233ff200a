package fuzz

import (
	"context"
	"errors"
	"fmt"
	"github.com/sandkit/sandkit/internal/fdkind"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sandkit/sandkit/internal/control"
	"github.com/sandkit/sandkit/internal/control/controlpb"
	"github.com/sandkit/sandkit/internal/testrenderer"
	"github.com/sandkit/sandkit/ipc"
	"github.com/sandkit/sandkit/ipc/wirepb"
	"github.com/sandkit/sandkit/renderer"
)

// This file is the renderer half of the broker targets: the test binary,
// re-executed by the broker and fully locked down, plays a compromised
// renderer. Its methods make it send, from inside the sandbox, whatever
// the fuzzer chose to the broker, on the broker's own connection.

// mSend asks the renderer to send one message to the broker. The request
// is a sendRequest (see encodeSend); the answer says what happened.
var mSend = ipc.NewMethod[*wrapperspb.BytesValue, *wrapperspb.BytesValue](ipc.MethodSpec{
	Name: "fuzz.Send", MaxRequestBytes: 48 << 10, MaxResponseBytes: 32 << 10,
})

// mHostile asks the renderer to send a generated sequence of messages:
// 8 bytes of PRNG seed and one byte of length. It answers how many it
// sent, if the broker lets it live to answer.
var mHostile = ipc.NewMethod[*wrapperspb.BytesValue, *wrapperspb.UInt32Value](ipc.MethodSpec{
	Name: "fuzz.Hostile", MaxRequestBytes: 64, MaxResponseBytes: 64,
})

// What fuzz.Send sends.
const (
	sendOpen    = iota // a typed sandkit.Open call; the answer is "ok:"+contents or "error:"+why
	sendReady          // a typed sandkit.ReadyUnmonitored call
	sendReadyFD        // a typed sandkit.Ready call with a descriptor as the listener
	sendRaw            // the body as one raw datagram
	sendRequest        // a request envelope for method name with the body as payload
	sendOps
)

// maxSendFDs bounds the descriptors one fuzz.Send attaches.
const maxSendFDs = 8

// encodeSend builds fuzz.Send's argument. It is carried as protobuf so
// that both halves agree on it without generated code: an Envelope whose
// kind is the op, method the method name, payload the body (for typed
// calls, the typed request), fd_count the number of descriptors and id
// their kinds, one byte each (see makeFD).
func encodeSend(op int, method string, body, fdKinds []byte) (*wrapperspb.BytesValue, error) {
	var packed uint64
	fdKinds = fdKinds[:min(len(fdKinds), maxSendFDs)]
	for i, k := range fdKinds {
		packed |= uint64(k) << (8 * i)
	}
	b, err := proto.Marshal(&wirepb.Envelope{Kind: wirepb.Kind(op), Method: strings.ToValidUTF8(method, "?"),
		Payload: body, Id: packed, FdCount: uint32(len(fdKinds))})
	if err != nil {
		return nil, err
	}
	return wrapperspb.Bytes(b), nil
}

// registerRenderer adds the test renderer's methods and the fuzz ones.
func registerRenderer(s *renderer.Session, mux *ipc.Mux) error {
	if err := testrenderer.Register(s, mux); err != nil {
		return err
	}
	ipc.Handle(mux, mSend, func(ctx context.Context, req *wrapperspb.BytesValue, _ []*os.File) (*wrapperspb.BytesValue, []*os.File, error) {
		var sr wirepb.Envelope
		if err := proto.Unmarshal(req.GetValue(), &sr); err != nil {
			return nil, nil, ipc.Errorf(ipc.CodeInvalidArgument, "%v", err)
		}
		return wrapperspb.Bytes([]byte(send(ctx, s, &sr))), nil, nil
	})
	ipc.Handle(mux, mHostile, func(ctx context.Context, req *wrapperspb.BytesValue, _ []*os.File) (*wrapperspb.UInt32Value, []*os.File, error) {
		b := append(req.GetValue(), make([]byte, 9)...)
		var seed uint64
		for _, c := range b[:8] {
			seed = seed<<8 | uint64(c)
		}
		own, _ := s.Origin()
		n := hostile(ctx, s, rand.New(rand.NewPCG(seed, 0x5eed)), int(b[8]), own)
		return wrapperspb.UInt32(uint32(n)), nil, nil
	})
	return nil
}

// brokerSocket finds the broker connection: the renderer's only socket
// (ipc moved it off descriptor 3). There is no /proc to look in.
func brokerSocket() int {
	for fd := 0; fd < 1024; fd++ {
		var st unix.Stat_t
		if unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFSOCK {
			return fd
		}
	}
	return -1
}

// makeFD creates, inside the sandbox, a descriptor of one of the kinds a
// locked-down renderer can make: kind modulo 9. The caller closes it.
func makeFD(kind byte, sock int) int {
	memfd := func(seals int) int {
		fd, err := unix.MemfdCreate("hostile", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
		if err != nil {
			return -1
		}
		unix.Write(fd, []byte("hostile memfd"))
		if seals != 0 {
			unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals)
		}
		return fd
	}
	pipe := func(end int) int {
		var p [2]int
		if unix.Pipe2(p[:], unix.O_CLOEXEC) != nil {
			return -1
		}
		unix.Close(p[1-end])
		return p[end]
	}
	dup := func(fd int) int {
		d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return -1
		}
		return d
	}
	switch kind % 9 {
	case 0:
		return dup(0) // /dev/null
	case 1:
		return pipe(0)
	case 2:
		return pipe(1)
	case 3:
		return memfd(fdkind.SealsImmutable)
	case 4:
		return memfd(0)
	case 5:
		return memfd(fdkind.SealsFixedSize)
	case 6:
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
		if err != nil {
			return -1
		}
		return fd
	case 7:
		return dup(sock) // the broker connection itself
	default:
		return dup(2) // the log pipe
	}
}

// sendDatagram sends data with descriptors of the chosen kinds on the
// broker socket, waiting out a full queue.
func sendDatagram(sock int, data, kinds []byte) error {
	var fds []int
	for _, k := range kinds {
		if fd := makeFD(k, sock); fd >= 0 {
			fds = append(fds, fd)
		}
	}
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	for i := 0; ; i++ {
		err := unix.Sendmsg(sock, data, oob, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		if !errors.Is(err, unix.EAGAIN) || i == 2000 {
			return err
		}
		time.Sleep(time.Millisecond)
	}
}

// rawIDs are the ids of raw requests: far above what the renderer's own
// Conn allocates, so they never collide with its calls.
const rawIDBase = 1 << 40

func send(ctx context.Context, s *renderer.Session, sr *wirepb.Envelope) string {
	kinds := make([]byte, min(sr.FdCount, maxSendFDs))
	for i := range kinds {
		kinds[i] = byte(sr.Id >> (8 * i))
	}
	switch int(sr.Kind) {
	case sendOpen:
		var req controlpb.OpenRequest
		if err := proto.Unmarshal(sr.Payload, &req); err != nil {
			return "error: request: " + err.Error()
		}
		_, fds, err := ipc.Call(ctx, s.Conn(), control.Open, &req)
		if err != nil {
			return "error: " + err.Error()
		}
		defer fds[0].Close()
		b := make([]byte, 16<<10)
		n, _ := fds[0].Read(b)
		return "ok:" + string(b[:n])
	case sendReady, sendReadyFD:
		var req controlpb.ReadyRequest
		if err := proto.Unmarshal(sr.Payload, &req); err != nil {
			return "error: request: " + err.Error()
		}
		var err error
		if int(sr.Kind) == sendReady {
			_, _, err = ipc.Call(ctx, s.Conn(), control.ReadyUnmonitored, &req)
		} else {
			kind := byte(0)
			if len(kinds) > 0 {
				kind = kinds[0]
			}
			fd := makeFD(kind, brokerSocket())
			f := os.NewFile(uintptr(fd), "listener?")
			defer f.Close()
			_, _, err = ipc.Call(ctx, s.Conn(), control.Ready, &req, f)
		}
		return fmt.Sprintf("ready answered: %v", err)
	case sendRaw:
		return fmt.Sprintf("sent: %v", sendDatagram(brokerSocket(), sr.Payload, kinds))
	case sendRequest:
		env := &wirepb.Envelope{Kind: wirepb.Kind_KIND_REQUEST, Id: rawIDBase + uint64(len(kinds)), Method: sr.Method, Payload: sr.Payload, FdCount: uint32(len(kinds))}
		b, err := proto.Marshal(env)
		if err != nil {
			return "error: " + err.Error()
		}
		return fmt.Sprintf("sent: %v", sendDatagram(brokerSocket(), b, kinds))
	}
	return "unknown op"
}

// hostile sends n generated messages to the broker from inside the
// sandbox, a mix a compromised renderer might try. Most are valid — Open
// calls for its own origin with hostile names, cancels for ids not in
// flight — so that sequences run deep; with a probability the seed picks
// (0 to 30%) a message is one the broker must kill it for: a forged
// origin, a second ready report, a reply nobody asked for, garbage, an
// oversized datagram, an unknown method, a lie about its descriptors, or
// descriptors of any kind it can make where none belong. Valid calls go
// through the renderer's own Conn (so the broker's answers reach it);
// the rest are raw datagrams on the same socket. It reports how many
// messages it sent before the broker cut it off. own is its origin.
func hostile(ctx context.Context, s *renderer.Session, rng *rand.Rand, n int, own string) int {
	sock := brokerSocket()
	rate := rng.IntN(31)
	for i := 0; i < n; i++ {
		if rng.IntN(100) >= rate {
			if rng.IntN(4) == 0 {
				env, _ := proto.Marshal(&wirepb.Envelope{Kind: wirepb.Kind_KIND_CANCEL, Id: rawIDBase + uint64(rng.IntN(8))})
				if sendDatagram(sock, env, nil) != nil {
					return i
				}
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, fds, err := ipc.Call(cctx, s.Conn(), control.Open, &controlpb.OpenRequest{Origin: own, Name: pick(rng, hostileNames())})
			cancel()
			for _, f := range fds {
				f.Close()
			}
			var se *ipc.StatusError
			if err != nil && !errors.As(err, &se) {
				return i
			}
			continue
		}
		var kinds []byte
		if rng.IntN(2) == 0 {
			kinds = make([]byte, 1+rng.IntN(3))
			for j := range kinds {
				kinds[j] = byte(rng.IntN(9))
			}
		}
		id := rawIDBase + uint64(rng.IntN(8))
		var env *wirepb.Envelope
		switch rng.IntN(8) {
		case 0, 1:
			// Valid on the wire, refused by the broker's handler, which
			// kills without answering: a typed call, so that nothing
			// else (our answer to fuzz.Hostile) overtakes the kill.
			if rng.IntN(2) == 0 {
				_, fds, _ := ipc.Call(ctx, s.Conn(), control.Open, &controlpb.OpenRequest{Origin: pick(rng, []string{bystanderOrigin, "", own + "/"}), Name: pick(rng, hostileNames())})
				for _, f := range fds {
					f.Close()
				}
			} else {
				ipc.Call(ctx, s.Conn(), control.ReadyUnmonitored, &controlpb.ReadyRequest{Layers: []*controlpb.Layer{{Name: "seccomp", Active: true}}})
			}
			return i + 1
		case 2:
			env = &wirepb.Envelope{Kind: wirepb.Kind_KIND_REPLY, Id: 1 << 30, StatusCode: int32(rng.IntN(16))}
		case 3:
			env = &wirepb.Envelope{Kind: wirepb.Kind_KIND_REQUEST, Id: id, Method: pick(rng, []string{"sandkit.Bind", "test.Ping", "fuzz.Send", "x"})}
		case 4:
			garbage := make([]byte, 1+rng.IntN(64))
			for j := range garbage {
				garbage[j] = byte(rng.Uint32())
			}
			if garbage[0]&7 == 2 {
				garbage[0] = 0xff // keep it undecodable
			}
			sendDatagram(sock, garbage, kinds)
			return i + 1
		case 5:
			env = &wirepb.Envelope{Kind: wirepb.Kind_KIND_REQUEST, Id: id, Method: "sandkit.Open", Payload: make([]byte, 64<<10+rng.IntN(1024))}
		case 6:
			env = &wirepb.Envelope{Kind: wirepb.Kind_KIND_REQUEST, Id: id, Method: "sandkit.Open", FdCount: uint32(len(kinds) + 1)}
		default:
			req, _ := proto.Marshal(&controlpb.OpenRequest{Origin: own, Name: "public.txt"})
			env = &wirepb.Envelope{Kind: wirepb.Kind_KIND_REQUEST, Id: id, Method: "sandkit.Open", Payload: req}
			if len(kinds) == 0 {
				kinds = []byte{byte(rng.IntN(9))}
			}
		}
		if env.FdCount == 0 {
			env.FdCount = uint32(len(kinds))
		}
		b, _ := proto.Marshal(env)
		sendDatagram(sock, b, kinds)
		return i + 1 // the broker kills it for this one
	}
	return n
}

// hostileNames are the resource names hostile renderers ask for.
func hostileNames() []string {
	return []string{"public.txt", "../secret/secret.txt", "/etc/passwd", "link", "sub/../public.txt", "fifo", ".", "", "sub/nested.txt"}
}

func pick[T any](rng *rand.Rand, xs []T) T { return xs[rng.IntN(len(xs))] }
