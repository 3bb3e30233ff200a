// Package control declares the framework's own methods between broker and
// renderer: ready, bind, open and alloc.
package control

import (
	"github.com/sandkit/sandkit/internal/control/controlpb"
	"github.com/sandkit/sandkit/ipc"
)

// The framework's methods. The message types live in package controlpb so
// that they are registered before these values are built (package
// initialization runs imports first). They are declared once here so that broker and
// renderer agree on names, limits and fd kinds; nothing modifies them.
var (
	// Ready is the renderer's report after lockdown, with the seccomp
	// listener attached so the broker can run the violation monitor.
	Ready = ipc.NewMethod[*controlpb.ReadyRequest, *controlpb.ReadyResponse](ipc.MethodSpec{
		Name:             "sandkit.Ready",
		MaxRequestBytes:  4096,
		MaxResponseBytes: 64,
		RequestFDs:       []ipc.FDKind{ipc.SeccompListener},
	})
	// ReadyUnmonitored is Ready without a listener: the policy does not
	// ask for the monitor (or allows it degraded), or lockdown failed.
	ReadyUnmonitored = ipc.NewMethod[*controlpb.ReadyRequest, *controlpb.ReadyResponse](ipc.MethodSpec{
		Name:             "sandkit.ReadyUnmonitored",
		MaxRequestBytes:  4096,
		MaxResponseBytes: 64,
	})
	// Bind tells a locked renderer which origin it serves, once.
	Bind = ipc.NewMethod[*controlpb.BindRequest, *controlpb.BindResponse](ipc.MethodSpec{
		Name:             "sandkit.Bind",
		MaxRequestBytes:  4096,
		MaxResponseBytes: 64,
	})
	// Open asks the broker for a read-only fd of a resource of the
	// renderer's own origin.
	Open = ipc.NewMethod[*controlpb.OpenRequest, *controlpb.OpenResponse](ipc.MethodSpec{
		Name:             "sandkit.Open",
		MaxRequestBytes:  4096,
		MaxResponseBytes: 64,
		ResponseFDs:      []ipc.FDKind{ipc.ReadOnlyFile},
	})
	// Alloc asks the broker for a memfd to return a bulk result in,
	// counted against the renderer's shared-memory budget.
	Alloc = ipc.NewMethod[*controlpb.AllocRequest, *controlpb.AllocResponse](ipc.MethodSpec{
		Name:             "sandkit.Alloc",
		MaxRequestBytes:  64,
		MaxResponseBytes: 64,
		ResponseFDs:      []ipc.FDKind{ipc.BlankMemfd},
	})
)
