package sandboxed

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Check spawns and locks a real renderer, gets its one answer and ends
// it: no renderer is left behind, and every layer is reported in force.
func TestCheck(t *testing.T) {
	b := newBackend(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	layers, err := b.Check(ctx)
	require.NoError(t, err)
	require.NotEmpty(t, layers)
	for _, l := range layers {
		require.False(t, strings.HasPrefix(l, "NOT "), "layer not in force: %s", l)
	}
	require.True(t, slices.ContainsFunc(layers, func(l string) bool { return strings.HasPrefix(l, "seccomp") }), "layers: %v", layers)
	require.Empty(t, b.Status(ctx), "the checked renderer must be ended")
}

// A renderer that exits instead of locking down (/bin/true) fails the check with the broker's
// reason.
func TestCheckFailsWhenRenderersCannotStart(t *testing.T) {
	b := newBackend(t, func(c *Config) { c.Path = "/bin/true" })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := b.Check(ctx)
	require.ErrorContains(t, err, "start renderer")
}
