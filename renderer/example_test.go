package renderer_test

import (
	"context"
	"os"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sandkit/sandkit/ipc"
	"github.com/sandkit/sandkit/renderer"
)

// Upper is a method of this program's renderer: it answers its argument in
// upper case. Methods are declared once, in a package both sides import.
var Upper = ipc.NewMethod[*wrapperspb.StringValue, *wrapperspb.StringValue](ipc.MethodSpec{
	Name: "example.Upper", MaxRequestBytes: 1024, MaxResponseBytes: 1024,
})

// A program that is its own renderer checks first thing in main whether
// the broker started it as one. register runs before the lockdown is
// complete (it sees only the policy's read-only paths); the handlers run
// after it, on untrusted input.
func ExampleMain() {
	if renderer.Requested() {
		renderer.Main(func(s *renderer.Session, mux *ipc.Mux) error {
			ipc.Handle(mux, Upper, func(ctx context.Context, req *wrapperspb.StringValue, _ []*os.File) (*wrapperspb.StringValue, []*os.File, error) {
				b := []byte(req.GetValue())
				for i, c := range b {
					if 'a' <= c && c <= 'z' {
						b[i] = c - 'a' + 'A'
					}
				}
				return wrapperspb.String(string(b)), nil, nil
			})
			return nil // an error here stops the renderer before lockdown, and Acquire reports it
		})
	}
	// ... the broker side of main: see package broker.
}
