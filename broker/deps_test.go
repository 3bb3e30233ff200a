package broker_test

import (
	"errors"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A broker binary links none of the renderer's side: not package
// renderer, whose ELF constructor (cgo) would run in every broker process
// and whose lockdown code a broker has no use for, nor go-landlock, whose
// syscall package brings psx (cgo, a wrapped pthread_create) and whose
// restrict code only a process locking itself down needs. What both sides
// need lives in internal packages (launch, lockdownplan, seccompfilter).
func TestBrokerLinksNoRendererCode(t *testing.T) {
	gocmd, err := exec.LookPath("go") // go test puts its own first in PATH
	require.NoError(t, err)
	out, err := exec.Command(gocmd, "list", "-deps", ".").Output()
	require.NoError(t, err, "go list -deps: %s", exitStderr(err))
	deps := strings.Fields(string(out))
	require.Contains(t, deps, "github.com/sandkit/sandkit/broker")
	for _, forbidden := range []string{
		"github.com/sandkit/sandkit/renderer",
		"github.com/landlock-lsm/go-landlock/landlock",
		"github.com/landlock-lsm/go-landlock/landlock/syscall",
		"kernel.org/pub/linux/libs/security/libcap/psx",
	} {
		assert.False(t, slices.Contains(deps, forbidden), "broker depends on %s", forbidden)
	}
}

func exitStderr(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(ee.Stderr)
	}
	return ""
}
