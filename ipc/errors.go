package ipc

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Sentinel errors. Use errors.Is: the values returned by this package wrap them.
var (
	// ErrProtocol is matched (errors.Is) by every *ProtocolError: the peer
	// sent something the protocol does not allow. The Conn is dead and the
	// peer must be treated as compromised.
	ErrProtocol = errors.New("ipc: protocol violation")
	// ErrClosed means this side closed the Conn (Close was called).
	ErrClosed = errors.New("ipc: connection closed")
	// ErrPeerClosed means the peer closed its end (EOF on the socket).
	ErrPeerClosed = errors.New("ipc: peer closed the connection")
	// ErrSpec is returned by Call, before anything is sent, when the
	// caller's own request does not fit the method's MethodSpec (wrong fd
	// count or kind, payload too large) or cannot be marshalled (then the
	// error also wraps proto.Error: a proto3 string that is not valid
	// UTF-8, for one). It is a local error, not a protocol violation, and
	// the Conn stays usable.
	ErrSpec = errors.New("ipc: message does not match the method spec")
	// ErrPeerNotReading is wrapped, with the context's error, by a Call
	// whose context ended while its request waited for room in the peer's
	// receive queue: the peer had not read what was already there.
	ErrPeerNotReading = errors.New("ipc: the peer is not reading its socket")
)

// Reason names one kind of protocol violation.
type Reason string

// The protocol violations. Each one is fatal to the Conn.
const (
	ReasonTruncated        Reason = "truncated datagram"           // MSG_TRUNC, or larger than Limits.MaxDatagram
	ReasonCtrlTruncated    Reason = "truncated control data"       // MSG_CTRUNC: more fds than the control buffer holds
	ReasonFDCount          Reason = "fd count mismatch"            // fds attached != envelope's fd_count, != the method's spec, or > MaxFDs
	ReasonUnknownMethod    Reason = "unknown method"               // no such method in the Mux, or no Mux at all
	ReasonPayloadTooLarge  Reason = "payload too large"            // over MaxRequestBytes / MaxResponseBytes
	ReasonMalformed        Reason = "malformed message"            // undecodable envelope or payload, or invalid envelope fields
	ReasonDuplicateID      Reason = "duplicate request id"         // a request id that is already in flight
	ReasonUnknownReply     Reason = "reply to an id not in flight" // a reply nobody is waiting for
	ReasonFDKind           Reason = "fd of the wrong kind"         // an fd that is not of the kind the spec requires
	ReasonTooManyInFlight  Reason = "too many requests in flight"  // more than Limits.MaxInFlight concurrent requests
	ReasonBadControl       Reason = "unexpected control message"   // anything but SOL_SOCKET/SCM_RIGHTS, or malformed control data
	ReasonNotReading       Reason = "peer stopped reading"         // a message found no room in the peer's receive queue within Limits.SendTimeout
	ReasonUnexpectedCancel Reason = "unexpected cancel"            // a cancel matching no request in flight and no reply it could have crossed
	ReasonRequestRate      Reason = "request rate exceeded"        // more requests than Limits.MaxRequestRate and RequestBurst allow
)

// Bound reports whether r is the peer exceeding one of the bounds on what
// it may make this side hold or spend (Limits.MaxInFlight, SendTimeout,
// MaxRequestRate, one cancel per request), rather than sending something
// malformed.
func (r Reason) Bound() bool {
	switch r {
	case ReasonTooManyInFlight, ReasonNotReading, ReasonUnexpectedCancel, ReasonRequestRate:
		return true
	}
	return false
}

// ProtocolError reports a protocol violation by the peer.
type ProtocolError struct {
	Reason Reason
	Detail string
}

func (e *ProtocolError) Error() string {
	if e.Detail == "" {
		return "ipc: protocol violation: " + string(e.Reason)
	}
	return "ipc: protocol violation: " + string(e.Reason) + ": " + e.Detail
}

// Is makes errors.Is(err, ErrProtocol) true.
func (e *ProtocolError) Is(target error) bool { return target == ErrProtocol }

func violation(r Reason, format string, args ...any) *ProtocolError {
	return &ProtocolError{Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// Code is the status of a failed call, carried in a reply. The numbering
// follows gRPC's so that the codes read familiarly; 0 (success) never
// appears in a StatusError.
type Code int32

const (
	CodeCanceled           Code = 1
	CodeUnknown            Code = 2
	CodeInvalidArgument    Code = 3
	CodeDeadlineExceeded   Code = 4
	CodeNotFound           Code = 5
	CodeAlreadyExists      Code = 6
	CodePermissionDenied   Code = 7
	CodeResourceExhausted  Code = 8
	CodeFailedPrecondition Code = 9
	CodeAborted            Code = 10
	CodeOutOfRange         Code = 11
	CodeUnimplemented      Code = 12
	CodeInternal           Code = 13
	CodeUnavailable        Code = 14

	maxCode = CodeUnavailable
)

var codeNames = [...]string{
	CodeCanceled:           "canceled",
	CodeUnknown:            "unknown",
	CodeInvalidArgument:    "invalid argument",
	CodeDeadlineExceeded:   "deadline exceeded",
	CodeNotFound:           "not found",
	CodeAlreadyExists:      "already exists",
	CodePermissionDenied:   "permission denied",
	CodeResourceExhausted:  "resource exhausted",
	CodeFailedPrecondition: "failed precondition",
	CodeAborted:            "aborted",
	CodeOutOfRange:         "out of range",
	CodeUnimplemented:      "unimplemented",
	CodeInternal:           "internal",
	CodeUnavailable:        "unavailable",
}

func (c Code) String() string {
	if c >= 1 && c <= maxCode {
		return codeNames[c]
	}
	return "code(" + strconv.Itoa(int(c)) + ")"
}

func (c Code) valid() bool { return c >= 1 && c <= maxCode }

// StatusError is a handler's error as the caller sees it.
type StatusError struct {
	Code    Code
	Message string
}

func (e *StatusError) Error() string {
	return "ipc: " + e.Code.String() + ": " + e.Message
}

// Is makes a CodeDeadlineExceeded status match context.DeadlineExceeded
// and a CodeCanceled status match context.Canceled, so that callers can
// treat a handler that gave up on the propagated deadline like their own
// expired context.
func (e *StatusError) Is(target error) bool {
	switch target {
	case context.DeadlineExceeded:
		return e.Code == CodeDeadlineExceeded
	case context.Canceled:
		return e.Code == CodeCanceled
	}
	return false
}

// Errorf returns a *StatusError for a handler to return. An invalid code
// (including 0) becomes CodeUnknown.
func Errorf(code Code, format string, args ...any) error {
	if !code.valid() {
		code = CodeUnknown
	}
	return &StatusError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// maxStatusMessage bounds the error text put on the wire so that an error
// reply always fits a datagram.
const maxStatusMessage = 1024

// statusOf maps a handler's error to what goes on the wire.
func statusOf(err error) (Code, string) {
	var se *StatusError
	code, msg := CodeUnknown, err.Error()
	switch {
	case errors.As(err, &se):
		code, msg = se.Code, se.Message
		if !code.valid() {
			code = CodeUnknown
		}
	case errors.Is(err, context.Canceled):
		code = CodeCanceled
	case errors.Is(err, context.DeadlineExceeded):
		code = CodeDeadlineExceeded
	}
	// proto3 strings must be valid UTF-8, or marshalling fails.
	msg = strings.ToValidUTF8(msg, "\uFFFD")
	if len(msg) > maxStatusMessage {
		msg = strings.ToValidUTF8(msg[:maxStatusMessage], "")
	}
	return code, msg
}
