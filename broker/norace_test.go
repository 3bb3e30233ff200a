//go:build !race

package broker_test

import (
	"github.com/sandkit/sandkit/ipc"
	"github.com/sandkit/sandkit/renderer"
)

const raceEnabled = false

// registerExamples adds the examples' methods to a test renderer.
func registerExamples(s *renderer.Session, mux *ipc.Mux) error { return register(s, mux) }
