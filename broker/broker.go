// Package broker is the privileged side of a sandkit program.
//
// A Broker spawns renderers (package renderer), waits until each has locked
// itself down and reported the layers in force, binds each to exactly one
// origin (or document) for its whole life, routes calls to it, answers the
// few requests a renderer may make (open a resource of its own origin),
// and supervises it: every exit is classified — clean, crash, sandbox
// violation with the syscall, CPU or memory limit, timeout, bad message —
// and surfaced both on in-flight calls and as an Event. Whatever one
// renderer does, the broker keeps serving the others.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/sandkit/sandkit/internal/launch"
	"github.com/sandkit/sandkit/internal/lockdownplan"
	"github.com/sandkit/sandkit/ipc"
	"github.com/sandkit/sandkit/policy"
)

// ProcessModel decides how many renderers serve an origin.
type ProcessModel int

const (
	// PerOrigin runs one renderer per origin; all documents of that
	// origin share it.
	PerOrigin ProcessModel = iota
	// PerDocument runs one renderer per document: a renderer never sees
	// two documents, even of the same origin.
	PerDocument
)

// Config configures a Broker. Only Policy is required.
type Config struct {
	// Path is the renderer executable. Empty means this program itself
	// (/proc/self/exe), which must then call renderer.Main when
	// renderer.Requested reports true.
	Path string
	// Args are extra arguments after the policy argument.
	Args []string
	// Policy is applied by every renderer. Use policy.Strict() and widen.
	Policy *policy.Policy
	// Model is PerOrigin or PerDocument.
	Model ProcessModel
	// MaxRenderers bounds live renderers (bound and warm). When reached,
	// Acquire evicts the longest-idle bound renderer, or waits. Zero
	// means 64.
	MaxRenderers int
	// IdleTimeout ends a bound renderer that has had no call for that
	// long. Zero means never.
	IdleTimeout time.Duration
	// CallTimeout bounds every Call; a renderer that does not answer in
	// time is killed (ExitTimeout). Zero means Policy.Limits.CallTimeout.
	CallTimeout time.Duration
	// ReadyTimeout bounds spawn to ready. Zero means 10 s.
	ReadyTimeout time.Duration
	// WarmPool keeps that many renderers spawned and locked down but not
	// yet bound, so that Acquire only has to bind one.
	WarmPool int
	// CgroupDir, when set, is a writable cgroup v2 directory; each
	// renderer is spawned straight into a child group of its own with
	// the policy's cgroup limits.
	CgroupDir string
	// RendererIDs matters when the broker runs as root: each renderer
	// then runs as a host uid of its own from this range, with the gid
	// of the same number and no supplementary groups, mapped to 0 in its
	// user namespace; no two live renderers share one, and an id is
	// reused only once its renderer has been reaped. A renderer is thus
	// never host root, which the kernel exempts from RLIMIT_NPROC (the
	// policy's thread limit), and per-user kernel accounting (threads,
	// descriptors in flight over unix sockets, pipe buffers, epoll
	// watches, inotify and message queue counts) is its own, not shared
	// with the broker or another renderer. The range must hold at least
	// MaxRenderers ids and no other user's: two brokers need disjoint
	// ranges. The renderer executable must be executable by others
	// (o+x); it is exec'd through a descriptor the broker opened, so the
	// directories above it need not be searchable by those ids.
	//
	// Zero means root's range in /etc/subuid if /etc/subgid gives root
	// the same one, else DefaultRendererIDs(). A broker that is not root
	// cannot switch ids: its renderers run as its own uid, and what that
	// shares is in SECURITY.md ("Threads and user ids").
	RendererIDs IDRange
	// Logger receives the broker's logs and the renderers' stderr lines.
	// Nil discards them.
	Logger *slog.Logger
	// OnEvent, when set, is called for every event, from the broker's
	// goroutines; it must not block.
	OnEvent func(Event)
	// Learn, when set, puts the broker in learn mode: its renderers'
	// disallowed syscalls are recorded in Learn and let through instead
	// of killing them, and their seccomp layer is reported not in force
	// (LearnDetail). Learn mode is for running trusted sample inputs to
	// write a policy (see Learner), never for untrusted input. Nothing
	// else turns it on: not a policy file, not the environment.
	Learn *Learner
}

