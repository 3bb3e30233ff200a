package fuzz

import (
	"context"
	"os"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sandkit/sandkit/ipc"
	"github.com/sandkit/sandkit/ipc/wirepb"
)

// Methods the broker-side Conn of the in-process targets serves. They
// cover the spec features the receive path enforces: payload limits, fd
// counts and each memfd/file kind, and a handler that stays in flight
// until cancelled (for duplicate ids, cancels and the in-flight limit).
var (
	mEcho = ipc.NewMethod[*wrapperspb.BytesValue, *wrapperspb.BytesValue](ipc.MethodSpec{
		Name: "fuzz.Echo", MaxRequestBytes: 512, MaxResponseBytes: 512,
	})
	mSealed = ipc.NewMethod[*wrapperspb.StringValue, *emptypb.Empty](ipc.MethodSpec{
		Name: "fuzz.Sealed", MaxRequestBytes: 128, RequestFDs: []ipc.FDKind{ipc.SealedMemfd},
	})
	mPair = ipc.NewMethod[*emptypb.Empty, *emptypb.Empty](ipc.MethodSpec{
		Name: "fuzz.Pair", RequestFDs: []ipc.FDKind{ipc.ReadOnlyFile, ipc.SharedRegion},
	})
	mBlock = ipc.NewMethod[*emptypb.Empty, *emptypb.Empty](ipc.MethodSpec{
		Name: "fuzz.Block",
	})
	// Methods the broker side calls on the hostile peer, whose replies
	// the receive path must check.
	mPeerPlain = ipc.NewMethod[*wrapperspb.StringValue, *wrapperspb.StringValue](ipc.MethodSpec{
		Name: "peer.Plain", MaxRequestBytes: 64, MaxResponseBytes: 64,
	})
	mPeerGive = ipc.NewMethod[*emptypb.Empty, *wrapperspb.UInt64Value](ipc.MethodSpec{
		Name: "peer.Give", ResponseFDs: []ipc.FDKind{ipc.SealedMemfd},
	})
	mPeerSync = ipc.NewMethod[*emptypb.Empty, *emptypb.Empty](ipc.MethodSpec{
		Name: "peer.Sync",
	})
)

// methodInfo is what the oracle needs of a method: its spec and how to
// decode its request and response payloads.
type methodInfo struct {
	spec    ipc.MethodSpec
	newReq  func() proto.Message
	newResp func() proto.Message
}

func info[Req, Resp proto.Message](m *ipc.Method[Req, Resp]) methodInfo {
	var req Req
	var resp Resp
	return methodInfo{
		spec:    m.Spec(),
		newReq:  func() proto.Message { return req.ProtoReflect().New().Interface() },
		newResp: func() proto.Message { return resp.ProtoReflect().New().Interface() },
	}
}

// served are the methods of serverMux, by name.
func served() map[string]methodInfo {
	return map[string]methodInfo{
		"fuzz.Echo":   info(mEcho),
		"fuzz.Sealed": info(mSealed),
		"fuzz.Pair":   info(mPair),
		"fuzz.Block":  info(mBlock),
	}
}

// serverMux serves the fuzz methods. Handlers own and close their fds, as
// the ipc contract requires; a leak check would catch them otherwise.
func serverMux() *ipc.Mux {
	mux := ipc.NewMux()
	closeFiles := func(fds []*os.File) {
		for _, f := range fds {
			f.Close()
		}
	}
	ipc.Handle(mux, mEcho, func(_ context.Context, req *wrapperspb.BytesValue, _ []*os.File) (*wrapperspb.BytesValue, []*os.File, error) {
		return req, nil, nil
	})
	ipc.Handle(mux, mSealed, func(_ context.Context, _ *wrapperspb.StringValue, fds []*os.File) (*emptypb.Empty, []*os.File, error) {
		closeFiles(fds)
		return &emptypb.Empty{}, nil, nil
	})
	ipc.Handle(mux, mPair, func(_ context.Context, _ *emptypb.Empty, fds []*os.File) (*emptypb.Empty, []*os.File, error) {
		closeFiles(fds)
		return &emptypb.Empty{}, nil, nil
	})
	ipc.Handle(mux, mBlock, func(ctx context.Context, _ *emptypb.Empty, _ []*os.File) (*emptypb.Empty, []*os.File, error) {
		<-ctx.Done()
		return nil, nil, ctx.Err()
	})
	return mux
}

// The in-process Conns' limits are small so that inputs reach every
// limit cheaply.
const (
	testMaxDatagram = 2048
	testMaxFDs      = 4
	testMaxInFlight = 4
)

func testLimits() ipc.Limits {
	return ipc.Limits{MaxDatagram: testMaxDatagram, MaxFDs: testMaxFDs, MaxInFlight: testMaxInFlight}
}

// verdict is what the model predicts for one datagram.
type verdict struct {
	violation bool
	env       *wirepb.Envelope // decoded envelope, nil if undecodable
	// For an accepted request: the handler replies at once (wait for
	// it), or blocks until cancelled.
	replies, blocks bool
	// uncertain: the outcome depends on timing the model does not
	// track (a blocked request with a deadline); do not assert it.
	uncertain bool
}

