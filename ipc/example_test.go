package ipc_test

import (
	"context"
	"errors"
	"fmt"
	"os"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sandkit/sandkit/ipc"
	"github.com/sandkit/sandkit/ipc/shm"
)

// Methods are declared once, in a package both the broker and the renderer
// import, so that both ends enforce the same MethodSpec.
var greet = ipc.NewMethod[*wrapperspb.StringValue, *wrapperspb.StringValue](ipc.MethodSpec{
	Name:             "example.Greet",
	MaxRequestBytes:  256,
	MaxResponseBytes: 256,
})

// render returns its result as a sealed memfd: exactly one fd of that kind.
var render = ipc.NewMethod[*wrapperspb.UInt32Value, *wrapperspb.UInt32Value](ipc.MethodSpec{
	Name:        "example.Render",
	ResponseFDs: []ipc.FDKind{ipc.SealedMemfd},
})

func ExamplePair() {
	mux := ipc.NewMux()
	ipc.Handle(mux, greet, func(ctx context.Context, req *wrapperspb.StringValue, _ []*os.File) (*wrapperspb.StringValue, []*os.File, error) {
		if req.Value == "" {
			return nil, nil, ipc.Errorf(ipc.CodeInvalidArgument, "empty name")
		}
		return wrapperspb.String("hello, " + req.Value), nil, nil
	})
	// In a real program the two ends live in different processes: see
	// SocketPair and NewConn.
	broker, renderer, err := ipc.Pair(ipc.WithMux(mux))
	if err != nil {
		panic(err)
	}
	defer broker.Close()
	defer renderer.Close()

	resp, _, err := ipc.Call(context.Background(), renderer, greet, wrapperspb.String("broker"))
	fmt.Println(resp.GetValue(), err)

	_, _, err = ipc.Call(context.Background(), renderer, greet, wrapperspb.String(""))
	var st *ipc.StatusError
	fmt.Println(errors.As(err, &st), st.Code)
	// Output:
	// hello, broker <nil>
	// true invalid argument
}

func ExampleCall() {
	// The renderer side: produce bytes into a sealed memfd and return it.
	mux := ipc.NewMux()
	ipc.Handle(mux, render, func(ctx context.Context, req *wrapperspb.UInt32Value, _ []*os.File) (*wrapperspb.UInt32Value, []*os.File, error) {
		w, err := shm.Create("render", int(req.Value))
		if err != nil {
			return nil, nil, err
		}
		copy(w.Bytes(), "pixels...")
		f, err := w.Seal() // no one can change these bytes any more
		if err != nil {
			return nil, nil, err
		}
		return wrapperspb.UInt32(req.Value), []*os.File{f}, nil // ipc closes f after sending
	})
	renderer, broker, err := ipc.Pair(ipc.WithMux(mux))
	if err != nil {
		panic(err)
	}
	defer renderer.Close()
	defer broker.Close()

	// The broker side: the fd was checked to be a sealed memfd on receipt;
	// Map checks the exact size and maps it read-only.
	resp, fds, err := ipc.Call(context.Background(), broker, render, wrapperspb.UInt32(4096))
	if err != nil {
		panic(err)
	}
	defer fds[0].Close()
	m, err := shm.Map(fds[0], int(resp.Value))
	if err != nil {
		panic(err)
	}
	defer m.Close()
	fmt.Printf("%s\n", m.Bytes()[:9])
	// Output: pixels...
}

func ExampleConn_Err() {
	a, b, err := ipc.Pair()
	if err != nil {
		panic(err)
	}
	b.Close()
	<-a.Done()
	fmt.Println(errors.Is(a.Err(), ipc.ErrPeerClosed), errors.Is(b.Err(), ipc.ErrClosed))
	a.Close()
	// Output: true true
}

// A sandboxed process registers its methods, then calls Prepare before it
// locks itself down (renderer.Main does both), so that its first request
// does not pay for building the protobuf codecs of the method's messages.
func ExampleMux_Prepare() {
	mux := ipc.NewMux()
	ipc.Handle(mux, greet, func(ctx context.Context, req *wrapperspb.StringValue, _ []*os.File) (*wrapperspb.StringValue, []*os.File, error) {
		return wrapperspb.String("hello, " + req.Value), nil, nil
	})
	if err := mux.Prepare(); err != nil {
		fmt.Println("prepare:", err)
		return
	}
	fmt.Println("prepared")
	// ... lock down, then serve: ipc.NewConn(socket, ipc.WithMux(mux))
	// Output:
	// prepared
}

// A request sent ahead, and a Mux that holds every other request until it
// has been handled: how a broker binds a renderer without a round trip.
func ExampleStart() {
	ready := make(chan struct{})
	var who string
	setup := ipc.NewMethod[*wrapperspb.StringValue, *wrapperspb.StringValue](ipc.MethodSpec{Name: "example.Setup"})
	mux := ipc.NewMux()
	ipc.Handle(mux, setup, func(ctx context.Context, req *wrapperspb.StringValue, _ []*os.File) (*wrapperspb.StringValue, []*os.File, error) {
		who = req.Value
		close(ready)
		return req, nil, nil
	})
	mux.Before(func(ctx context.Context, method string) error {
		if method == setup.Spec().Name {
			return nil
		}
		select {
		case <-ready:
			return nil
		case <-ctx.Done():
			return ipc.Errorf(ipc.CodeFailedPrecondition, "not set up")
		}
	})
	ipc.Handle(mux, greet, func(ctx context.Context, req *wrapperspb.StringValue, _ []*os.File) (*wrapperspb.StringValue, []*os.File, error) {
		return wrapperspb.String(who + " greets " + req.Value), nil, nil
	})
	broker, renderer, err := ipc.Pair(ipc.WithMux(mux))
	if err != nil {
		panic(err)
	}
	defer broker.Close()
	defer renderer.Close()

	ctx := context.Background()
	started, err := ipc.Start(ctx, renderer, setup, wrapperspb.String("renderer"))
	if err != nil {
		panic(err)
	}
	resp, _, err := ipc.Call(ctx, renderer, greet, wrapperspb.String("broker"))
	fmt.Println(resp.GetValue(), err)
	_, _, err = started.Wait(ctx)
	fmt.Println(err)
	// Output:
	// renderer greets broker <nil>
	// <nil>
}

// A process whose only remaining job is to serve (a renderer once it is
// ready) serves on its main goroutine until the peer hangs up.
func ExampleConn_Serve() {
	mux := ipc.NewMux()
	ipc.Handle(mux, greet, func(ctx context.Context, req *wrapperspb.StringValue, _ []*os.File) (*wrapperspb.StringValue, []*os.File, error) {
		return wrapperspb.String("hello, " + req.Value), nil, nil
	})
	server, client, err := ipc.Pair(ipc.WithMux(mux))
	if err != nil {
		panic(err)
	}
	served := make(chan error)
	go func() { served <- server.Serve() }()

	resp, _, err := ipc.Call(context.Background(), client, greet, wrapperspb.String("renderer"))
	fmt.Println(resp.GetValue(), err)
	client.Close()
	fmt.Println(errors.Is(<-served, ipc.ErrPeerClosed))
	// Output:
	// hello, renderer <nil>
	// true
}
