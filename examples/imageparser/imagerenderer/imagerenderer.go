// Package imagerenderer is the sandboxed half of the imageparser example:
// the code that touches untrusted image bytes. It runs only inside a
// renderer that has already locked itself down, so it holds no path, no
// network, no way to start a process — just the descriptor the broker
// handed it and a memfd from the broker for the answer.
package imagerenderer

import (
	"bytes"
	"context"
	"io"
	"os"

	"github.com/sandkit/sandkit/ipc"
	"github.com/sandkit/sandkit/renderer"

	"github.com/sandkit/sandkit/examples/imageparser/imageipc"
	"github.com/sandkit/sandkit/examples/imageparser/imagepb"
	"github.com/sandkit/sandkit/examples/imageparser/thumb"
)

// Register adds the renderer's one method to mux. renderer.Main calls it
// before lockdown; thumb needs nothing prepared (no fonts, no tables).
func Register(s *renderer.Session, mux *ipc.Mux) error {
	ipc.Handle(mux, imageipc.Thumbnail, func(ctx context.Context, req *imagepb.ThumbnailRequest, fds []*os.File) (*imagepb.ThumbnailResponse, []*os.File, error) {
		return Thumbnail(ctx, s, req, fds)
	})
	return nil
}

// Thumbnail decodes the image behind the request's descriptor and answers
// with its metadata and a sealed memfd holding the thumbnail's RGBA pixels,
// in shared memory from the broker (s.Create).
func Thumbnail(ctx context.Context, s *renderer.Session, req *imagepb.ThumbnailRequest, fds []*os.File) (*imagepb.ThumbnailResponse, []*os.File, error) {
	in := fds[0] // ipc checked it: a regular file, opened read-only
	defer in.Close()
	budget := imageipc.BudgetFromProto(req.GetBudget())
	maxSide := int(req.GetMaxSide())

	// Read at most one byte more than the budget allows: thumb refuses
	// an input over MaxInputBytes, and we never hold more than that.
	// Sizing the buffer from fstat saves regrowing it; the limit still
	// holds if the file grows meanwhile.
	var data bytes.Buffer
	if st, err := in.Stat(); err == nil {
		data.Grow(int(min(max(st.Size(), 0), budget.MaxInputBytes)) + bytes.MinRead)
	}
	if _, err := data.ReadFrom(io.LimitReader(in, budget.MaxInputBytes+1)); err != nil {
		return nil, nil, ipc.Errorf(ipc.CodeInternal, "read input: %v", err)
	}

	// Read the header only and check the declared size against the
	// budget, before a single pixel is allocated.
	info, err := thumb.Probe(data.Bytes(), budget)
	if err != nil {
		return nil, nil, imageipc.Status(err) // typed: unsupported, corrupt, over budget
	}
	w, h := thumb.ThumbnailSize(info, maxSide)

	// Decode and scale straight into a shared memfd: no copy of the result.
	out, err := s.Create(ctx, 4*w*h)
	if err != nil {
		return nil, nil, ipc.Errorf(ipc.CodeInternal, "result memfd: %v", err)
	}
	defer out.Close() // discards it on error; a no-op once sealed
	if _, _, _, err := thumb.ThumbnailInto(out.Bytes(), data.Bytes(), budget, maxSide); err != nil {
		return nil, nil, imageipc.Status(err)
	}

	// Seal it: nobody, this renderer included, can change the pixels now,
	// so what the broker checks is what it encodes. ipc closes it once sent.
	sealed, err := out.Seal()
	if err != nil {
		return nil, nil, ipc.Errorf(ipc.CodeInternal, "seal result: %v", err)
	}
	return &imagepb.ThumbnailResponse{
		Format: info.Format, Width: int64(info.Width), Height: int64(info.Height), Frames: int32(info.Frames),
		ThumbWidth: int32(w), ThumbHeight: int32(h),
	}, []*os.File{sealed}, nil
}
