package sandboxed

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sandkit/sandkit/broker"

	"github.com/sandkit/sandkit/examples/docviewer/backend"
	"github.com/sandkit/sandkit/examples/docviewer/docerr"
	"github.com/sandkit/sandkit/examples/docviewer/library"
)

// admission serves at most max requests at once and queues at most
// maxQueue more, first come first served (blocked channel senders are
// woken in order).
//
// Why a bound on requests served, not only on renderers: the broker
// evicts only a renderer that has been idle for a while and is not held,
// and a document whose clients keep it busy holds its renderer. Without
// this bound, a burst on a few documents kept every renderer busy while
// requests for the other documents waited, unserved, until they timed
// out. With at most MaxRenderers requests in service, at most that many
// renderers are held, so a request that needs a new renderer finds one
// that its queue has left idle, and it is served in arrival order.
type admission struct {
	turns    chan struct{}
	maxQueue int64
	queued   atomic.Int64
	rejected atomic.Uint64
	log      *slog.Logger

	mu         sync.Mutex
	lastWarned time.Time
	unwarned   uint64 // rejections since the last warning
}

func newAdmission(max, maxQueue int, log *slog.Logger) *admission {
	return &admission{turns: make(chan struct{}, max), maxQueue: int64(maxQueue), log: log}
}

// enter waits for a turn; done ends it. It fails at once with
// docerr.ErrBusy when maxQueue requests wait already, and with ctx's
// error when ctx ends first.
func (a *admission) enter(ctx context.Context, d library.Doc) (done func(), err error) {
	select {
	case a.turns <- struct{}{}:
		return a.leave, nil
	default:
	}
	if a.queued.Add(1) > a.maxQueue {
		a.queued.Add(-1)
		a.rejected.Add(1)
		a.warn()
		return nil, docerr.New(docerr.ErrBusy, nil, "%s: %d requests already wait for a renderer", d.Name, a.maxQueue)
	}
	defer a.queued.Add(-1)
	select {
	case a.turns <- struct{}{}:
		return a.leave, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%s: waiting for a renderer: %w", d.Name, ctx.Err())
	}
}

func (a *admission) leave() { <-a.turns }

// warn logs rejections, at most once a second (an overload must not
// also flood the log).
func (a *admission) warn() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.unwarned++
	if time.Since(a.lastWarned) < time.Second {
		return
	}
	a.log.Warn("request queue full: requests refused as busy", "refused", a.unwarned, "max_queue", a.maxQueue, "serving", len(a.turns))
	a.lastWarned, a.unwarned = time.Now(), 0
}

// stats counts the broker's events for Load and the log.
type stats struct {
	log     *slog.Logger
	next    func(broker.Event)
	spawned atomic.Uint64
	evicted atomic.Uint64

	mu         sync.Mutex
	exits      map[string]uint64
	violations map[string]uint64
}

func newStats(log *slog.Logger, onEvent func(broker.Event)) *stats {
	return &stats{log: log, next: onEvent, exits: map[string]uint64{}, violations: map[string]uint64{}}
}

// evictionDetail is how the broker words an end to make room.
const evictionDetail = "evicted to make room"

// onEvent runs on the broker's goroutines: it only counts and logs.
func (s *stats) onEvent(e broker.Event) {
	switch e.Kind {
	case broker.EventReady:
		s.spawned.Add(1)
	case broker.EventExited:
		if e.Err == nil {
			break
		}
		s.mu.Lock()
		s.exits[string(e.Err.Reason)]++
		if e.Err.Reason == broker.ExitViolation {
			name := e.Err.Syscall
			if name == "" {
				name = "unknown"
			}
			s.violations[name]++
		}
		s.mu.Unlock()
		if e.Err.Reason == broker.ExitIdle && strings.Contains(e.Err.Detail, evictionDetail) {
			// The broker logs routine ends at debug level; an eviction
			// means documents compete for MaxRenderers, which an
			// operator wants to see.
			s.evicted.Add(1)
			s.log.Info("renderer evicted to make room for another document (MaxRenderers)", "doc", e.Document, "pid", e.PID, "lifetime", e.Err.Lifetime.Round(time.Millisecond))
		}
	}
	if s.next != nil {
		s.next(e)
	}
}

// Load implements backend.LoadReporter.
func (b *Backend) Load() backend.Load {
	l := backend.Load{
		Active:           len(b.turns.turns),
		MaxActive:        cap(b.turns.turns),
		Queued:           int(max(b.turns.queued.Load(), 0)),
		MaxQueue:         int(b.turns.maxQueue),
		Rejected:         b.turns.rejected.Load(),
		RenderersAlive:   len(b.b.Renderers()),
		RenderersSpawned: b.stats.spawned.Load(),
		Evicted:          b.stats.evicted.Load(),
	}
	b.stats.mu.Lock()
	l.Exits = maps.Clone(b.stats.exits)
	l.Violations = maps.Clone(b.stats.violations)
	b.stats.mu.Unlock()
	if p := b.b.Pool(); p.Target > 0 {
		l.WarmPool = &backend.WarmPool{Target: p.Target, Ready: p.Ready, Failures: p.Failures, LastError: p.LastError, LastFailure: p.LastFailure}
	}
	return l
}
