package docipc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/sandkit/sandkit/ipc"

	"github.com/sandkit/sandkit/examples/docviewer/docerr"
	"github.com/sandkit/sandkit/examples/docviewer/doclimits"
)

// TestKindsRoundTrip: every kind survives the trip renderer → status →
// broker, with its detail and without a doubled kind prefix.
func TestKindsRoundTrip(t *testing.T) {
	for _, kind := range []error{docerr.ErrUnsupported, docerr.ErrCorrupt, docerr.ErrOverBudget, docerr.ErrNotFound, docerr.ErrInvalid} {
		in := fmt.Errorf("wrapped: %w", docerr.New(kind, errors.New("cause"), "page %d", 3))
		st := ToStatus(in)
		var se *ipc.StatusError
		assert.ErrorAs(t, st, &se)
		out, ok := FromStatus(st, "")
		assert.True(t, ok)
		assert.ErrorIs(t, out, kind)
		assert.Equal(t, kind, docerr.KindOf(out))
		assert.Equal(t, 1, strings.Count(out.Error(), kind.Error()), out.Error())
		assert.Contains(t, out.Error(), "page 3: cause")
	}
}

func TestStatusWithoutKind(t *testing.T) {
	out, ok := FromStatus(ToStatus(errors.New("boom")), "open")
	assert.True(t, ok)
	assert.ErrorIs(t, out, docerr.ErrSandbox)
	assert.Contains(t, out.Error(), "open: renderer reported internal: boom")

	out, ok = FromStatus(ipc.Errorf(ipc.Code(99), "x"), "")
	assert.True(t, ok)
	assert.ErrorIs(t, out, docerr.ErrSandbox)

	assert.Equal(t, context.Canceled, ToStatus(context.Canceled))
	out, _ = FromStatus(ipc.Errorf(ipc.CodeDeadlineExceeded, "late"), "")
	assert.ErrorIs(t, out, context.DeadlineExceeded)

	_, ok = FromStatus(errors.New("not a status"), "")
	assert.False(t, ok)
}

func TestCleanRendererText(t *testing.T) {
	assert.Equal(t, "a?b?c", Clean("a\x1bb\nc"))
	long := Clean(strings.Repeat("é", 1000))
	assert.LessOrEqual(t, len(long), maxDetail+len("…"))
	assert.True(t, strings.HasSuffix(long, "…"))
}

func TestLimitsRoundTrip(t *testing.T) {
	l := doclimits.Default()
	assert.Equal(t, l, LimitsFromProto(LimitsToProto(l)))
	assert.Equal(t, doclimits.Limits{}, LimitsFromProto(nil))
}