// Broker spawns and supervises renderers. It is safe for concurrent use.
type Broker struct {
	cfg     Config
	exe     string
	policy  *policy.Policy
	args    []string
	log     *slog.Logger
	spawner *spawner

	mu        sync.Mutex
	closed    bool
	bound     map[key]*Renderer
	claims    map[key]*claim // keys an Acquire is getting a renderer for
	live      map[*Renderer]struct{}
	pool      []*Renderer
	spawning  int           // spawns started and not yet in live; spawn decrements it
	slotFreed chan struct{} // closed and replaced whenever a renderer ends
	dirs      map[string]*os.File
	events    []Event
	ids       *idPool  // host ids for renderers; nil unless root
	exeFile   *os.File // the executable, for renderers with ids of their own

	refill poolRefill // the warm pool's refills: backoff, failures (pool.go)

	cgroupSeq atomic.Uint64 // names renderers' cgroups uniquely
	wg        sync.WaitGroup
}

type key struct{ origin, document string }

// maxEvents is how many recent events Events returns.
const maxEvents = 256

// New validates cfg, checks what the kernel supports, and starts the warm
// pool. It fails closed with a *policy.UnavailableError when a layer the
// policy needs is missing and not allowed degraded.
func New(ctx context.Context, cfg Config) (*Broker, error) {
	if launch.Requested(os.Args) {
		// This process was started as a renderer and went on to make a
		// broker of its own: its main does not hand over to
		// renderer.Main first. Left alone, each renderer would spawn
		// another, nested one level deeper, until the kernel's limit on
		// nested user namespaces stopped it with a confusing error.
		return nil, errors.New("broker: this process was started as a renderer but is creating a broker: " +
			"begin main with `if renderer.Requested() { renderer.Main(register) }`, " +
			"or set Config.Path to a renderer executable")
	}
	if cfg.Policy == nil {
		return nil, errors.New("broker: Config.Policy is required (start from policy.Strict())")
	}
	p := cfg.Policy.Clone()
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	if err := checkSupport(p); err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	if cfg.Learn != nil {
		if err := checkLearn(p); err != nil {
			return nil, fmt.Errorf("broker: %w", err)
		}
	}
	if cfg.MaxRenderers == 0 {
		cfg.MaxRenderers = 64
	}
	if cfg.MaxRenderers < 0 || cfg.WarmPool < 0 || cfg.WarmPool > cfg.MaxRenderers {
		return nil, fmt.Errorf("broker: MaxRenderers %d and WarmPool %d must be positive, and WarmPool at most MaxRenderers", cfg.MaxRenderers, cfg.WarmPool)
	}
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = p.Limits.CallTimeout
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 10 * time.Second
	}
	exe := cfg.Path
	if exe == "" {
		exe = "/proc/self/exe"
	}
	if _, err := os.Stat(exe); err != nil {
		return nil, fmt.Errorf("broker: renderer executable: %w", err)
	}
	arg, err := lockdownplan.RendererArg(p)
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	var (
		ids     *idPool
		exeFile *os.File
	)
	if os.Geteuid() == 0 {
		r := rendererIDs(cfg.RendererIDs)
		if err := r.check(); err != nil {
			return nil, fmt.Errorf("broker: RendererIDs %v: %w", r, err)
		}
		if r.Count < uint32(min(cfg.MaxRenderers, 1<<31)) {
			return nil, fmt.Errorf("broker: RendererIDs %v holds %d ids, fewer than MaxRenderers %d", r, r.Count, cfg.MaxRenderers)
		}
		if exeFile, err = openExecutable(exe); err != nil {
			return nil, fmt.Errorf("broker: %w", err)
		}
		ids = newIDPool(r, p, cfg.CgroupDir)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if ids != nil && ids.execReason != nil {
		log.Info("renderers start through os/exec, which copies the broker's page tables", "why", ids.execReason)
	}
	if cfg.Learn != nil {
		log.Warn("LEARN MODE: seccomp records disallowed syscalls and lets them through; feed only trusted samples")
	}
	b := &Broker{
		cfg:       cfg,
		exe:       exe,
		policy:    p,
		args:      append([]string{exe, arg}, cfg.Args...),
		log:       log,
		spawner:   newSpawner(),
		bound:     map[key]*Renderer{},
		claims:    map[key]*claim{},
		live:      map[*Renderer]struct{}{},
		slotFreed: make(chan struct{}),
		dirs:      map[string]*os.File{},
		ids:       ids,
		exeFile:   exeFile,
	}
	if cfg.WarmPool > 0 {
		if err := b.fillPool(ctx); err != nil {
			b.Close()
			return nil, err
		}
	}
	return b, nil
}