// connModel is an independent model of what a Conn must accept from its
// peer, written from the protocol's documentation (ipc/wirepb/wire.proto,
// ipc.Reason), not from its code. It tracks the state that decides
// validity: the peer's requests in flight and our calls awaiting replies.
type connModel struct {
	lim      ipc.Limits
	methods  map[string]methodInfo
	serving  map[uint64]bool       // peer requests in flight (blocked handlers)
	pending  map[uint64]methodInfo // our calls awaiting the peer's reply
	deadline map[uint64]bool       // blocked requests with a deadline
	// Cancels must match work (ipc.ReasonUnexpectedCancel): one per
	// request in flight, or a late one that crossed a reply, at most one
	// per reply sent for a request not cancelled (late, capped at
	// MaxInFlight), and never above the highest request id accepted.
	maxReqID  uint64
	late      int
	cancelled map[uint64]bool
}

func newModel() *connModel {
	return &connModel{lim: testLimits(), methods: served(), serving: map[uint64]bool{},
		pending: map[uint64]methodInfo{}, deadline: map[uint64]bool{}, cancelled: map[uint64]bool{}}
}

func payloadLimit(spec int, lim ipc.Limits) int {
	if spec == 0 || spec > lim.MaxDatagram {
		return lim.MaxDatagram
	}
	return spec
}

// fits reports whether the attached descriptors (pool indexes) match kinds.
func fitsKinds(pool *fdPool, idx []int, kinds []ipc.FDKind) bool {
	if len(idx) != len(kinds) {
		return false
	}
	for i, j := range idx {
		if !pool.fits[j][kinds[i]] {
			return false
		}
	}
	return true
}

// predict says what the Conn must do with data and the descriptors idx,
// and updates the model's state as the Conn would.
func (m *connModel) predict(data []byte, pool *fdPool, idx []int) verdict {
	bad := verdict{violation: true}
	n := len(idx)
	if len(data) > m.lim.MaxDatagram || n > m.lim.MaxFDs || (len(data) == 0 && n == 0) {
		return bad
	}
	env := &wirepb.Envelope{}
	if err := proto.Unmarshal(data, env); err != nil {
		return bad
	}
	bad.env = env
	if len(env.ProtoReflect().GetUnknown()) != 0 || int(env.FdCount) != n || env.FdCount != uint32(n) || env.Id == 0 {
		return bad
	}
	switch env.Kind {
	case wirepb.Kind_KIND_REQUEST:
		if env.Method == "" || len(env.Method) > 256 || !utf8.ValidString(env.Method) ||
			env.StatusCode != 0 || env.StatusMessage != "" || env.TimeoutNanos < 0 {
			return bad
		}
		mi, ok := m.methods[env.Method]
		if !ok || m.serving[env.Id] || len(m.serving) >= m.lim.MaxInFlight ||
			len(env.Payload) > payloadLimit(mi.spec.MaxRequestBytes, m.lim) ||
			!fitsKinds(pool, idx, mi.spec.RequestFDs) ||
			proto.Unmarshal(env.Payload, mi.newReq()) != nil {
			if m.deadline[env.Id] || (len(m.deadline) > 0 && len(m.serving) >= m.lim.MaxInFlight) {
				return verdict{env: env, uncertain: true}
			}
			return bad
		}
		m.maxReqID = max(m.maxReqID, env.Id)
		if env.Method == "fuzz.Block" {
			m.serving[env.Id] = true
			if env.TimeoutNanos > 0 {
				m.deadline[env.Id] = true
			}
			return verdict{env: env, blocks: true}
		}
		return verdict{env: env, replies: true}
	case wirepb.Kind_KIND_REPLY:
		if env.Method != "" || env.TimeoutNanos != 0 ||
			(env.StatusCode == 0 && env.StatusMessage != "") ||
			(env.StatusCode != 0 && (env.StatusCode < 1 || env.StatusCode > 14 || len(env.Payload) != 0 || n != 0)) {
			return bad
		}
		mi, ok := m.pending[env.Id]
		if !ok {
			return bad
		}
		delete(m.pending, env.Id)
		if env.StatusCode != 0 {
			return verdict{env: env}
		}
		if len(env.Payload) > payloadLimit(mi.spec.MaxResponseBytes, m.lim) ||
			!fitsKinds(pool, idx, mi.spec.ResponseFDs) ||
			proto.Unmarshal(env.Payload, mi.newResp()) != nil {
			return bad
		}
		return verdict{env: env}
	case wirepb.Kind_KIND_CANCEL:
		if n != 0 || env.Method != "" || len(env.Payload) != 0 || env.TimeoutNanos != 0 ||
			env.StatusCode != 0 || env.StatusMessage != "" {
			return bad
		}
		if m.serving[env.Id] {
			// The handler returns and replies "canceled".
			delete(m.serving, env.Id)
			m.cancelled[env.Id] = true
			if m.deadline[env.Id] {
				delete(m.deadline, env.Id)
				return verdict{env: env, uncertain: true}
			}
			return verdict{env: env, replies: true}
		}
		switch {
		case env.Id > m.maxReqID:
			return bad
		case m.cancelled[env.Id] && m.late > 0:
			// A second cancel: refused while its reply is unsent, a
			// late cancel once it is.
			return verdict{env: env, uncertain: true}
		case m.cancelled[env.Id] || m.late == 0:
			return bad
		}
		m.late--
		return verdict{env: env}
	}
	return bad
}

// replied records a reply the Conn sent: one more late cancel allowed,
// unless the request was cancelled.
func (m *connModel) replied(id uint64) {
	if !m.cancelled[id] {
		m.late = min(m.late+1, m.lim.MaxInFlight)
	}
}
