package fdtest_test

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/internal/fdtest"
)

// A descriptor opened after the baseline is reported with its target;
// once closed, nothing is.
func TestAddedNamesNewDescriptors(t *testing.T) {
	base, err := fdtest.Open()
	require.NoError(t, err)
	f, err := os.Open("/proc/self/exe")
	require.NoError(t, err)
	now, err := fdtest.Open()
	require.NoError(t, err)
	added := fdtest.Added(base, now)
	require.Len(t, added, 1, "%v", added)
	exe, err := os.Readlink("/proc/self/exe")
	require.NoError(t, err)
	require.True(t, strings.HasSuffix(added[0], " -> "+exe), "%v", added)
	require.NoError(t, f.Close())
	now, err = fdtest.Open()
	require.NoError(t, err)
	require.Empty(t, fdtest.Added(base, now))
}
