package fuzz

import (
	"context"
	"errors"
	"maps"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sandkit/sandkit/ipc"
	"github.com/sandkit/sandkit/ipc/wirepb"
)

// rawPeer is a hostile peer speaking raw datagrams (unix.Sendmsg) to a
// real broker-side ipc.Conn over ipc.SocketPair, and the bookkeeping to
// check that Conn: it predicts each datagram's fate with connModel and
// compares it with what the Conn did.
type rawPeer struct {
	tb     testing.TB
	pool   *fdPool
	model  *connModel
	raw    *os.File // our end, blocking; used through fd only
	fd     int
	server *ipc.Conn
	eof    bool
	dead   bool // the model says the Conn is dead (a predicted or observed violation)

	replies    map[uint64]*wirepb.Envelope // replies the server sent us, by id
	serverReqs []serverReq                 // the server's requests we have not answered
	nextID     uint64
	syncID     uint64         // the pending peer.Sync call, 0 if none
	syncRes    chan error     // its result
	untracked  bool           // an uncertain verdict: stop asserting the model
	calls      sync.WaitGroup // the server's calls to us, in the background
	rbuf, roob []byte
}

type serverReq struct {
	id     uint64
	method string
}

func newRawPeer(tb testing.TB, pool *fdPool) *rawPeer {
	tb.Helper()
	a, b, err := ipc.SocketPair()
	if err != nil {
		tb.Fatal(err)
	}
	server, err := ipc.NewConn(b, ipc.WithMux(serverMux()), ipc.WithLimits(testLimits()))
	if err != nil {
		a.Close()
		tb.Fatal(err)
	}
	return &rawPeer{
		tb: tb, pool: pool, model: newModel(), raw: a, fd: int(a.Fd()), server: server,
		replies: map[uint64]*wirepb.Envelope{},
		rbuf:    make([]byte, 2*testMaxDatagram), roob: make([]byte, unix.CmsgSpace(4*64)),
	}
}

// close kills the server Conn, waits for its background calls and closes
// our end.
func (p *rawPeer) close() {
	p.server.Close()
	p.calls.Wait()
	p.raw.Close()
}

// sendRaw sends data with duplicates of the pool descriptors sel chooses.
// A send the kernel refuses (the Conn already closed its end) is fine.
func (p *rawPeer) sendRaw(data []byte, sel []byte) []int {
	fds, idx := p.pool.dup(p.tb, sel, testMaxFDs+2)
	defer closeAll(fds)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := unix.Sendmsg(p.fd, data, oob, nil, unix.MSG_NOSIGNAL); err != nil &&
		!errors.Is(err, unix.EPIPE) && !errors.Is(err, unix.ECONNRESET) {
		p.tb.Fatalf("sendmsg of %d bytes, %d fds: %v", len(data), len(fds), err)
	}
	return idx
}

func (p *rawPeer) sendEnv(env *wirepb.Envelope, sel []byte) []int {
	b, err := proto.Marshal(env)
	if err != nil {
		p.tb.Fatal(err)
	}
	return p.sendRaw(b, sel)
}

