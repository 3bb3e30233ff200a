package ipc

import (
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/sandkit/sandkit/ipc/wirepb"
)

// Fuzz targets for the receive path. They call the same pure functions the
// read loop calls (parseDatagram, validateEnvelope, checkRequest,
// decodeReply), without a socket.

func addEnvelopeSeeds(f *testing.F) {
	for _, e := range []*wirepb.Envelope{
		{Kind: wirepb.Kind_KIND_REQUEST, Id: 1, Method: "echo", Payload: []byte{0x0a, 0x02, 'h', 'i'}},
		{Kind: wirepb.Kind_KIND_REQUEST, Id: 2, Method: "memfd", FdCount: 1, TimeoutNanos: 1e9},
		{Kind: wirepb.Kind_KIND_REPLY, Id: 3, Payload: []byte{0x0a, 0x00}, FdCount: 1},
		{Kind: wirepb.Kind_KIND_REPLY, Id: 4, StatusCode: 5, StatusMessage: "not found"},
		{Kind: wirepb.Kind_KIND_CANCEL, Id: 5},
		{Kind: wirepb.Kind_KIND_REQUEST, Id: 1, Method: "echo", StatusCode: 1},
	} {
		b, err := proto.Marshal(e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff})
}

// FuzzEnvelope checks envelope decoding and validation: never a panic, and
// whatever validates survives a marshal/unmarshal round trip unchanged.
func FuzzEnvelope(f *testing.F) {
	addEnvelopeSeeds(f)
	lim := defaultLimits()
	f.Fuzz(func(t *testing.T, data []byte) {
		var env wirepb.Envelope
		fds, perr := parseDatagram(data, nil, 0, &lim, &env, nil)
		if len(fds) != 0 {
			t.Fatalf("fds from no control data: %v", fds)
		}
		if perr != nil {
			if perr.Reason == "" {
				t.Fatal("violation without reason")
			}
			return
		}
		if env.Id == 0 || env.FdCount != 0 {
			t.Fatalf("invalid envelope accepted: %v", &env)
		}
		b, err := proto.Marshal(&env)
		if err != nil {
			t.Fatalf("re-marshal: %v", err)
		}
		var again wirepb.Envelope
		if _, perr := parseDatagram(b, nil, 0, &lim, &again, nil); perr != nil {
			t.Fatalf("re-encoded envelope rejected: %v", perr)
		}
		if !proto.Equal(&env, &again) {
			t.Fatalf("round trip changed the envelope: %v vs %v", &env, &again)
		}
	})
}

// fuzzBase makes one descriptor of each of a few kinds; each fuzz
// iteration works on fresh duplicates of them, so that nothing the harness
// does not own is ever closed.
func fuzzBase(f *testing.F) []int {
	var base []int
	for _, k := range []string{"memfd-sealed", "devnull", "readonly", "pipe", "memfd-unsealed"} {
		base = append(base, fixtures[k](f))
	}
	f.Cleanup(func() { closeFDs(base) })
	return base
}

// neverOpen is a descriptor number above any fd limit.
const neverOpen = 0x7fff0000

// remapRights rewrites, in a copy of oob, every descriptor slot of every
// SCM_RIGHTS message (walking the control data the way the kernel lays it
// out) to a fresh descriptor owned by the harness. It returns the copy and
// the slot count.
func remapRights(oob []byte, pool func() int) ([]byte, int) {
	b := append([]byte(nil), oob...)
	n := 0
	for off := 0; off+unix.SizeofCmsghdr <= len(b); {
		var l uint64
		if cmsgLenSize == 8 {
			l = binary.NativeEndian.Uint64(b[off:])
		} else {
			l = uint64(binary.NativeEndian.Uint32(b[off:]))
		}
		if l < unix.SizeofCmsghdr || l > uint64(len(b)-off) {
			break
		}
		level := int32(binary.NativeEndian.Uint32(b[off+cmsgLenSize:]))
		typ := int32(binary.NativeEndian.Uint32(b[off+cmsgLenSize+4:]))
		if level == unix.SOL_SOCKET && typ == unix.SCM_RIGHTS {
			for p := off + unix.SizeofCmsghdr; p+4 <= off+int(l); p += 4 {
				binary.NativeEndian.PutUint32(b[p:], uint32(int32(pool())))
				n++
			}
		}
		off += cmsgAlign(int(l))
	}
	return b, n
}

