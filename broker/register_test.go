package broker_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/broker"
)

// failRegisterArg, among a test renderer's arguments, makes its register
// function fail (registerForTests).
const failRegisterArg = "-test.fail-register"

var errFailRegister = errors.New("load fonts: no font directory")

// TestRegisterError: a renderer whose register function fails exits
// before lockdown, and Acquire fails with an ExitError that carries the
// error register returned, not a timeout or an empty detail.
func TestRegisterError(t *testing.T) {
	b := newBroker(t, strict(), func(c *broker.Config) { c.Args = []string{failRegisterArg} })
	_, err := b.Acquire(context.Background(), "https://example.org", "")
	var exit *broker.ExitError
	require.ErrorAs(t, err, &exit)
	t.Log(exit)
	assert.Equal(t, broker.ExitCrash, exit.Reason)
	assert.Contains(t, exit.Detail, "register methods")
	assert.Contains(t, exit.Detail, errFailRegister.Error())
}
