// Package imageipc is the contract between the imageparser broker and its
// renderers: the one method they speak, and how the renderer's typed
// failures travel as ipc status codes.
//
// The method is declared here, and the messages in package imagepb, because
// package-level ipc.NewMethod values are built during initialization and
// need the message types registered first: Go initializes imagepb (an
// import) before this package.
package imageipc

import (
	"errors"
	"strings"

	"github.com/sandkit/sandkit/ipc"

	"github.com/sandkit/sandkit/examples/imageparser/imagepb"
	"github.com/sandkit/sandkit/examples/imageparser/thumb"
)

// Thumbnail asks a renderer for the metadata and thumbnail of the image
// behind the one read-only file descriptor of the request. The reply
// carries exactly one sealed memfd (immutable: ipc checks the seals on
// receipt) holding the thumbnail's pixels. Both ends enforce the payload
// limits: requests and replies are a few dozen bytes, and a renderer that
// sends more is killed for breaking the protocol.
var Thumbnail = ipc.NewMethod[*imagepb.ThumbnailRequest, *imagepb.ThumbnailResponse](ipc.MethodSpec{
	Name:             "imageparser.Thumbnail",
	MaxRequestBytes:  128,
	MaxResponseBytes: 128,
	RequestFDs:       []ipc.FDKind{ipc.ReadOnlyFile},
	ResponseFDs:      []ipc.FDKind{ipc.SealedMemfd},
})

// Status codes of the renderer's typed failures, one per thumb sentinel.
const (
	CodeUnsupported = ipc.CodeUnimplemented
	CodeCorrupt     = ipc.CodeInvalidArgument
	CodeOverBudget  = ipc.CodeResourceExhausted
)

// Status turns an error of package thumb into the status error a handler
// returns: the code says which sentinel it wraps, the message is the detail
// after the sentinel's own text (the broker words the reason itself). Any
// other error becomes CodeInternal.
func Status(err error) error {
	for _, c := range []struct {
		sentinel error
		code     ipc.Code
	}{
		{thumb.ErrUnsupportedFormat, CodeUnsupported},
		{thumb.ErrCorrupt, CodeCorrupt},
		{thumb.ErrOverBudget, CodeOverBudget},
	} {
		if errors.Is(err, c.sentinel) {
			return ipc.Errorf(c.code, "%s", strings.TrimPrefix(err.Error(), c.sentinel.Error()+": "))
		}
	}
	return ipc.Errorf(ipc.CodeInternal, "%v", err)
}

// BudgetToProto converts b for a request.
func BudgetToProto(b thumb.Budget) *imagepb.Budget {
	return &imagepb.Budget{MaxPixels: b.MaxPixels, MaxFrames: int32(min(b.MaxFrames, 1<<31-1)), MaxInputBytes: b.MaxInputBytes}
}

// BudgetFromProto converts a request's budget. A missing budget is the zero
// Budget, which refuses every input.
func BudgetFromProto(b *imagepb.Budget) thumb.Budget {
	return thumb.Budget{MaxPixels: b.GetMaxPixels(), MaxFrames: int(b.GetMaxFrames()), MaxInputBytes: b.GetMaxInputBytes()}
}
