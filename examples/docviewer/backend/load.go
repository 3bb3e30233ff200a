package backend

import "time"

// LoadReporter is a backend that reports its load: the web UI shows it in
// /status.json and exports it at /metrics.
type LoadReporter interface {
	Load() Load
}

// Load is a backend's load and its renderers' life so far. Counters count
// from the backend's start.
type Load struct {
	// Active requests hold one of MaxActive turns: opening a document
	// or drawing a page. Queued ones wait for a turn, first come first
	// served, at most MaxQueue of them; past that a request fails at
	// once as docerr.ErrBusy, and Rejected counts it.
	Active    int    `json:"active"`
	MaxActive int    `json:"max_active"`
	Queued    int    `json:"queued"`
	MaxQueue  int    `json:"max_queue"`
	Rejected  uint64 `json:"rejected"`
	// RenderersAlive are live renderers (bound and warm); Spawned counts
	// renderers that became ready. Evicted counts renderers ended,
	// idle, to make room for another document (MaxRenderers).
	RenderersAlive   int    `json:"renderers_alive"`
	RenderersSpawned uint64 `json:"renderers_spawned"`
	Evicted          uint64 `json:"evicted"`
	// Exits counts renderer ends by reason (broker.ExitReason text);
	// Violations counts sandbox violations by system call name.
	Exits      map[string]uint64 `json:"exits"`
	Violations map[string]uint64 `json:"violations"`
	// WarmPool is the pool of renderers kept ready, nil if none.
	WarmPool *WarmPool `json:"warm_pool,omitempty"`
}

// WarmPool is the state of a backend's pool of ready renderers.
type WarmPool struct {
	Target      int       `json:"target"`
	Ready       int       `json:"ready"`
	Failures    int       `json:"refill_failures"`
	LastError   string    `json:"last_error,omitempty"`
	LastFailure time.Time `json:"last_failure,omitzero"`
}