// Policy returns a copy of the policy renderers apply.
func (b *Broker) Policy() *policy.Policy { return b.policy.Clone() }

// GrantDir lets renderers of origin open files beneath dir (see
// renderer.Session.Open). The broker opens dir now and resolves every
// later request against that descriptor, never against the path again.
func (b *Broker) GrantDir(origin, dir string) error {
	f, err := os.OpenFile(dir, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return fmt.Errorf("broker: grant %q to %q: %w", dir, origin, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		f.Close()
		return ErrClosed
	}
	if old := b.dirs[origin]; old != nil {
		old.Close()
	}
	b.dirs[origin] = f
	return nil
}

// ErrClosed is returned by a Broker after Close.
var ErrClosed = errors.New("broker: closed")

func (b *Broker) keyFor(origin, document string) key {
	if b.cfg.Model == PerOrigin {
		document = ""
	}
	return key{origin, document}
}

// Acquire returns the renderer bound to origin (and document, in the
// PerDocument model), binding a fresh one when there is none: from the warm
// pool if it has one, spawned otherwise. A renderer is bound exactly once
// and never serves another origin or document.
//
// Concurrent Acquires for one origin start one renderer between them, not
// one each: the first claims the origin (see claim) and gets the renderer,
// and the others wait for it. When the claimant's own ctx ends first, the
// next of them to look takes the claim over. When the renderer cannot be
// had for any other reason — the broker closed, a layer the policy needs
// is unavailable, the renderer died or timed out before it was ready — all
// of them get the claimant's error: the attempt was made on their behalf,
// and, like a lone Acquire's, it is not retried.
func (b *Broker) Acquire(ctx context.Context, origin, document string) (*Renderer, error) {
	if origin == "" {
		return nil, errors.New("broker: empty origin")
	}
	k := b.keyFor(origin, document)
	for {
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return nil, ErrClosed
		}
		if r := b.bound[k]; r != nil {
			b.mu.Unlock()
			if err := r.waitBound(ctx); err != nil {
				if errors.Is(err, ErrRendererGone) {
					continue // it died while binding; make another
				}
				return nil, err
			}
			if !r.touch() {
				// Being ended for idleness: wait until it is gone
				// from b.bound, then make another.
				select {
				case <-r.exited:
				case <-ctx.Done():
					return nil, fmt.Errorf("broker: waiting for an idle renderer to end: %w", ctx.Err())
				}
				continue
			}
			return r, nil
		}
		if c := b.claims[k]; c != nil {
			b.mu.Unlock()
			select {
			case <-c.done:
				if c.err != nil {
					return nil, c.err
				}
			case <-ctx.Done():
				return nil, fmt.Errorf("broker: waiting for the renderer another Acquire is starting: %w", ctx.Err())
			}
			continue // published under k, or the claim is free to take
		}
		c := &claim{done: make(chan struct{})}
		b.claims[k] = c
		b.mu.Unlock()
		r, fromPool, err := b.obtain(ctx, k, c)
		if err != nil {
			return nil, err
		}
		err = r.bind(ctx)
		if fromPool {
			// Refilled only now: a spawn running alongside the bind
			// would compete with it for the CPU.
			b.refillPool()
		}
		if err != nil {
			if errors.Is(err, ErrRendererGone) && ctx.Err() == nil && fromPool {
				continue // a warm renderer died in the pool: take another
			}
			return nil, err
		}
		return r, nil
	}
}

