package ipc

import (
	"encoding/binary"
	"unicode/utf8"
	"unsafe"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/sandkit/sandkit/ipc/wirepb"
)

// This file is the pure part of the receive path: it turns the bytes,
// control bytes and flags returned by one recvmsg(2) into a validated
// envelope and a list of received descriptors, without any syscall. It is
// what the fuzz targets exercise.
//
// Invariant: parseControl and parseDatagram return every descriptor number
// they found in SCM_RIGHTS control data, even when they also report a
// violation, so that the caller can close all of them.

// cmsgLenSize is the size of the cmsg_len field (size_t on Linux).
const cmsgLenSize = int(unsafe.Sizeof(unix.Cmsghdr{}.Len))

// cmsgAlign rounds n up to the alignment of control messages.
func cmsgAlign(n int) int {
	const a = int(unsafe.Sizeof(uintptr(0)))
	return (n + a - 1) &^ (a - 1)
}

// parseControl appends to fds every descriptor carried by SCM_RIGHTS
// messages in oob. Anything else in oob (other levels or types, malformed
// headers, partial descriptors) is a ReasonBadControl violation; parsing
// continues past a foreign but well-formed message so that descriptors
// after it are still collected for closing.
func parseControl(oob []byte, fds []int) ([]int, *ProtocolError) {
	var perr *ProtocolError
	for len(oob) > 0 {
		if len(oob) < unix.SizeofCmsghdr {
			return fds, violation(ReasonBadControl, "%d trailing bytes of control data", len(oob))
		}
		var l uint64
		if cmsgLenSize == 8 {
			l = binary.NativeEndian.Uint64(oob)
		} else {
			l = uint64(binary.NativeEndian.Uint32(oob))
		}
		level := int32(binary.NativeEndian.Uint32(oob[cmsgLenSize:]))
		typ := int32(binary.NativeEndian.Uint32(oob[cmsgLenSize+4:]))
		if l < unix.SizeofCmsghdr || l > uint64(len(oob)) {
			return fds, violation(ReasonBadControl, "control message length %d out of range", l)
		}
		data := oob[unix.SizeofCmsghdr:l]
		if level == unix.SOL_SOCKET && typ == unix.SCM_RIGHTS {
			for len(data) >= 4 {
				fd := int32(binary.NativeEndian.Uint32(data))
				data = data[4:]
				if fd < 0 {
					if perr == nil {
						perr = violation(ReasonBadControl, "negative descriptor %d", fd)
					}
					continue
				}
				fds = append(fds, int(fd))
			}
			if len(data) != 0 && perr == nil {
				perr = violation(ReasonBadControl, "SCM_RIGHTS data of %d stray bytes", len(data))
			}
		} else if perr == nil {
			perr = violation(ReasonBadControl, "control message level %d type %d", level, typ)
		}
		next := cmsgAlign(int(l))
		if next >= len(oob) {
			break
		}
		oob = oob[next:]
	}
	return fds, perr
}

// parseDatagram decodes one received datagram into env (which it resets)
// and validates the envelope on its own, without knowing any method.
// data is what recvmsg returned (at most MaxDatagram+1 bytes), flags its
// msg_flags. fds must be an empty slice to append to.
func parseDatagram(data, oob []byte, flags int, lim *Limits, env *wirepb.Envelope, fds []int) ([]int, *ProtocolError) {
	fds, cerr := parseControl(oob, fds)
	switch {
	case flags&unix.MSG_TRUNC != 0 || len(data) > lim.MaxDatagram:
		return fds, violation(ReasonTruncated, "datagram larger than %d bytes", lim.MaxDatagram)
	case flags&unix.MSG_CTRUNC != 0:
		return fds, violation(ReasonCtrlTruncated, "more than %d descriptors attached", lim.MaxFDs+1)
	case cerr != nil:
		return fds, cerr
	case len(fds) > lim.MaxFDs:
		return fds, violation(ReasonFDCount, "%d descriptors attached, limit %d", len(fds), lim.MaxFDs)
	}
	env.Reset()
	if err := (proto.UnmarshalOptions{}).Unmarshal(data, env); err != nil {
		return fds, violation(ReasonMalformed, "envelope: %v", err)
	}
	return fds, validateEnvelope(env, len(fds))
}

// maxMethodName bounds method names (checked when declaring and receiving).
const maxMethodName = 256

// validateEnvelope checks the fields of env against its kind; nfds is the
// number of descriptors that came with it.
func validateEnvelope(env *wirepb.Envelope, nfds int) *ProtocolError {
	if len(env.ProtoReflect().GetUnknown()) != 0 {
		return violation(ReasonMalformed, "envelope has unknown fields")
	}
	if uint64(env.FdCount) != uint64(nfds) {
		return violation(ReasonFDCount, "envelope announces %d descriptors, %d attached", env.FdCount, nfds)
	}
	if env.Id == 0 {
		return violation(ReasonMalformed, "zero id")
	}
	switch env.Kind {
	case wirepb.Kind_KIND_REQUEST:
		switch {
		case env.Method == "" || len(env.Method) > maxMethodName || !utf8.ValidString(env.Method):
			return violation(ReasonMalformed, "request %d: bad method name", env.Id)
		case env.StatusCode != 0 || env.StatusMessage != "":
			return violation(ReasonMalformed, "request %d carries a status", env.Id)
		case env.TimeoutNanos < 0:
			return violation(ReasonMalformed, "request %d: negative timeout", env.Id)
		}
	case wirepb.Kind_KIND_REPLY:
		switch {
		case env.Method != "" || env.TimeoutNanos != 0:
			return violation(ReasonMalformed, "reply %d carries request fields", env.Id)
		case env.StatusCode == 0 && env.StatusMessage != "":
			return violation(ReasonMalformed, "reply %d: message without error code", env.Id)
		case env.StatusCode != 0 && !Code(env.StatusCode).valid():
			return violation(ReasonMalformed, "reply %d: invalid status code %d", env.Id, env.StatusCode)
		case env.StatusCode != 0 && len(env.Payload) != 0:
			return violation(ReasonMalformed, "error reply %d carries a payload", env.Id)
		case env.StatusCode != 0 && nfds != 0:
			return violation(ReasonFDCount, "error reply %d carries %d descriptors", env.Id, nfds)
		}
	case wirepb.Kind_KIND_CANCEL:
		switch {
		case nfds != 0:
			return violation(ReasonFDCount, "cancel %d carries %d descriptors", env.Id, nfds)
		case env.Method != "" || len(env.Payload) != 0 || env.TimeoutNanos != 0 || env.StatusCode != 0 || env.StatusMessage != "":
			return violation(ReasonMalformed, "cancel %d carries other fields", env.Id)
		}
	default:
		return violation(ReasonMalformed, "invalid kind %d", int32(env.Kind))
	}
	return nil
}
