package fuzz

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sandkit/sandkit/ipc"
	"github.com/sandkit/sandkit/ipc/wirepb"
)

func marshal(tb testing.TB, m proto.Message) []byte {
	tb.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// Pool indexes (see newFDPool) used by the seeds.
const (
	fdDevNull        = 0
	fdPipeRead       = 1
	fdMemfdSealed    = 3
	fdMemfdUnsealed  = 4
	fdMemfdFixedSize = 5
	fdDirectory      = 8
	fdFileReadOnly   = 9
)

// FuzzEnvelope sends one raw datagram, with descriptors of the harness's
// choosing attached, to a fresh broker-side ipc.Conn and checks it against
// connModel: an invalid datagram kills the Conn with an error matching
// ipc.ErrProtocol, a valid one leaves it alive and is answered, and once
// the Conn is closed no descriptor (attached ones included) and no
// goroutine is left behind.
func FuzzEnvelope(f *testing.F) {
	req := func(id uint64, method string, payload []byte, nfds uint32) []byte {
		return marshal(f, &wirepb.Envelope{Kind: wirepb.Kind_KIND_REQUEST, Id: id, Method: method, Payload: payload, FdCount: nfds})
	}
	echo := marshal(f, wrapperspb.Bytes([]byte("hello")))
	f.Add(req(1, "fuzz.Echo", echo, 0), []byte{})
	f.Add(req(7, "fuzz.Echo", echo, 0), []byte{fdDevNull})
	f.Add(req(2, "fuzz.Sealed", marshal(f, wrapperspb.String("s")), 1), []byte{fdMemfdSealed})
	f.Add(req(2, "fuzz.Sealed", nil, 1), []byte{fdMemfdUnsealed})
	f.Add(req(3, "fuzz.Pair", nil, 2), []byte{fdFileReadOnly, fdMemfdFixedSize})
	f.Add(req(3, "fuzz.Pair", nil, 2), []byte{fdMemfdFixedSize, fdFileReadOnly})
	f.Add(req(4, "fuzz.Block", nil, 0), []byte{})
	f.Add(req(5, "no.Such", nil, 0), []byte{})
	f.Add(marshal(f, &wirepb.Envelope{Kind: wirepb.Kind_KIND_CANCEL, Id: 9}), []byte{})
	f.Add(marshal(f, &wirepb.Envelope{Kind: wirepb.Kind_KIND_REPLY, Id: 1}), []byte{})
	f.Add(marshal(f, &wirepb.Envelope{Kind: wirepb.Kind_KIND_REPLY, Id: 1, StatusCode: 5, StatusMessage: "nope"}), []byte{})
	f.Add(marshal(f, &wirepb.Envelope{Kind: wirepb.Kind_KIND_REPLY, Id: 1, FdCount: 1}), []byte{fdDirectory})
	f.Add(req(6, "fuzz.Echo", make([]byte, 600), 0), []byte{})
	f.Add([]byte{}, []byte{})
	f.Add([]byte{}, []byte{fdPipeRead})
	f.Add([]byte{0xff, 0xff, 0xff}, []byte{0, 1, 2, 3, 4, 5, 6})
	pool := newFDPool(f)
	f.Fuzz(func(t *testing.T, data, sel []byte) {
		check := noLeaks(t)
		p := newRawPeer(t, pool)
		p.step(data, sel)
		p.close()
		check()
	})
}

// reader hands out the bytes of a fuzz program; past the end it yields
// zeros, so every program decodes.
type reader struct{ b []byte }

func (r *reader) byte() byte {
	if len(r.b) == 0 {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) bytes(n int) []byte {
	n = min(n, len(r.b))
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

// Operations of a FuzzStatefulConn program, one byte each (modulo
// opCount), followed by their operands.
const (
	opEcho       = iota // id, payload length, payload
	opBlock             // id: a request that stays in flight until cancelled
	opCancel            // id
	opServerCall        // the broker side calls the peer (give: reply carries a memfd)
	opReply             // which pending call (or an unknown id), status, payload, fds
	opRaw               // length, bytes: any datagram
	opOversized         // extra bytes past MaxDatagram
	opFDRequest         // Sealed or Pair, with chosen descriptors
	opMutated           // a valid request with one field broken
	opRawFDs            // length, bytes, fd count, fds
	opCount
)

// maxOps bounds a program so that one input stays cheap.
const maxOps = 48

// FuzzStatefulConn runs a program of messages — valid calls, invalid
// envelopes, replies to unknown ids, cancels, oversized datagrams,
// duplicate ids, descriptors of every kind — against one broker-side
// Conn, checking each step against connModel, while a second, independent
// Conn pair lives alongside. After each input: the offending peer was cut
// off with ErrProtocol, the other pair still round-trips a call, and no
// descriptor or goroutine leaked.
func FuzzStatefulConn(f *testing.F) {
	f.Add([]byte{opEcho, 1, 3, 'a', 'b', 'c', opBlock, 2, opCancel, 0x80, opEcho, 3, 0})
	f.Add([]byte{opBlock, 1, opBlock, 0x80, opEcho, 5, 0})                                                                    // duplicate id
	f.Add([]byte{opBlock, 1, opBlock, 2, opBlock, 3, opBlock, 4, opEcho, 5, 0})                                               // in-flight limit
	f.Add([]byte{opServerCall, 0, opReply, 0, 0, 2, 0x0a, 0, opEcho, 1, 0})                                                   // valid reply
	f.Add([]byte{opServerCall, 1, opReply, 0, 0, 0, 1, fdMemfdSealed, opServerCall, 1, opReply, 0, 0, 0, 1, fdMemfdUnsealed}) // memfd replies
	f.Add([]byte{opServerCall, 0, opReply, 0, 5, 0, opReply, 0xff, 0, 0})                                                     // error reply, then unknown id
	f.Add([]byte{opFDRequest, 0, 1, fdMemfdSealed, opFDRequest, 1, 2, fdFileReadOnly, fdMemfdFixedSize})
	f.Add([]byte{opOversized, 1})
	f.Add([]byte{opMutated, 3, opEcho, 1, 0})
	f.Add([]byte{opRawFDs, 2, 0x08, 0x03, 3, 0, 1, 2})
	f.Add([]byte{opCancel, 7, opEcho, 7, 0, opCancel, 7})
	f.Add([]byte{opBlock, 1, opServerCall, 0, opCancel, 0x80, opReply, 0, 0, 0, opEcho, 9, 1, 'x'})
	pool := newFDPool(f)
	// The bystander: a Conn pair the hostile peer never touches, created
	// once per fuzz process, which must keep working whatever happens.
	byA, byB, err := ipc.Pair(ipc.WithMux(serverMux()), ipc.WithLimits(testLimits()))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { byA.Close(); byB.Close() })
	ping := func(tb testing.TB) {
		ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
		defer cancel()
		resp, _, err := ipc.Call(ctx, byA, mEcho, wrapperspb.Bytes([]byte("still here")))
		if err != nil || string(resp.GetValue()) != "still here" {
			tb.Fatalf("the bystander Conn broke: %v", err)
		}
	}
	// The first call leaves an idle handler goroutine on byB for good;
	// make it before the leak checks take their baseline.
	ping(f)
	f.Fuzz(func(t *testing.T, prog []byte) {
		check := noLeaks(t)
		p := newRawPeer(t, pool)
		run(t, p, &reader{prog})
		p.close()
		ping(t)
		check()
	})
}

// run executes a program on p until it ends or the Conn is dead.
func run(t *testing.T, p *rawPeer, r *reader) {
	for i := 0; i < maxOps && len(r.b) > 0 && !p.dead; i++ {
		op := int(r.byte()) % opCount
		switch op {
		case opEcho:
			id := p.pickID(r.byte())
			payload := marshal(t, wrapperspb.Bytes(r.bytes(int(r.byte()%64))))
			env := &wirepb.Envelope{Kind: wirepb.Kind_KIND_REQUEST, Id: id, Method: "fuzz.Echo", Payload: payload}
			if r.byte()&1 == 1 {
				env.TimeoutNanos = int64(time.Second)
			}
			p.step(marshal(t, env), nil)
		case opBlock:
			p.step(marshal(t, &wirepb.Envelope{Kind: wirepb.Kind_KIND_REQUEST, Id: p.pickID(r.byte()), Method: "fuzz.Block"}), nil)
		case opCancel:
			p.step(marshal(t, &wirepb.Envelope{Kind: wirepb.Kind_KIND_CANCEL, Id: p.pickID(r.byte())}), nil)
		case opServerCall:
			p.serverCall(r.byte()&1 == 1)
		case opReply:
			pend := p.pendingIDs()
			sel := int(r.byte())
			id := uint64(1000 + sel)
			if sel < len(pend) {
				id = pend[sel]
			}
			env := &wirepb.Envelope{Kind: wirepb.Kind_KIND_REPLY, Id: id}
			if code := r.byte() % 16; code != 0 {
				env.StatusCode, env.StatusMessage = int32(code), "failed"
			}
			env.Payload = r.bytes(int(r.byte() % 8))
			fds := r.bytes(int(r.byte() % 3))
			env.FdCount = uint32(len(fds))
			p.step(marshal(t, env), fds)
		case opRaw:
			p.step(r.bytes(int(r.byte())), nil)
		case opOversized:
			payload := marshal(t, wrapperspb.Bytes(make([]byte, testMaxDatagram+int(r.byte()))))
			p.step(marshal(t, &wirepb.Envelope{Kind: wirepb.Kind_KIND_REQUEST, Id: p.pickID(0), Method: "fuzz.Echo", Payload: payload}), nil)
		case opFDRequest:
			method := "fuzz.Sealed"
			if r.byte()&1 == 1 {
				method = "fuzz.Pair"
			}
			fds := r.bytes(int(r.byte() % 4))
			p.step(marshal(t, &wirepb.Envelope{Kind: wirepb.Kind_KIND_REQUEST, Id: p.pickID(r.byte()), Method: method, FdCount: uint32(len(fds))}), fds)
		case opMutated:
			env := &wirepb.Envelope{Kind: wirepb.Kind_KIND_REQUEST, Id: p.pickID(0), Method: "fuzz.Echo"}
			switch r.byte() % 8 {
			case 0:
				env.Kind = 0
			case 1:
				env.Id = 0
			case 2:
				env.StatusCode = 3
			case 3:
				env.TimeoutNanos = -1
			case 4:
				env.FdCount = 1
			case 5:
				env.Method = string(make([]byte, 257))
			case 6:
				env.Payload = []byte{0xff}
			case 7:
				env.Kind = wirepb.Kind(42)
			}
			p.step(marshal(t, env), nil)
		case opRawFDs:
			data := r.bytes(int(r.byte()))
			p.step(data, r.bytes(int(r.byte()%8)))
		}
	}
}

// pickID chooses a request id: with the high bit set, one already in
// flight (a duplicate); otherwise a fresh one.
func (p *rawPeer) pickID(b byte) uint64 {
	if ids := p.servingIDs(); b&0x80 != 0 && len(ids) > 0 {
		return ids[int(b&0x7f)%len(ids)]
	}
	p.nextID++
	return p.nextID
}
