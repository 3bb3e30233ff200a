package ipc

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// A request that cannot be marshalled (a proto3 string that is not UTF-8,
// such as a file name an origin chose) is the caller's own mistake: ErrSpec,
// nothing sent, the Conn alive. A handler's response that cannot be
// marshalled becomes a CodeInternal reply, as any other spec violation of
// a response does, rather than no reply at all.
func TestUnmarshallableMessageIsSpecError(t *testing.T) {
	mStr := NewMethod[*wrapperspb.StringValue, *wrapperspb.StringValue](MethodSpec{Name: "str"})
	mux := NewMux()
	Handle(mux, mStr, func(_ context.Context, req *wrapperspb.StringValue, _ []*os.File) (*wrapperspb.StringValue, []*os.File, error) {
		return wrapperspb.String(req.GetValue() + "\xff"), nil, nil
	})
	a, _ := newPair(t, nil, mux, Limits{})

	_, _, err := Call(context.Background(), a, mStr, wrapperspb.String("name-\xff.txt"))
	require.ErrorIs(t, err, ErrSpec)
	require.ErrorIs(t, err, proto.Error)
	require.NotErrorIs(t, err, ErrProtocol)
	require.NoError(t, a.Err())

	// Bounded only so that a missing reply fails rather than hangs.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _, err = Call(ctx, a, mStr, wrapperspb.String("ok"))
	var se *StatusError
	require.ErrorAs(t, err, &se)
	require.Equal(t, CodeInternal, se.Code)
	require.NoError(t, a.Err())
}