// A claim marks a key for which one Acquire, the claimant, is getting a
// renderer: taking one from the pool, waiting for a slot under
// MaxRenderers, or spawning one. Other Acquires for the key wait on it
// instead of starting renderers of their own, which only one of them
// could bind; under a burst of calls to a new origin, each started
// renderer would otherwise be ended again as not needed, and count
// against MaxRenderers meanwhile, making room by evicting other origins'
// renderers. A claim lives in b.claims until the claimant has published
// its renderer under the key (bindLocked) or given up; from then on,
// waiters find the renderer in b.bound, and wait for its bind there.
type claim struct {
	done chan struct{} // closed once the claim is resolved
	// err is why the claimant gave up, for every waiter; nil when its
	// own ctx ended, and then a waiter takes over. Written before done
	// is closed, read after.
	err error
}

// obtain gets a renderer for k, claimed by c: from the pool, else
// spawned once a slot is free, evicting the longest-idle renderer to make
// one. It publishes the renderer under k and resolves c, or, when it
// fails, withdraws c.
func (b *Broker) obtain(ctx context.Context, k key, c *claim) (r *Renderer, fromPool bool, err error) {
	defer func() {
		if err == nil {
			return
		}
		if ctx.Err() == nil {
			c.err = err
		}
		b.mu.Lock()
		delete(b.claims, k)
		b.mu.Unlock()
		close(c.done)
	}()
	for {
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return nil, false, ErrClosed
		}
		if n := len(b.pool); n > 0 {
			r, b.pool = b.pool[n-1], b.pool[:n-1]
			fromPool = true
		} else if len(b.live)+b.spawning >= b.cfg.MaxRenderers {
			victim := b.idlestLocked()
			wait := b.slotFreed
			b.mu.Unlock()
			if victim != nil {
				victim.endIfIdle(evictAfter, "evicted to make room (MaxRenderers)")
			}
			select {
			case <-wait:
			case <-time.After(evictAfter / 2):
				// Look again: a renderer may have become evictable.
			case <-ctx.Done():
				return nil, false, fmt.Errorf("broker: waiting for a renderer slot: %w", ctx.Err())
			}
			continue
		} else {
			fromPool = false
			b.spawning++
		}
		b.mu.Unlock()
		if !fromPool {
			if r, err = b.spawn(ctx); err != nil {
				b.mu.Lock()
				closed := b.closed
				b.mu.Unlock()
				if closed {
					// Close ended it: a shutdown, not the renderer's fault.
					return nil, false, ErrClosed
				}
				return nil, false, err
			}
		}
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			r.kill(ExitShutdown, "")
			return nil, false, ErrClosed
		}
		if _, alive := b.live[r]; !alive {
			// It died since it left the pool or was spawned, and forget
			// has run: published now, it would never be removed.
			b.mu.Unlock()
			if fromPool {
				b.refillPool()
			}
			if err := ctx.Err(); err != nil {
				return nil, false, fmt.Errorf("broker: acquire: %w", err)
			}
			continue
		}
		b.bindLocked(k, r)
		delete(b.claims, k)
		b.mu.Unlock()
		close(c.done)
		return r, fromPool, nil
	}
}

// evictAfter is how long a bound renderer must have been idle before
// Acquire may evict it to make room: a renderer that Acquire has just
// handed out, and on which the caller has not made its first call yet,
// must not be taken away under it.
const evictAfter = 250 * time.Millisecond

// idlestLocked returns the bound renderer idle the longest, at least
// evictAfter, with no call in flight, or nil.
func (b *Broker) idlestLocked() *Renderer {
	var victim *Renderer
	var since time.Time
	for _, r := range b.bound {
		idle, ok := r.idleSince()
		if ok && time.Since(idle) >= evictAfter && (victim == nil || idle.Before(since)) {
			victim, since = r, idle
		}
	}
	return victim
}

// Release ends the renderer bound to origin/document, if any.
func (b *Broker) Release(origin, document string) {
	b.mu.Lock()
	r := b.bound[b.keyFor(origin, document)]
	b.mu.Unlock()
	if r != nil {
		r.kill(ExitReleased, "")
		<-r.exited
	}
}

// Renderers returns the status of every live renderer.
func (b *Broker) Renderers() []RendererStatus {
	b.mu.Lock()
	rs := make([]*Renderer, 0, len(b.live))
	for r := range b.live {
		rs = append(rs, r)
	}
	b.mu.Unlock()
	out := make([]RendererStatus, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.Status())
	}
	return out
}

// Events returns the most recent events, oldest first.
func (b *Broker) Events() []Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Event(nil), b.events...)
}

