//go:build !nogrpc

package bench_test

// The gRPC side of BenchmarkRoundTrip64. It is left out with -tags nogrpc
// (see nogrpc_test.go), which run.sh uses for the spawn and density
// benchmarks: the test binary is also the renderer they start, and gRPC's
// package initialization (about 1 ms of CPU) would otherwise be charged to
// every spawn of sandkit and its peers alike, and weigh on the absolute
// cold-spawn target that a real renderer binary without gRPC does not pay.

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The gRPC peer is a one-method service written out by hand — exactly what
// protoc-gen-go-grpc would generate for
//
//	service Echo { rpc Echo(google.protobuf.BytesValue) returns (google.protobuf.BytesValue); }
//
// with grpc's standard protobuf codec — so that no generator has to be
// installed for a comparison.
const echoMethod = "/sandkit.bench.Echo/Echo"

type echoServer interface {
	Echo(context.Context, *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error)
}

type echo struct{}

func (echo) Echo(_ context.Context, req *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
	return req, nil
}

var echoDesc = grpc.ServiceDesc{
	ServiceName: "sandkit.bench.Echo",
	HandlerType: (*echoServer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.BytesValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			return srv.(echoServer).Echo(ctx, in)
		},
	}},
}

func serveGRPC(f *os.File) error {
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return err
	}
	s := grpc.NewServer()
	s.RegisterService(&echoDesc, echo{})
	return s.Serve(ln)
}

// grpcChild starts a gRPC server child on a fresh unix socket (the
// listener is created here and handed over as fd 3, so there is no wait
// for the child to bind) and returns a connected client.
func grpcChild(b *testing.B) *grpc.ClientConn {
	path := filepath.Join(b.TempDir(), "echo.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		b.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	f, err := ln.File()
	ln.Close()
	if err != nil {
		b.Fatal(err)
	}
	startChild(b, "grpc-serve", nil, f)
	cc, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cc.Close() })
	// Connect (and warm the HTTP/2 connection) before timing.
	if err := cc.Invoke(context.Background(), echoMethod, wrapperspb.Bytes(nil), new(wrapperspb.BytesValue)); err != nil {
		b.Fatal(err)
	}
	return cc
}

// benchGRPC is the grpc-unix case of BenchmarkRoundTrip64.
func benchGRPC(b *testing.B, req *wrapperspb.BytesValue) {
	cc := grpcChild(b)
	resp := new(wrapperspb.BytesValue)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := cc.Invoke(ctx, echoMethod, req, resp); err != nil {
			b.Fatal(err)
		}
	}
}
