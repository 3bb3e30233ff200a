// Package docipc is the docviewer's protocol between the broker and a
// renderer: two methods, and how error kinds and limits cross the wire.
//
// The methods are package-level values built at package initialization,
// so their message types live in a separate package (docpb) that is
// initialized first; declaring both here would panic in ipc.NewMethod.
// Broker and renderer import this one package, so they agree on names,
// payload limits and descriptor kinds.
package docipc

import (
	"context"
	"errors"
	"strings"
	"time"
	"unicode"

	"github.com/sandkit/sandkit/ipc"

	"github.com/sandkit/sandkit/examples/docviewer/docerr"
	"github.com/sandkit/sandkit/examples/docviewer/doclimits"
	"github.com/sandkit/sandkit/examples/docviewer/docpb"
)

// Method names.
const (
	OpenName   = "docviewer.Open"
	RenderName = "docviewer.Render"
	RegionName = "docviewer.Region"
)

var (
	// Open hands the renderer its one document, as a read-only fd the
	// broker opened (the renderer has no filesystem and never sees a path),
	// and returns its page count.
	Open = ipc.NewMethod[*docpb.OpenRequest, *docpb.OpenResponse](ipc.MethodSpec{
		Name:             OpenName,
		MaxRequestBytes:  256,
		MaxResponseBytes: 256,
		RequestFDs:       []ipc.FDKind{ipc.ReadOnlyFile},
	})
	// Region replaces the renderer's page region with one of the size
	// the broker asks for, and returns it: a memfd whose size is sealed
	// (ipc.SharedRegion, checked by ipc before the broker sees it) but
	// whose bytes the renderer keeps writing, one page at a time. The
	// broker asks when a Render answers needs_region: regions are sized
	// to the pages drawn, not to the largest page the limits allow.
	Region = ipc.NewMethod[*docpb.RegionRequest, *docpb.RegionResponse](ipc.MethodSpec{
		Name:             RegionName,
		MaxRequestBytes:  64,
		MaxResponseBytes: 64,
		ResponseFDs:      []ipc.FDKind{ipc.SharedRegion},
	})
	// Render draws one page into the region and answers with its geometry
	// and length only; the broker checks those, copies the bytes out of the
	// region once and uses only its copy.
	Render = ipc.NewMethod[*docpb.RenderRequest, *docpb.RenderResponse](ipc.MethodSpec{
		Name:             RenderName,
		MaxRequestBytes:  64,
		MaxResponseBytes: 256,
	})
)

// kindCodes maps each error kind to the ipc status code that carries it.
// Codes are all a StatusError has besides its text, so the mapping must be
// one-to-one.
var kindCodes = []struct {
	kind error
	code ipc.Code
}{
	{docerr.ErrUnsupported, ipc.CodeUnimplemented},
	{docerr.ErrCorrupt, ipc.CodeInvalidArgument},
	{docerr.ErrOverBudget, ipc.CodeResourceExhausted},
	{docerr.ErrNotFound, ipc.CodeNotFound},
	{docerr.ErrInvalid, ipc.CodeOutOfRange},
}

// ToStatus turns a renderer-side error into the status error a handler
// returns: its docerr kind becomes the code, its text the message. Context
// errors are returned as they are (ipc maps them to Canceled and
// DeadlineExceeded); an error without a kind becomes CodeInternal.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	for _, kc := range kindCodes {
		if errors.Is(err, kc.kind) {
			return ipc.Errorf(kc.code, "%s", detailOf(err))
		}
	}
	return ipc.Errorf(ipc.CodeInternal, "%s", err.Error())
}

// detailOf is the text to send for err: without the kind's own text,
// which the broker puts back in front when it rebuilds the error.
func detailOf(err error) string {
	msg := err.Error()
	if k := docerr.KindOf(err); k != nil {
		msg = strings.Replace(msg, k.Error()+": ", "", 1)
	}
	return msg
}

// FromStatus rebuilds the kind of a renderer's status error on the broker
// side. The message is the renderer's, so it is untrusted text: it is
// cleaned (printable characters only, at most maxDetail bytes) before it
// reaches logs and the UI. A status that carries no kind (CodeInternal,
// an unknown code) is a renderer failure (docerr.ErrSandbox). ok is false
// when err is not a status error at all.
func FromStatus(err error, what string) (_ error, ok bool) {
	var se *ipc.StatusError
	if !errors.As(err, &se) {
		return err, false
	}
	msg := Clean(se.Message)
	switch se.Code {
	case ipc.CodeCanceled:
		return context.Canceled, true
	case ipc.CodeDeadlineExceeded:
		return context.DeadlineExceeded, true
	}
	for _, kc := range kindCodes {
		if se.Code == kc.code {
			if what == "" {
				return docerr.New(kc.kind, nil, "%s", msg), true
			}
			return docerr.New(kc.kind, nil, "%s: %s", what, msg), true
		}
	}
	return docerr.New(docerr.ErrSandbox, nil, "%s: renderer reported %v: %s", what, se.Code, msg), true
}

// maxDetail bounds the renderer's text the broker passes on.
const maxDetail = 300

// Clean makes renderer-supplied text safe to log and show: control and
// other non-printable runes become '?', and it is cut to maxDetail bytes.
func Clean(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return '?'
	}, s)
	if len(s) > maxDetail {
		s = strings.ToValidUTF8(s[:maxDetail], "") + "…"
	}
	return s
}

// LimitsToProto is the wire form of l.
func LimitsToProto(l doclimits.Limits) *docpb.Limits {
	return &docpb.Limits{
		MaxPages:         int64(l.MaxPages),
		MaxPixelsPerPage: l.MaxPixelsPerPage,
		MaxInputBytes:    l.MaxInputBytes,
		MaxHeapBytes:     l.MaxHeapBytes,
		MinDpi:           l.MinDPI,
		MaxDpi:           l.MaxDPI,
		MaxContentBytes:  l.MaxContentBytes,
		MaxRenderTimeMs:  l.MaxRenderTime.Milliseconds(),
	}
}

// LimitsFromProto is the inverse of LimitsToProto. The renderer still
// validates the result (render.Open refuses non-positive limits).
func LimitsFromProto(p *docpb.Limits) doclimits.Limits {
	return doclimits.Limits{
		MaxPages:         int(min(p.GetMaxPages(), 1<<31-1)),
		MaxPixelsPerPage: p.GetMaxPixelsPerPage(),
		MaxInputBytes:    p.GetMaxInputBytes(),
		MaxHeapBytes:     p.GetMaxHeapBytes(),
		MinDPI:           p.GetMinDpi(),
		MaxDPI:           p.GetMaxDpi(),
		MaxContentBytes:  p.GetMaxContentBytes(),
		MaxRenderTime:    time.Duration(p.GetMaxRenderTimeMs()) * time.Millisecond,
	}
}