// FuzzDatagram drives one received datagram through everything the read
// loop does before a handler or caller sees it: control-message parsing,
// flags, envelope validation, method lookup, spec and fd kind checks,
// payload decoding. Invariants: no panic; every descriptor the parser
// reports is one of the harness's; and after the harness has closed what a
// successful receive hands over, every descriptor in the datagram is
// closed, whichever path was taken.
func FuzzDatagram(f *testing.F) {
	rights := func(n int) []byte { return unix.UnixRights(make([]int, n)...) }
	for _, s := range []struct {
		env   *wirepb.Envelope
		nfds  int
		flags int
	}{
		{&wirepb.Envelope{Kind: wirepb.Kind_KIND_REQUEST, Id: 1, Method: "memfd", FdCount: 1}, 1, 0},
		{&wirepb.Envelope{Kind: wirepb.Kind_KIND_REQUEST, Id: 1, Method: "readonly", FdCount: 1}, 1, 0},
		{&wirepb.Envelope{Kind: wirepb.Kind_KIND_REQUEST, Id: 1, Method: "echo", Payload: []byte{0x0a, 0x01, 'x'}}, 0, 0},
		{&wirepb.Envelope{Kind: wirepb.Kind_KIND_REPLY, Id: 1, FdCount: 1}, 1, 0},
		{&wirepb.Envelope{Kind: wirepb.Kind_KIND_REPLY, Id: 1, FdCount: 2}, 2, unix.MSG_CTRUNC},
		{&wirepb.Envelope{Kind: wirepb.Kind_KIND_CANCEL, Id: 1}, 0, unix.MSG_TRUNC},
	} {
		b, _ := proto.Marshal(s.env)
		var oob []byte
		if s.nfds > 0 {
			oob = rights(s.nfds)
		}
		f.Add(b, oob, s.flags)
	}
	creds := unix.UnixCredentials(&unix.Ucred{Pid: 1})
	f.Add([]byte{0x08, 0x01}, append(rights(1), creds...), 0)
	mux := testMux()
	lim := Limits{MaxDatagram: 4096, MaxFDs: 8, MaxInFlight: 4}
	replySpec := mGiveFD.spec
	base := fuzzBase(f)
	f.Fuzz(func(t *testing.T, data, oob []byte, flags int) {
		if len(oob) > 4096 {
			return
		}
		var made []int
		pool := func() int {
			if len(made) >= 32 {
				return neverOpen
			}
			fd, err := unix.FcntlInt(uintptr(base[len(made)%len(base)]), unix.F_DUPFD_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			made = append(made, fd)
			return fd
		}
		oob, _ = remapRights(oob, pool)
		owned := map[int]bool{neverOpen: true}
		for _, fd := range made {
			owned[fd] = true
		}
		var env wirepb.Envelope
		fds, perr := parseDatagram(data, oob, flags, &lim, &env, nil)
		for _, fd := range fds {
			if !owned[fd] {
				closeFDs(made)
				t.Fatalf("parser reported descriptor %d not in the datagram", fd)
			}
		}
		if perr == nil {
			switch env.Kind {
			case wirepb.Kind_KIND_REQUEST:
				var e *muxEntry
				e, _, perr = checkRequest(&env, fds, mux, &lim, env.Id == 42, int(env.Id%8))
				if perr == nil {
					if e.spec.Name != env.Method {
						t.Fatalf("routed %q to %q", env.Method, e.spec.Name)
					}
					closeFDs(fds) // as the handler would
				}
			case wirepb.Kind_KIND_REPLY:
				var res callResult
				res, perr = decodeReply(&env, fds, &replySpec, mGiveFD.respType, &lim)
				if perr == nil {
					if res.err == nil && len(res.fds) != 1 {
						t.Fatalf("reply accepted with %d fds", len(res.fds))
					}
					closeFiles(res.fds)
				}
			case wirepb.Kind_KIND_CANCEL:
				if len(fds) != 0 {
					t.Fatal("cancel accepted with fds")
				}
			}
		}
		if perr != nil {
			closeFDs(fds) // what handleDatagram does
		}
		// Descriptors in the datagram the parser did not report (none
		// should exist) would show up here as still open.
		reported := make(map[int]bool, len(fds))
		for _, fd := range fds {
			reported[fd] = true
		}
		for _, fd := range made {
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
				if !reported[fd] && perr == nil {
					closeFDs(made)
					t.Fatalf("descriptor %d in the datagram was neither reported nor rejected", fd)
				}
				unix.Close(fd)
				if reported[fd] {
					t.Fatalf("descriptor %d leaked (violation %v)", fd, perr)
				}
			}
		}
	})
}
