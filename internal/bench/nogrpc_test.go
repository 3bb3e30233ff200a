//go:build nogrpc

package bench_test

import (
	"errors"
	"os"
	"testing"

	"google.golang.org/protobuf/types/known/wrapperspb"
)

// With -tags nogrpc the binary carries no gRPC (see grpc_test.go).

func benchGRPC(b *testing.B, _ *wrapperspb.BytesValue) {
	b.Skip("built with -tags nogrpc")
}

func serveGRPC(*os.File) error { return errors.New("built with -tags nogrpc") }