// pump receives one datagram within timeout and files it. It reports
// false on timeout.
func (p *rawPeer) pump(timeout time.Duration) bool {
	pfd := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
	n, err := unix.Poll(pfd, int(timeout/time.Millisecond))
	if errors.Is(err, unix.EINTR) {
		return true
	}
	if err != nil {
		p.tb.Fatalf("poll: %v", err)
	}
	if n == 0 {
		return false
	}
	nb, noob, _, _, err := unix.Recvmsg(p.fd, p.rbuf, p.roob, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
	if errors.Is(err, unix.EAGAIN) {
		return true
	}
	if err != nil || (nb == 0 && noob == 0) {
		p.eof = true
		return true
	}
	if noob > 0 {
		msgs, err := unix.ParseSocketControlMessage(p.roob[:noob])
		if err != nil {
			p.tb.Fatalf("control data from the Conn: %v", err)
		}
		for _, m := range msgs {
			fds, _ := unix.ParseUnixRights(&m)
			closeAll(fds)
		}
		p.tb.Fatalf("the Conn sent descriptors nobody asked for")
	}
	env := &wirepb.Envelope{}
	if err := proto.Unmarshal(p.rbuf[:nb], env); err != nil {
		p.tb.Fatalf("the Conn sent an undecodable envelope: %v", err)
	}
	switch env.Kind {
	case wirepb.Kind_KIND_REPLY:
		p.replies[env.Id] = env
		p.model.replied(env.Id)
		delete(p.model.serving, env.Id)
		delete(p.model.deadline, env.Id)
	case wirepb.Kind_KIND_REQUEST:
		if env.Method == "peer.Sync" {
			p.syncID = env.Id
			return true
		}
		p.serverReqs = append(p.serverReqs, serverReq{env.Id, env.Method})
	case wirepb.Kind_KIND_CANCEL:
		// The server gave up on a call of its own; nothing to do.
	default:
		p.tb.Fatalf("the Conn sent kind %v", env.Kind)
	}
	return true
}

// await pumps until cond holds or the Conn hung up; it reports cond.
func (p *rawPeer) await(what string, cond func() bool) bool {
	deadline := time.Now().Add(settleTimeout)
	for !cond() && !p.eof {
		if !p.pump(100*time.Millisecond) && time.Now().After(deadline) {
			p.tb.Fatalf("timed out waiting for %s", what)
		}
	}
	return cond()
}

// armSync makes the server call us (peer.Sync) and waits until the
// request is here, so the call is pending before the datagram under test
// is sent: a reply in that datagram may then answer it, deterministically.
func (p *rawPeer) armSync() {
	p.syncID, p.syncRes = 0, make(chan error, 1)
	if p.eof {
		p.syncRes <- ipc.ErrPeerClosed
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	p.calls.Add(1)
	go func() {
		defer p.calls.Done()
		defer cancel()
		_, _, err := ipc.Call(ctx, p.server, mPeerSync, &emptypb.Empty{})
		p.syncRes <- err
	}()
	if p.await("the sync request", func() bool { return p.syncID != 0 }) {
		p.model.pending[p.syncID] = info(mPeerSync)
	}
}

// finishSync answers the sync call (unless the datagram under test did)
// and reports whether the Conn is alive once it has handled everything
// sent before: its read loop takes our reply only after all of it.
func (p *rawPeer) finishSync() bool {
	if p.syncID != 0 {
		if _, ok := p.model.pending[p.syncID]; ok {
			delete(p.model.pending, p.syncID)
			p.sendEnv(&wirepb.Envelope{Kind: wirepb.Kind_KIND_REPLY, Id: p.syncID}, nil)
		}
	}
	for {
		select {
		case err := <-p.syncRes:
			var se *ipc.StatusError
			if err == nil || errors.As(err, &se) {
				return true
			}
			p.await("hang-up", func() bool { return false })
			return false
		default:
		}
		p.pump(10 * time.Millisecond)
	}
}

// serverCall makes the server call us (give: a method whose reply
// carries a sealed memfd) and records the call as pending in the model.
func (p *rawPeer) serverCall(give bool) {
	if len(p.model.pending) >= testMaxInFlight-1 || p.dead || p.eof {
		return // keep a slot for sync
	}
	n := len(p.serverReqs)
	p.calls.Add(1)
	go func() {
		defer p.calls.Done()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if give {
			_, fds, _ := ipc.Call(ctx, p.server, mPeerGive, &emptypb.Empty{})
			for _, f := range fds {
				f.Close()
			}
			return
		}
		_, _, _ = ipc.Call(ctx, p.server, mPeerPlain, wrapperspb.String("q"))
	}()
	if !p.await("the server's request", func() bool { return len(p.serverReqs) > n }) {
		return
	}
	r := p.serverReqs[n]
	if give {
		p.model.pending[r.id] = info(mPeerGive)
	} else {
		p.model.pending[r.id] = info(mPeerPlain)
	}
}

// pendingIDs returns the server's calls awaiting our reply, in order.
func (p *rawPeer) pendingIDs() []uint64 { return slices.Sorted(maps.Keys(p.model.pending)) }

// servingIDs returns our requests in flight at the server, in order.
func (p *rawPeer) servingIDs() []uint64 { return slices.Sorted(maps.Keys(p.model.serving)) }

// step sends one datagram, then checks the Conn against the model: a
// violation kills it with an error matching ipc.ErrProtocol, anything
// valid leaves it alive, and a request is answered.
func (p *rawPeer) step(data, sel []byte) {
	p.tb.Helper()
	if p.dead {
		return
	}
	if len(data) > 4*testMaxDatagram {
		data = data[:4*testMaxDatagram]
	}
	idx := p.pool.pick(sel, testMaxFDs+2)
	p.armSync()
	v := p.model.predict(data, p.pool, idx)
	p.sendRaw(data, sel)
	alive := p.finishSync()
	if v.uncertain {
		p.untracked = true
	}
	if !p.untracked {
		if v.violation && alive {
			p.tb.Fatalf("the Conn accepted an invalid datagram %x (fds %v): %v", data, p.names(idx), v.env)
		}
		if !v.violation && !alive {
			p.tb.Fatalf("the Conn died on a valid datagram %x (fds %v): %v: %v", data, p.names(idx), v.env, p.server.Err())
		}
	}
	if !alive {
		p.dead = true
		<-p.server.Done()
		if err := p.server.Err(); !errors.Is(err, ipc.ErrProtocol) {
			p.tb.Fatalf("the Conn died with %v, want a protocol violation", err)
		}
		var perr *ipc.ProtocolError
		if !errors.As(p.server.Err(), &perr) || perr.Reason == "" {
			p.tb.Fatalf("violation without a reason: %v", p.server.Err())
		}
		return
	}
	if err := p.server.Err(); err != nil {
		p.tb.Fatalf("Conn answered sync but reports %v", err)
	}
	if v.replies && v.env != nil {
		id := v.env.Id
		if !p.await("the reply", func() bool { return p.replies[id] != nil }) {
			return
		}
		p.checkReply(v.env, p.replies[id])
		delete(p.replies, id)
	}
}

// checkReply checks what the server answered to an accepted request.
func (p *rawPeer) checkReply(req, rep *wirepb.Envelope) {
	switch {
	case req.Kind == wirepb.Kind_KIND_CANCEL:
		if ipc.Code(rep.StatusCode) != ipc.CodeCanceled {
			p.tb.Fatalf("cancelled request %d answered %v", req.Id, rep)
		}
	case req.Method == "fuzz.Echo" && rep.StatusCode == 0:
		var in, out wrapperspb.BytesValue
		if proto.Unmarshal(req.Payload, &in) != nil || proto.Unmarshal(rep.Payload, &out) != nil || !proto.Equal(&in, &out) {
			p.tb.Fatalf("echo of %x came back as %x", req.Payload, rep.Payload)
		}
	case rep.StatusCode != 0 && req.Method != "fuzz.Echo":
		p.tb.Fatalf("request %v failed: %v", req, rep)
	}
}

func (p *rawPeer) names(idx []int) []string {
	var out []string
	for _, i := range idx {
		out = append(out, p.pool.names[i])
	}
	return out
}
