//go:build race

package broker_test

import (
	"github.com/sandkit/sandkit/ipc"
	"github.com/sandkit/sandkit/renderer"
)

// raceEnabled: the race detector reserves terabytes of shadow address
// space, so no memory rlimit can apply to a renderer built with it.
const raceEnabled = true

// registerExamples adds nothing: the examples do not run under the race
// detector (example_test.go).
func registerExamples(*renderer.Session, *ipc.Mux) error { return nil }