// emit records e and publishes it.
func (b *Broker) emit(e Event) { b.publish(b.record(e)) }

// record timestamps e and adds it to Events. It is separate from publish
// so that an event can be in Events before a channel says it happened
// (see Renderer.Done) and published after, when OnEvent may look.
func (b *Broker) record(e Event) Event {
	e.Time = time.Now()
	b.mu.Lock()
	if len(b.events) == maxEvents {
		copy(b.events, b.events[1:])
		b.events = b.events[:maxEvents-1]
	}
	b.events = append(b.events, e)
	b.mu.Unlock()
	return e
}

// publish logs e and passes it to Config.OnEvent.
func (b *Broker) publish(e Event) {
	attrs := []any{"event", e.Kind, "origin", e.Origin, "pid", e.PID}
	if e.Document != "" {
		attrs = append(attrs, "document", e.Document)
	}
	if e.Err != nil {
		attrs = append(attrs, "reason", e.Err.Reason, "detail", e.Err.Error())
		switch e.Err.Reason {
		case ExitClean, ExitReleased, ExitIdle, ExitShutdown:
			b.log.Debug("renderer ended", attrs...)
		default:
			b.log.Warn("renderer killed", attrs...)
		}
	} else {
		if e.Layers != nil {
			attrs = append(attrs, "layers", e.Layers.String())
		}
		b.log.Debug("renderer", attrs...)
	}
	if b.cfg.OnEvent != nil {
		b.cfg.OnEvent(e)
	}
}

// bindLocked publishes live renderer r under k; b.mu is held. Its key is
// set in the same critical section, under both locks, so that forget
// (which runs under b.mu when r dies) either runs before, and then r is no
// longer live and is not published, or after, and then finds r under its
// key and removes it. A dead renderer never stays in bound.
func (b *Broker) bindLocked(k key, r *Renderer) {
	r.mu.Lock()
	r.key = &k
	r.lastUsed = time.Now()
	r.mu.Unlock()
	b.bound[k] = r
}

// forget removes r from every table once it has exited.
func (b *Broker) forget(r *Renderer) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.live, r)
	// r.key is only written under b.mu (bindLocked), so reading it here
	// needs no r.mu.
	if r.key != nil && b.bound[*r.key] == r {
		delete(b.bound, *r.key)
	}
	for i, pr := range b.pool {
		if pr == r {
			b.pool = append(b.pool[:i], b.pool[i+1:]...)
			break
		}
	}
	b.wakeWaitersLocked()
	// A slot is free: the pool, emptied by a burst, fills up again.
	b.refillPoolLocked()
}

// wakeWaiters tells Acquires waiting for a slot, and Close, to look again.
func (b *Broker) wakeWaiters() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.wakeWaitersLocked()
}

func (b *Broker) wakeWaitersLocked() {
	close(b.slotFreed)
	b.slotFreed = make(chan struct{})
}

// spawnCount is one spawn its caller counted in b.spawning. The spawn
// moves it to b.live (goLive) the moment its process exists, in one
// critical section, so that a renderer is never counted twice against
// MaxRenderers; a spawn that fails before that gives the slot back
// (done, deferred) and wakes whoever waits for one.
type spawnCount struct {
	b    *Broker
	live bool
}

// goLive moves the spawn from b.spawning to b.live as r. b.mu is held.
func (c *spawnCount) goLive(r *Renderer) {
	c.b.live[r] = struct{}{}
	c.b.spawning--
	c.live = true
}

// done uncounts a spawn that never went live.
func (c *spawnCount) done() {
	if c.live {
		return
	}
	c.b.mu.Lock()
	c.b.spawning--
	c.b.mu.Unlock()
	c.b.wakeWaiters()
}

