package broker

import (
	"time"

	"github.com/sandkit/sandkit/policy"
)

// EventKind says what happened to a renderer.
type EventKind string

const (
	EventReady  EventKind = "ready"  // locked down, layers in Event.Layers
	EventBound  EventKind = "bound"  // bound to Event.Origin
	EventExited EventKind = "exited" // ended, why in Event.Err
)

// Event is one step in a renderer's life, for logs and status pages.
type Event struct {
	Time     time.Time
	Kind     EventKind
	Origin   string
	Document string
	PID      int
	Layers   policy.Status
	Err      *ExitError
}
