package ipc

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// MethodSpec is the wire contract of a method: both ends enforce it, the
// receiver of a message as a protocol check, the sender before sending.
type MethodSpec struct {
	Name             string
	MaxRequestBytes  int      // payload limit of a request (0 = Limits.MaxDatagram)
	MaxResponseBytes int      // payload limit of a successful response (0 = Limits.MaxDatagram)
	RequestFDs       []FDKind // a request carries exactly len(RequestFDs) fds, fd i of kind RequestFDs[i]
	ResponseFDs      []FDKind // same for a successful response; error replies carry no fds
}

// maxSpecFDs is the largest fd count a spec may declare: SCM_MAX_FD (253)
// minus the one extra slot the receiver keeps to detect "too many".
const maxSpecFDs = 252

// Method is a typed handle on a MethodSpec, shared by callers (Call) and
// servers (Handle). Declare methods once, as package-level values of the
// protocol package that both ends import.
//
// Requests and responses are protobuf messages: the receiving end decodes
// them with proto.Unmarshal, which never trusts a length or a type from
// the wire. For small methods the well-known wrapper types do
// (wrapperspb.StringValue, wrapperspb.BytesValue, emptypb.Empty); for
// anything larger, write a .proto file and generate its Go code with
// protoc and protoc-gen-go, as `make proto` does for the framework's and
// the examples' own (see examples/imageparser/imagepb).
type Method[Req, Resp proto.Message] struct {
	spec     MethodSpec
	reqType  protoreflect.MessageType
	respType protoreflect.MessageType
}

// NewMethod declares a method. It panics on programmer error: an empty,
// over-long or non-UTF-8 name, negative limits, an invalid FDKind, more fds
// than can ever be passed, or Req/Resp not being concrete generated message
// types.
func NewMethod[Req, Resp proto.Message](spec MethodSpec) *Method[Req, Resp] {
	if spec.Name == "" || len(spec.Name) > maxMethodName || !utf8.ValidString(spec.Name) {
		panic(fmt.Sprintf("ipc: NewMethod: invalid method name %q", spec.Name))
	}
	if spec.MaxRequestBytes < 0 || spec.MaxResponseBytes < 0 {
		panic("ipc: NewMethod " + spec.Name + ": negative payload limit")
	}
	if len(spec.RequestFDs) > maxSpecFDs || len(spec.ResponseFDs) > maxSpecFDs {
		panic("ipc: NewMethod " + spec.Name + ": too many fds")
	}
	mustValidKinds(spec.Name+".RequestFDs", spec.RequestFDs)
	mustValidKinds(spec.Name+".ResponseFDs", spec.ResponseFDs)
	spec.RequestFDs = slices.Clone(spec.RequestFDs)
	spec.ResponseFDs = slices.Clone(spec.ResponseFDs)
	return &Method[Req, Resp]{spec: spec, reqType: messageType[Req](spec.Name), respType: messageType[Resp](spec.Name)}
}

func messageType[M proto.Message](name string) protoreflect.MessageType {
	var zero M
	if any(zero) == nil {
		panic("ipc: NewMethod " + name + ": message type parameter must be a concrete message type")
	}
	return zero.ProtoReflect().Type()
}

// Spec returns a copy of the method's spec.
func (m *Method[Req, Resp]) Spec() MethodSpec {
	s := m.spec
	s.RequestFDs = slices.Clone(s.RequestFDs)
	s.ResponseFDs = slices.Clone(s.ResponseFDs)
	return s
}

// Handler serves one method. It runs in its own goroutine; ctx is cancelled
// when the caller cancels, when the caller's deadline (propagated as a
// relative timeout) passes, or when the Conn dies.
//
// Ownership: the handler owns the request's fds (all of them, whatever it
// returns) and must close them. The fds it returns are closed by ipc after
// the reply is sent (or could not be). If it returns an error, its fds are
// closed and the caller gets a *StatusError; use Errorf to choose the code.
type Handler[Req, Resp proto.Message] func(ctx context.Context, req Req, fds []*os.File) (Resp, []*os.File, error)

// Mux routes incoming requests to handlers by method name. It is safe for
// concurrent use and may be shared by many Conns.
type Mux struct {
	mu     sync.RWMutex
	m      map[string]*muxEntry
	before []func(ctx context.Context, method string) error
}

type muxEntry struct {
	spec     *MethodSpec
	reqType  protoreflect.MessageType
	respType protoreflect.MessageType
	call     func(ctx context.Context, req proto.Message, fds []*os.File) (proto.Message, []*os.File, error)
}

// NewMux returns an empty Mux.
func NewMux() *Mux { return &Mux{m: make(map[string]*muxEntry)} }

// Handle registers h for m on mux. Registering a name twice, a nil Mux,
// Method or Handler panics (programmer error).
func Handle[Req, Resp proto.Message](mux *Mux, m *Method[Req, Resp], h Handler[Req, Resp]) {
	if mux == nil || m == nil || h == nil {
		panic("ipc: Handle: nil argument")
	}
	e := &muxEntry{
		spec:     &m.spec,
		reqType:  m.reqType,
		respType: m.respType,
		call: func(ctx context.Context, req proto.Message, fds []*os.File) (proto.Message, []*os.File, error) {
			resp, out, err := h(ctx, req.(Req), fds)
			return resp, out, err
		},
	}
	mux.mu.Lock()
	defer mux.mu.Unlock()
	if _, dup := mux.m[m.spec.Name]; dup {
		panic("ipc: Handle: method " + m.spec.Name + " registered twice")
	}
	mux.m[m.spec.Name] = e
}

// Prepare initializes the protobuf codec of every registered method's
// request and response types. The protobuf runtime builds a type's codec
// lazily, on its first use; a sandboxed process calls Prepare before it
// locks itself down so that its first request does not pay for that (and
// does so with the runtime's own allocations behind it).
func (mux *Mux) Prepare() error {
	mux.mu.RLock()
	defer mux.mu.RUnlock()
	for name, e := range mux.m {
		for _, mt := range []protoreflect.MessageType{e.reqType, e.respType} {
			b, err := proto.Marshal(mt.New().Interface())
			if err == nil {
				err = proto.Unmarshal(b, mt.New().Interface())
			}
			if err != nil {
				return fmt.Errorf("ipc: Prepare %s: %w", name, err)
			}
		}
	}
	return nil
}

// Before adds f to the functions that run before every handler of mux,
// in the order they were added, in the handler's goroutine, with the
// handler's context and the method's name. The first that returns an
// error stops the request: the handler does not run, the request's
// descriptors are closed, and the caller gets the error as if the handler
// had returned it. A program uses it to hold requests until it is ready
// for them: a renderer holds every request until the one that binds it
// has been handled. A function once added cannot be removed, so code that
// is handed a Mux cannot undo what its owner set.
func (mux *Mux) Before(f func(ctx context.Context, method string) error) {
	if f == nil {
		panic("ipc: Before: nil function")
	}
	mux.mu.Lock()
	defer mux.mu.Unlock()
	mux.before = append(mux.before, f)
}

// runBefore runs the Before functions for a request of method.
func (mux *Mux) runBefore(ctx context.Context, method string) error {
	mux.mu.RLock()
	hooks := mux.before
	mux.mu.RUnlock()
	for _, f := range hooks {
		if err := f(ctx, method); err != nil {
			return err
		}
	}
	return nil
}

func (mux *Mux) lookup(name string) *muxEntry {
	mux.mu.RLock()
	defer mux.mu.RUnlock()
	return mux.m[name]
}
