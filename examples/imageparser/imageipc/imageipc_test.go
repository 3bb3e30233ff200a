package imageipc

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/ipc"

	"github.com/sandkit/sandkit/examples/imageparser/thumb"
)

func TestStatus(t *testing.T) {
	tests := []struct {
		err  error
		code ipc.Code
		msg  string
	}{
		{fmt.Errorf("%w: png: invalid format", thumb.ErrCorrupt), CodeCorrupt, "png: invalid format"},
		{fmt.Errorf("%w: animated webp", thumb.ErrUnsupportedFormat), CodeUnsupported, "animated webp"},
		{fmt.Errorf("%w: more than 1000 frames", thumb.ErrOverBudget), CodeOverBudget, "more than 1000 frames"},
		{fmt.Errorf("decode: %w", fmt.Errorf("%w: x", thumb.ErrCorrupt)), CodeCorrupt, "decode: corrupt image: x"},
		{thumb.ErrDstSize, ipc.CodeInternal, thumb.ErrDstSize.Error()},
		{errors.New("disk on fire"), ipc.CodeInternal, "disk on fire"},
	}
	for _, tc := range tests {
		var st *ipc.StatusError
		require.ErrorAs(t, Status(tc.err), &st, "%v", tc.err)
		assert.Equal(t, tc.code, st.Code, "%v", tc.err)
		assert.Equal(t, tc.msg, st.Message, "%v", tc.err)
	}
}

func TestBudgetRoundTrip(t *testing.T) {
	for _, b := range []thumb.Budget{thumb.DefaultBudget(), {}, {MaxPixels: 1, MaxFrames: 1 << 40, MaxInputBytes: 1}} {
		got := BudgetFromProto(BudgetToProto(b))
		want := b
		want.MaxFrames = min(b.MaxFrames, 1<<31-1) // saturates, never wraps
		assert.Equal(t, want, got)
	}
	assert.Equal(t, thumb.Budget{}, BudgetFromProto(nil), "a missing budget refuses everything")
}

func TestMethodSpec(t *testing.T) {
	s := Thumbnail.Spec()
	assert.Equal(t, []ipc.FDKind{ipc.ReadOnlyFile}, s.RequestFDs)
	assert.Equal(t, []ipc.FDKind{ipc.SealedMemfd}, s.ResponseFDs)
}
