// Package docerr holds the error kinds every layer of the viewer agrees on:
// the renderer (package render, inside the sandbox), the backends and the
// web UI. It has no cgo and no dependencies so the broker side can classify
// errors without linking MuPDF, and so a sandboxed backend can carry a kind
// across the IPC as a small enum and rebuild it with New.
package docerr

import (
	"errors"
	"fmt"
)

// The kinds. Test with errors.Is(err, docerr.ErrCorrupt) etc.
var (
	// ErrUnsupported: not a format the viewer accepts, or a feature it
	// refuses (e.g. password protection).
	ErrUnsupported = errors.New("unsupported document")
	// ErrCorrupt: the document is malformed beyond what the renderer repairs.
	ErrCorrupt = errors.New("corrupt document")
	// ErrOverBudget: the document needs more than the limits allow
	// (pages, pixels, heap, input size, time).
	ErrOverBudget = errors.New("document over budget")
	// ErrNotFound: no such document in the listing, or no such page.
	ErrNotFound = errors.New("not found")
	// ErrInvalid: a bad request from our own side (e.g. dpi <= 0).
	ErrInvalid = errors.New("invalid request")
	// ErrSandbox: the renderer died, was killed, or broke the protocol.
	// Only sandboxed backends produce it.
	ErrSandbox = errors.New("renderer failure")
	// ErrBusy: too many requests are waiting for a renderer; try again
	// later (the web UI answers 503 with Retry-After). Never the
	// document's fault.
	ErrBusy = errors.New("busy")
)

// Error is a kind plus the detail a person needs to understand it. It
// unwraps to both the kind and the underlying cause.
type Error struct {
	Kind   error  // one of the Err* kinds above
	Detail string // human-readable, no secrets; shown in the UI
	Err    error  // cause, may be nil
}

// New builds an *Error; detail is formatted with args like fmt.Sprintf.
func New(kind error, cause error, detail string, args ...any) *Error {
	return &Error{Kind: kind, Detail: fmt.Sprintf(detail, args...), Err: cause}
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%v: %s: %v", e.Kind, e.Detail, e.Err)
	}
	return fmt.Sprintf("%v: %s", e.Kind, e.Detail)
}

// Unwrap lets errors.Is match the kind and the cause.
func (e *Error) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Kind, e.Err}
	}
	return []error{e.Kind}
}

// KindOf returns the kind of err, or nil if err carries none.
func KindOf(err error) error {
	for _, k := range []error{ErrUnsupported, ErrCorrupt, ErrOverBudget, ErrNotFound, ErrInvalid, ErrSandbox, ErrBusy} {
		if errors.Is(err, k) {
			return k
		}
	}
	return nil
}
