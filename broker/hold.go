package broker

import (
	"errors"
	"fmt"
	"sync"
)

// Hold keeps r from being ended for idleness, by Config.IdleTimeout or by
// an Acquire making room under MaxRenderers, until release is called: r
// counts as busy (RendererStatus.InFlight counts holds with calls).
//
// Acquire spares a renderer it hands out for a short while only (it may
// be evicted once idle for 250 ms), a wall-clock window that a loaded
// machine can overrun before the caller's first call. A program that
// acquires a renderer and then waits before calling it, such as for its
// turn when one renderer serves a queue of requests, holds it across the
// wait so that the renderer cannot be ended under the queued work.
//
// Hold fails, wrapping ErrRendererGone, when r has exited or is already
// being ended (for idleness or a kill): the caller Acquires again, which
// waits for r's end and then starts a fresh renderer. It fails too when r
// is not bound. release is idempotent; a held renderer still dies when it
// breaks the rules, and Close still ends it.
func (r *Renderer) Hold() (release func(), err error) {
	select {
	case <-r.exited:
		return nil, fmt.Errorf("broker: hold: %w", ErrRendererGone)
	default:
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.key == nil:
		return nil, errors.New("broker: hold: renderer is not bound to an origin")
	case r.idleEnded || r.killReason != nil:
		return nil, fmt.Errorf("broker: hold: renderer is being ended: %w", ErrRendererGone)
	}
	r.inflight++
	if r.idleTimer != nil {
		r.idleTimer.Stop()
	}
	var once sync.Once
	return func() { once.Do(r.end) }, nil
}
