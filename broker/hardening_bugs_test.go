package broker_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/internal/testrenderer"
	"github.com/sandkit/sandkit/ipc"
)

// A request the caller got wrong is never sent: the error says so at once
// (ErrSpec; proto.Error too when it does not marshal) and the renderer,
// which did nothing wrong, keeps serving. Before, Call waited 5 s for an
// exit that was not coming and then killed the renderer as a bad message.
func TestCallerMistakeLeavesRendererAlive(t *testing.T) {
	tests := []struct {
		name    string
		call    func(context.Context, *broker.Renderer) error
		marshal bool
	}{
		{
			name: "missing descriptor",
			call: func(ctx context.Context, r *broker.Renderer) error {
				_, _, err := broker.Call(ctx, r, testrenderer.ReadFile, wrapperspb.String("f"))
				return err
			},
		},
		{
			name: "string that is not UTF-8",
			call: func(ctx context.Context, r *broker.Renderer) error {
				_, _, err := broker.Call(ctx, r, testrenderer.Attempt, wrapperspb.String("open:/report-\xff.txt"))
				return err
			},
			marshal: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBroker(t, strict())
			r, err := b.Acquire(context.Background(), "https://a.example", "")
			require.NoError(t, err)
			// Bounded below the old 5 s wait only so that a regression
			// fails here rather than after the kill.
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
			defer cancel()
			err = tt.call(ctx, r)
			require.ErrorIs(t, err, ipc.ErrSpec)
			assert.NotErrorIs(t, err, broker.ErrRendererGone)
			if tt.marshal {
				assert.ErrorIs(t, err, proto.Error)
			}
			resp, _, err := broker.Call(context.Background(), r, testrenderer.Ping, wrapperspb.Bytes([]byte("still here")))
			require.NoError(t, err)
			assert.Equal(t, []byte("still here"), resp.GetValue())
			assert.Nil(t, r.Err())
			for _, e := range b.Events() {
				assert.False(t, e.Kind == broker.EventExited && e.PID == r.PID(), "renderer exited: %v", e.Err)
			}
		})
	}
}
