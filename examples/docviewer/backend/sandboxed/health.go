package sandboxed

import (
	"context"
	"errors"
	"fmt"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/ipc"

	"github.com/sandkit/sandkit/examples/docviewer/docipc"
	"github.com/sandkit/sandkit/examples/docviewer/docpb"
)

// healthOrigin is the origin of the renderer Check spawns. Documents'
// origins are 16-hex-digit library ids, so it never shares a renderer
// with one.
const healthOrigin = "health-check"

// Check proves that a renderer can be spawned and locked down here, now:
// it binds a renderer (from the warm pool or freshly spawned; the broker
// refuses one whose required layers are not all in force), makes one
// call that needs no document, and ends it. The call is Render before
// Open, which an honest renderer answers with exactly FailedPrecondition
// "no document open": any other answer is a failure. It returns the
// layers the renderer reported in force.
//
// It costs one renderer spawn per call: callers must rate-limit it (the
// server caches its result).
func (b *Backend) Check(ctx context.Context) ([]string, error) {
	r, err := b.b.Acquire(ctx, healthOrigin, healthOrigin)
	if err != nil {
		return nil, fmt.Errorf("start renderer: %w", err)
	}
	defer b.b.Release(healthOrigin, healthOrigin)
	_, fds, err := broker.Call(ctx, r, docipc.Render, &docpb.RenderRequest{Page: 0, Dpi: 72})
	for _, f := range fds {
		f.Close()
	}
	var se *ipc.StatusError
	switch {
	case err == nil:
		return nil, errors.New("renderer drew a page without a document")
	case !errors.As(err, &se):
		return nil, fmt.Errorf("call renderer: %w", err)
	case se.Code != ipc.CodeFailedPrecondition:
		return nil, fmt.Errorf("renderer answered %w, want failed precondition", err)
	}
	return LayerNames(r.Layers()), nil
}
