package renderer

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/internal/lockdownplan"
	"github.com/sandkit/sandkit/policy"
)

// A renderer whose constructor applied something else than its policy
// asks refuses to start, before it records or applies anything.
func TestLockdownRefusesAnotherSpec(t *testing.T) {
	p := policy.Strict()
	want, err := lockdownplan.EarlySpec(p)
	require.NoError(t, err)
	l := &lockdown{p: p, spec: "h:0:0:0"}
	_, err = l.apply()
	assert.EqualError(t, err, fmt.Sprintf("the early lockdown spec %q does not match the policy's %q", "h:0:0:0", want))
	assert.Empty(t, l.status)
}