// fillPool spawns renderers until the pool holds WarmPool of them.
func (b *Broker) fillPool(ctx context.Context) error {
	for {
		b.mu.Lock()
		need := !b.closed && len(b.pool)+b.spawning < b.cfg.WarmPool && len(b.live)+b.spawning < b.cfg.MaxRenderers
		if need {
			b.spawning++
		}
		b.mu.Unlock()
		if !need {
			return nil
		}
		r, err := b.spawn(ctx)
		b.mu.Lock()
		if err == nil {
			if b.closed {
				b.mu.Unlock()
				r.kill(ExitShutdown, "")
				return ErrClosed
			}
			// One that died since it was ready has been forgotten
			// already: pooled, it would hold a slot until popped.
			if _, alive := b.live[r]; alive {
				b.pool = append(b.pool, r)
				b.wakeWaitersLocked() // an Acquire waiting for a slot can take it
			}
		}
		b.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

// refillPool tops the warm pool up in the background.
func (b *Broker) refillPool() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refillPoolLocked()
}

// Close ends every renderer, waits until each has been reaped, and
// releases every descriptor and goroutine the broker holds.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	rs := make([]*Renderer, 0, len(b.live))
	for r := range b.live {
		rs = append(rs, r)
	}
	dirs := b.dirs
	b.dirs = nil
	b.mu.Unlock()
	for _, r := range rs {
		r.kill(ExitShutdown, "")
	}
	for _, r := range rs {
		<-r.exited
	}
	b.wg.Wait()
	// Renderers still spawning when Close began end themselves once
	// they see b.closed; wait for them too.
	for {
		b.mu.Lock()
		n := len(b.live) + b.spawning
		wait := b.slotFreed
		b.mu.Unlock()
		if n == 0 {
			break
		}
		<-wait
	}
	b.spawner.stop()
	for _, f := range dirs {
		f.Close()
	}
	if b.exeFile != nil {
		b.exeFile.Close()
	}
	return nil
}

// Call sends one request to r and waits for the reply, within the
// broker's CallTimeout. When the renderer dies before it answers — killed
// by the monitor, a limit, a timeout — the error is the *ExitError that
// says why. A renderer that breaks the protocol is killed. A request the
// caller got wrong — descriptors that do not match the method's spec, a
// payload too large or that does not marshal (a proto3 string that is not
// valid UTF-8, such as a file name taken from an origin) — is never sent:
// the error wraps ipc.ErrSpec (and proto.Error for a marshal failure) and
// comes back at once, and the renderer lives on.
//
// A descriptor of a regular-file kind reaches the renderer as a fresh
// open of the same file (see ownDescriptions), never as the caller's own
// open file description: what the renderer does to its offset or status
// flags stays with it. That needs /proc.
func Call[Req, Resp proto.Message](ctx context.Context, r *Renderer, m *ipc.Method[Req, Resp], req Req, fds ...*os.File) (Resp, []*os.File, error) {
	var zero Resp
	fds, own, err := ownDescriptions(m, fds)
	if err != nil {
		return zero, nil, err
	}
	defer closeOwn(own)
	if err := r.begin(); err != nil {
		return zero, nil, err
	}
	defer r.end()
	callCtx := ctx
	if t := r.b.cfg.CallTimeout; t > 0 {
		var cancel context.CancelFunc
		callCtx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	resp, rfds, err := ipc.Call(callCtx, r.conn, m, req, fds...)
	if err == nil {
		r.credit(rfds, m.Spec().ResponseFDs)
		return resp, rfds, nil
	}
	var status *ipc.StatusError
	switch {
	case errors.As(err, &status):
		return zero, nil, err
	case errors.Is(err, ipc.ErrSpec):
		return zero, nil, err // the caller's own mistake: nothing was sent
	case ctx.Err() != nil:
		return zero, nil, err // the caller gave up; the renderer lives on
	case callCtx.Err() != nil && (errors.Is(err, ipc.ErrPeerNotReading) || r.notReading()):
		r.kill(ExitBrokerLimit, fmt.Sprintf("the renderer stopped reading its socket: %s request not read within %v", m.Spec().Name, r.b.cfg.CallTimeout))
	case callCtx.Err() != nil:
		r.kill(ExitTimeout, fmt.Sprintf("%s did not answer within %v", m.Spec().Name, r.b.cfg.CallTimeout))
	case errors.Is(err, ipc.ErrProtocol):
		r.kill(connExit(err))
	}
	// The connection is dead or the renderer is being killed: report
	// why it ended, once the supervisor knows.
	select {
	case <-r.exited:
		return zero, nil, r.exitErr
	case <-time.After(5 * time.Second):
		r.kill(ExitBadMessage, fmt.Sprintf("connection failed: %v", err))
		<-r.exited
		return zero, nil, r.exitErr
	}
}
