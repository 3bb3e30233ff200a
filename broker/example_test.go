//go:build !race

// The race detector reserves terabytes of shadow address space, which no
// memory limit of policy.Strict lets a renderer built with it map: this
// example runs without it.

package broker_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/ipc"
	"github.com/sandkit/sandkit/policy"
	"github.com/sandkit/sandkit/renderer"
)

// Upper is the program's one method: the renderer answers its argument in
// upper case. A method is declared once, with its payload limits, in a
// package both halves import; requests and responses are protobuf
// messages, here the well-known wrappers.
var Upper = ipc.NewMethod[*wrapperspb.StringValue, *wrapperspb.StringValue](ipc.MethodSpec{
	Name: "example.Upper", MaxRequestBytes: 1024, MaxResponseBytes: 1024,
})

// register is the renderer half: renderer.Main calls it before lockdown,
// so it may load what needs the filesystem; the handlers run after it, on
// untrusted input, with nothing else in reach. An error stops the
// renderer, and the broker's Acquire reports it.
func register(_ *renderer.Session, mux *ipc.Mux) error {
	ipc.Handle(mux, Upper, func(_ context.Context, req *wrapperspb.StringValue, _ []*os.File) (*wrapperspb.StringValue, []*os.File, error) {
		return wrapperspb.String(strings.ToUpper(req.GetValue())), nil, nil
	})
	return nil
}

// A whole program, both halves in one executable: the broker starts the
// program again as its renderer, and main hands that process over to
// renderer.Main before doing anything else. This is main's body.
func Example_program() {
	// The renderer half. renderer.Main locks the process down, reports
	// the layers in force and serves register's methods; it never returns.
	if renderer.Requested() {
		renderer.Main(register)
	}

	// The broker half.
	ctx := context.Background()
	b, err := broker.New(ctx, broker.Config{Policy: policy.Strict()})
	if err != nil {
		fmt.Println(err) // a *policy.UnavailableError names a missing layer
		return
	}
	defer b.Close()

	// A renderer bound to this origin for its whole life.
	r, err := b.Acquire(ctx, "https://example.org", "")
	if err != nil {
		fmt.Println(err)
		return
	}
	resp, _, err := broker.Call(ctx, r, Upper, wrapperspb.String("hello from the sandbox"))
	var exit *broker.ExitError
	if errors.As(err, &exit) {
		// The renderer died: a sandbox violation (with the syscall), a
		// limit, a crash.
		fmt.Println(exit.Reason, exit.Syscall)
		return
	}
	if err != nil {
		fmt.Println(err)
		return
	}
	// Everything that came back is from an untrusted process: check it
	// before use, as the program's own format requires.
	fmt.Println(resp.GetValue())
	fmt.Println("seccomp in force:", r.Layers().Active(policy.LayerSeccomp))
	// Output:
	// HELLO FROM THE SANDBOX
	// seccomp in force: true
}
