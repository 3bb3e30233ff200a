package broker_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/internal/testrenderer"
	"github.com/sandkit/sandkit/ipc/shm"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSharedMemoryComesFromTheBroker: the pages of a memfd are charged to
// no rlimit unless mapped, so a renderer that could make its own could
// write gigabytes into memfds it keeps open and never maps, past
// Limits.Memory (RLIMIT_FSIZE bounds each file, RLIMIT_NOFILE their
// number: 64 × the largest result). A renderer cannot: memfd_create is a
// violation, and the memfds the broker hands out stop at
// Limits.SharedMemory, counted in pages over the renderer's life, whatever
// the renderer does with them.
func TestSharedMemoryComesFromTheBroker(t *testing.T) {
	const budget = 64 << 20
	p := strict()
	p.Limits.SharedMemory = budget
	b := newBroker(t, p)

	t.Run("memfd_create is a violation", func(t *testing.T) {
		r, err := b.Acquire(context.Background(), "own-memfd", "")
		require.NoError(t, err)
		expectAttempt(t, r, "memfd-create", "", "memfd_create")
	})
	t.Run("the broker's memfds stop at the budget", func(t *testing.T) {
		r, err := b.Acquire(context.Background(), "hoarder", "")
		require.NoError(t, err)
		const chunk = 16 << 20
		got, err := attempt(t, r, fmt.Sprintf("hoard:%d", chunk))
		require.NoError(t, err)
		assert.Equal(t, fmt.Sprintf("held %d bytes; alloc %d bytes: ipc: sandkit.Alloc: ipc: resource exhausted: shared memory of %d bytes: %d of the renderer's %d bytes (Limits.SharedMemory) in use",
			budget, chunk, chunk, budget, budget), got)
		// Closing them gives nothing back: only a memfd returned sealed
		// does, since a descriptor the renderer keeps holds its pages.
		got, err = attempt(t, r, "hoard:1")
		require.NoError(t, err)
		assert.Contains(t, got, "held 0 bytes; ")
		// The renderer lives on, and another origin has a budget of
		// its own.
		_, err = attempt(t, r, "pid")
		require.NoError(t, err)
		other, err := b.Acquire(context.Background(), "bystander", "")
		require.NoError(t, err)
		got, err = attempt(t, other, fmt.Sprintf("hoard:%d", chunk))
		require.NoError(t, err)
		assert.Contains(t, got, fmt.Sprintf("held %d bytes; ", budget))
	})
	t.Run("sealed results given back are credited", func(t *testing.T) {
		const pages = 16
		p := strict()
		p.Limits.SharedMemory = pages * 4096
		r, err := newBroker(t, p).Acquire(context.Background(), "echoes", "")
		require.NoError(t, err)
		payload := bytes.Repeat([]byte{7}, 4000)
		for range 3 * pages {
			_, fds, err := broker.Call(context.Background(), r, testrenderer.SealedEcho, wrapperspb.Bytes(payload))
			require.NoError(t, err)
			require.Len(t, fds, 1)
			m, err := shm.Map(fds[0], len(payload))
			require.NoError(t, err)
			assert.Equal(t, payload, m.Bytes())
			m.Close()
			fds[0].Close()
		}
	})
}
