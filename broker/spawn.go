package broker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/internal/launch"
	"github.com/sandkit/sandkit/ipc"
	"github.com/sandkit/sandkit/policy"
)

// spawner starts every renderer from one locked OS thread. Pdeathsig
// fires when the thread that forked the child exits, not the process: if
// renderers were started from arbitrary runtime threads, the runtime
// retiring one of them would kill renderers at random.
type spawner struct {
	reqs chan func()
	done chan struct{}
}

func newSpawner() *spawner {
	s := &spawner{reqs: make(chan func()), done: make(chan struct{})}
	go func() {
		// Never unlocked: when this goroutine returns, the runtime ends
		// the thread, and Pdeathsig kills anything still running.
		runtime.LockOSThread()
		defer close(s.done)
		for f := range s.reqs {
			f()
		}
	}()
	return s
}

// run runs f on the spawner's thread and returns once it has.
func (s *spawner) run(f func()) {
	done := make(chan struct{})
	s.reqs <- func() { defer close(done); f() }
	<-done
}

func (s *spawner) stop() {
	close(s.reqs)
	<-s.done
}

func cloneFlags(ns policy.Namespaces) uintptr {
	var f uintptr
	for _, n := range []struct {
		on   bool
		flag uintptr
	}{
		{ns.User, unix.CLONE_NEWUSER}, {ns.Mount, unix.CLONE_NEWNS}, {ns.PID, unix.CLONE_NEWPID},
		{ns.Net, unix.CLONE_NEWNET}, {ns.IPC, unix.CLONE_NEWIPC}, {ns.UTS, unix.CLONE_NEWUTS},
		{ns.Cgroup, unix.CLONE_NEWCGROUP},
	} {
		if n.on {
			f |= n.flag
		}
	}
	return f
}

// logPipe returns the pipe for a renderer's stderr: the read end
// non-blocking for the broker's poller, the write end blocking, so the
// renderer's writes never depend on its own poller. The pipe holds one
// page: a renderer that writes faster than the broker reads waits for it,
// which keeps a dying renderer alive while the broker looks at its last
// words (see evidence.go). Its log lines are slower to reach the broker
// only when it writes more than a page at once.
func logPipe() (r, w *os.File, err error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return nil, nil, err
	}
	if err := unix.SetNonblock(p[0], true); err != nil {
		unix.Close(p[0])
		unix.Close(p[1])
		return nil, nil, err
	}
	if _, err := unix.FcntlInt(uintptr(p[0]), unix.F_SETPIPE_SZ, os.Getpagesize()); err != nil {
		unix.Close(p[0])
		unix.Close(p[1])
		return nil, nil, fmt.Errorf("F_SETPIPE_SZ: %w", err)
	}
	return os.NewFile(uintptr(p[0]), "renderer-log"), os.NewFile(uintptr(p[1]), "renderer-log"), nil
}

// spawn starts one renderer and waits until it reports ready with every
// layer the policy requires in force.
//
// The caller has counted the spawn in b.spawning; spawn moves it from
// there to b.live the moment the process exists (one lock, so a renderer is
// never counted twice against MaxRenderers), or uncounts it on failure.
func (b *Broker) spawn(ctx context.Context) (*Renderer, error) {
	counted := true
	defer func() {
		if counted {
			b.mu.Lock()
			b.spawning--
			b.mu.Unlock()
			b.wakeWaiters()
		}
	}()
	p := b.policy
	local, remote, err := ipc.SocketPair()
	if err != nil {
		return nil, fmt.Errorf("broker: socket pair: %w", err)
	}
	logR, logW, err := logPipe()
	if err != nil {
		local.Close()
		remote.Close()
		return nil, fmt.Errorf("broker: log pipe: %w", err)
	}
	hostID := -1
	if b.ids != nil {
		b.mu.Lock()
		id, err := b.ids.alloc()
		b.mu.Unlock()
		if err != nil {
			local.Close()
			remote.Close()
			logR.Close()
			logW.Close()
			return nil, err
		}
		hostID = int(id)
	}
	var proc process
	if b.cfg.CgroupDir == "" && (hostID < 0 || b.ids.execReason == nil) {
		proc, err = b.startVfork(logW, remote, hostID)
	} else {
		proc, err = b.startExec(logW, remote, hostID)
	}
	remote.Close()
	logW.Close()
	if err != nil {
		b.releaseID(hostID)
		local.Close()
		logR.Close()
		return nil, err
	}
	// Non-blocking, so that supervise waits for the exit on the poller.
	_ = unix.SetNonblock(proc.pidfd, true)
	r := &Renderer{
		b:        b,
		reap:     proc.reap,
		pid:      proc.pid,
		pidfd:    os.NewFile(uintptr(proc.pidfd), "pidfd"),
		started:  time.Now(),
		logs:     &logTail{},
		cgroup:   proc.cg,
		hostID:   hostID,
		ready:    make(chan struct{}),
		bound:    make(chan struct{}),
		exited:   make(chan struct{}),
		logsRead: make(chan struct{}),
	}
	b.mu.Lock()
	b.live[r] = struct{}{}
	b.spawning--
	counted = false
	b.mu.Unlock()
	conn, connErr := ipc.NewConn(local, ipc.WithMux(r.handlers()), ipc.WithLimits(rendererLimits()), ipc.WithLogger(b.log.With("pid", r.pid)))
	r.conn = conn
	b.wg.Add(3)
	go func() {
		defer b.wg.Done()
		defer close(r.logsRead)
		r.readLogs(logR)
	}()
	go func() {
		defer b.wg.Done()
		r.supervise()
	}()
	go func() {
		defer b.wg.Done()
		r.watchConn()
	}()
	if connErr != nil {
		r.kill(ExitBadMessage, connErr.Error())
		<-r.exited
		return nil, fmt.Errorf("broker: %w", connErr)
	}
	if p.Limits.Lifetime > 0 {
		t := time.AfterFunc(p.Limits.Lifetime, func() { r.kill(ExitTimeout, fmt.Sprintf("lifetime limit %v", p.Limits.Lifetime)) })
		go func() { <-r.exited; t.Stop() }()
	}
	timeout := time.NewTimer(b.cfg.ReadyTimeout)
	defer timeout.Stop()
	select {
	case <-r.ready:
	case <-r.exited:
		return nil, r.startErr()
	case <-timeout.C:
		r.kill(ExitTimeout, fmt.Sprintf("not ready within %v", b.cfg.ReadyTimeout))
		<-r.exited
		return nil, r.startErr()
	case <-ctx.Done():
		r.kill(ExitReleased, "spawn cancelled")
		<-r.exited
		return nil, ctx.Err()
	}
	r.mu.Lock()
	readyErr := r.readyErr
	layers := r.layers
	r.mu.Unlock()
	if readyErr != nil {
		var ee *ExitError
		if errors.As(readyErr, &ee) {
			r.killWith(ee)
		} else {
			r.kill(ExitLockdownFailed, readyErr.Error())
		}
		<-r.exited
		return nil, r.startErr()
	}
	b.emit(Event{Kind: EventReady, PID: r.pid, Layers: layers})
	return r, nil
}

// process is a renderer process just started: its pid and pidfd, how to
// reap it, and its cgroup (nil without Config.CgroupDir).
type process struct {
	pid   int
	pidfd int
	reap  func() *os.ProcessState // nil if the wait failed
	cg    *cgroup
}

// startVfork starts a renderer with spawnVfork, from the spawner's thread:
// as hostID, if it is not -1, exec'd through the broker's descriptor of
// the executable.
func (b *Broker) startVfork(logW, remote *os.File, hostID int) (process, error) {
	p := b.policy
	var (
		pid, pidfd int
		err        error
	)
	spec := vforkSpec{path: b.exe, argv: b.args, ns: cloneFlags(p.Namespaces), hostID: hostID, log: logW, sock: remote}
	if hostID >= 0 {
		spec.exe = b.exeFile
	}
	b.spawner.run(func() { pid, pidfd, err = spawnVfork(spec) })
	if err != nil {
		return process{}, spawnErr(p, err)
	}
	proc, _ := os.FindProcess(pid) // never fails on Unix
	reap := func() *os.ProcessState {
		state, _ := proc.Wait()
		return state
	}
	return process{pid: pid, pidfd: pidfd, reap: reap}, nil
}

// startExec starts a renderer through os/exec from the spawner's thread,
// which copies the broker's page tables (see spawnVfork). The broker uses
// it in two cases only:
//   - with a cgroup directory: Go's fork starts the child straight in a
//     new child of it (clone3 with CLONE_INTO_CGROUP), so the renderer is
//     never counted in the broker's cgroup. A vfork child on its own stack
//     needs glibc's clone, which has no clone3 form;
//   - as hostID, in a user namespace, when that id may not create one
//     (idPool.execReason): the maps, which name an id other than the
//     creator's, are then written by the privileged parent while the child
//     waits.
func (b *Broker) startExec(logW, remote *os.File, hostID int) (process, error) {
	p := b.policy
	pidfd := -1
	attr := &syscall.SysProcAttr{
		Cloneflags: cloneFlags(p.Namespaces),
		Pdeathsig:  syscall.SIGKILL,
		PidFD:      &pidfd,
		Setsid:     true,
	}
	path := b.exe
	extra := []*os.File{remote} // fd 3
	switch {
	case hostID >= 0 && p.Namespaces.User:
		// hostID becomes 0 inside, which lets the renderer mount its
		// empty root; it drops every capability before it reads input.
		// The child starts as host root in the new namespace: it
		// takes hostID by becoming 0 there, and drops the broker's
		// supplementary groups, which needs setgroups allowed in the
		// namespace; the renderer's seccomp filter never allows it.
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: hostID, Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: hostID, Size: 1}}
		attr.GidMappingsEnableSetgroups = true
		attr.Credential = &syscall.Credential{Uid: 0, Gid: 0, Groups: []uint32{}}
	case hostID >= 0:
		attr.Credential = &syscall.Credential{Uid: uint32(hostID), Gid: uint32(hostID), Groups: []uint32{}}
	case p.Namespaces.User:
		// The broker's own uid and gid become 0 inside, which lets the
		// renderer mount its empty root; it drops every capability
		// before it reads input. setgroups stays denied.
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}}
		attr.GidMappingsEnableSetgroups = false
	}
	if hostID >= 0 {
		// Exec through the broker's descriptor (fd 4 in the child),
		// not the path, whose directories hostID may not search. The
		// renderer closes fd 4 before its runtime starts (early.go).
		extra = append(extra, b.exeFile)
		path = "/proc/self/fd/4"
	}
	var cg *cgroup
	if b.cfg.CgroupDir != "" {
		var err error
		cg, err = newCgroup(b.cfg.CgroupDir, fmt.Sprintf("sandkit-%d-%d", os.Getpid(), b.cgroupSeq.Add(1)), p.Limits.Cgroup)
		if err != nil {
			return process{}, &policy.UnavailableError{Layer: policy.LayerCgroup, Err: err}
		}
		attr.UseCgroupFD = true
		attr.CgroupFD = int(cg.dir.Fd())
	}
	cmd := &exec.Cmd{
		Path:        path,
		Args:        b.args,
		Env:         []string{}, // empty, not inherited
		Stdout:      logW,
		Stderr:      logW,
		ExtraFiles:  extra,
		SysProcAttr: attr,
	}
	var err error
	b.spawner.run(func() { err = cmd.Start() })
	if cg != nil {
		cg.dir.Close()
	}
	if err != nil {
		if cg != nil {
			cg.remove()
		}
		return process{}, spawnErr(p, err)
	}
	reap := func() *os.ProcessState {
		_ = cmd.Wait()
		return cmd.ProcessState
	}
	return process{pid: cmd.Process.Pid, pidfd: pidfd, reap: reap, cg: cg}, nil
}

// releaseID returns a renderer's host id to the pool; -1 is none.
func (b *Broker) releaseID(id int) {
	if id < 0 {
		return
	}
	b.mu.Lock()
	b.ids.release(uint32(id))
	b.mu.Unlock()
}

// spawnErr explains a failed spawn: a *policy.UnavailableError naming the
// user namespace when the kernel refused to create the namespaces, not
// when a child failed a step of its own (setsid, exec, a change of ids).
func spawnErr(p *policy.Policy, err error) error {
	var step *childStepError
	if errors.As(err, &step) && !step.namespace {
		return fmt.Errorf("broker: start renderer: %w", err)
	}
	if p.Namespaces.User && (errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EACCES)) {
		return fmt.Errorf("broker: %w", &policy.UnavailableError{Layer: policy.LayerUserNS, Err: fmt.Errorf("cannot create the renderer's namespaces: %w", err)})
	}
	return fmt.Errorf("broker: start renderer: %w", err)
}

// watchConn kills a renderer whose connection dies under it: at once for
// a protocol violation, even when no call was in flight to notice it; and
// after a grace period when the renderer hung up, so that a renderer on its
// way out (a crash) is classified by how it exited, not by the hang-up.
func (r *Renderer) watchConn() {
	if r.conn == nil {
		return
	}
	select {
	case <-r.exited:
		return
	case <-r.conn.Done():
	}
	err := r.conn.Err()
	if errors.Is(err, ipc.ErrProtocol) {
		r.kill(connExit(err))
		return
	}
	grace := time.NewTimer(time.Second)
	defer grace.Stop()
	select {
	case <-r.exited:
	case <-grace.C:
		r.kill(ExitBadMessage, fmt.Sprintf("connection closed while the renderer kept running: %v", err))
	}
}

// rendererRequestRate bounds a renderer's requests to the broker, per
// second and in a burst. A renderer asks little (Ready once, then Open per
// resource), so this is room for any document; it bounds the CPU that one
// spamming requests that fail fast can take from the broker.
const rendererRequestRate = 1000

// rendererLimits are the ipc limits of a renderer's connection: the
// defaults (zero fields), which the renderer uses too, and the request
// rate.
func rendererLimits() ipc.Limits {
	return ipc.Limits{MaxRequestRate: rendererRequestRate, RequestBurst: rendererRequestRate}
}

// connExit says how a renderer whose connection died of err (a protocol
// violation) ends: ExitBrokerLimit, naming the bound, if it exceeded what
// it may make the broker hold or spend (ipc.Reason.Bound: requests in
// flight, replies or cancels it does not read, request rate, cancels that
// match nothing); ExitBadMessage for anything malformed.
func connExit(err error) (ExitReason, string) {
	var perr *ipc.ProtocolError
	if !errors.As(err, &perr) || !perr.Reason.Bound() {
		return ExitBadMessage, err.Error()
	}
	if perr.Reason == ipc.ReasonNotReading {
		return ExitBrokerLimit, "the renderer stopped reading its socket: " + perr.Detail
	}
	return ExitBrokerLimit, string(perr.Reason) + ": " + perr.Detail
}

// notReading reports whether the renderer leaves what the broker sent it
// unread, and still does a moment later, having read nothing meanwhile: it
// stopped reading its socket, rather than taking long to answer.
func (r *Renderer) notReading() bool {
	before, err := r.conn.Unread()
	if err != nil || before == 0 {
		return false
	}
	time.Sleep(50 * time.Millisecond)
	after, err := r.conn.Unread()
	return err == nil && after >= before
}

// startErr turns a renderer that ended before it was ready into the error
// spawn returns: a *policy.UnavailableError when a layer could not be
// applied, so callers learn which one, wrapping the *ExitError.
func (r *Renderer) startErr() error {
	e := r.exitErr
	if e.Reason == ExitLockdownFailed && e.Layer != "" {
		return fmt.Errorf("broker: renderer lockdown failed: %w", &policy.UnavailableError{Layer: e.Layer, Err: e})
	}
	return fmt.Errorf("broker: renderer did not start: %w", e)
}

// supervise waits for the renderer to exit (through its pidfd, on the
// runtime's poller: no thread is parked per renderer), reaps it, and
// classifies the exit.
func (r *Renderer) supervise() {
	if rc, err := r.pidfd.SyscallConn(); err == nil {
		_ = rc.Read(func(fd uintptr) bool {
			var info unix.Siginfo
			// WNOWAIT: only learn that it exited; reap below reaps.
			err := unix.Waitid(unix.P_PIDFD, int(fd), &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
			if errors.Is(err, unix.EAGAIN) {
				return false
			}
			return err != nil || info.Signo != 0
		})
	}
	r.state = r.reap()
	// Reaped: no task runs as its id any more.
	r.b.releaseID(r.hostID)
	// The renderer is gone, so its end of the socket is closed: let the
	// connection read what it sent last, up to the hang-up, before
	// judging. A renderer that breaks the protocol and exits at once
	// must not pass for a clean exit.
	//
	// Likewise its stderr: the runtime's last words, which explain a
	// crash or a limit, may still be in the pipe when the exit is seen.
	drain, stopDrain := context.WithTimeout(context.Background(), time.Second)
	if r.conn != nil {
		select {
		case <-r.conn.Done():
		case <-drain.Done():
		}
		r.conn.Close()
	}
	select {
	case <-r.logsRead:
	case <-drain.Done():
	}
	stopDrain()
	r.exitErr = r.classify()
	r.pidfd.Close()
	if r.cgroup != nil {
		r.cgroup.remove()
	}
	r.mu.Lock()
	if r.idleTimer != nil {
		r.idleTimer.Stop()
	}
	k := r.key
	r.mu.Unlock()
	if k != nil {
		r.exitErr.Origin, r.exitErr.Document = k.origin, k.document
	}
	r.b.forget(r)
	e := r.b.record(Event{Kind: EventExited, Origin: r.exitErr.Origin, Document: r.exitErr.Document, PID: r.pid, Err: r.exitErr})
	close(r.exited)
	r.b.publish(e)
}

// classify explains the exit. A reason the broker recorded before killing
// wins; otherwise the wait status, the CPU time used, the cgroup's OOM
// counter and the renderer's last log lines decide.
func (r *Renderer) classify() *ExitError {
	r.mu.Lock()
	recorded := r.killReason
	readyErr := r.readyErr
	r.mu.Unlock()
	e := &ExitError{PID: r.pid, Lifetime: time.Since(r.started)}
	if recorded == nil && r.conn != nil && errors.Is(r.conn.Err(), ipc.ErrProtocol) {
		recorded = &ExitError{}
		recorded.Reason, recorded.Detail = connExit(r.conn.Err())
	}
	if recorded == nil {
		var ready *ExitError
		if errors.As(readyErr, &ready) {
			recorded = ready // a ready report that failed the checks
		}
	}
	if recorded != nil {
		*e = *recorded
		e.PID, e.Lifetime = r.pid, time.Since(r.started)
		e.PeakRSS = peakRSS(r.state)
		return e
	}
	e.PeakRSS = peakRSS(r.state)
	ps := r.state
	if ps == nil { // wait failed: nothing to classify by
		e.Reason, e.Detail = ExitCrash, "exit status unknown: "+r.logs.lastLine()
		return e
	}
	ws, _ := ps.Sys().(syscall.WaitStatus)
	cpu := ps.UserTime() + ps.SystemTime()
	limits := r.b.policy.Limits
	last := r.logs.lastLine()
	exhausted := r.logs.exhausted()
	switch {
	case ws.Signaled() && ws.Signal() == syscall.SIGXCPU,
		ws.Signaled() && ws.Signal() == syscall.SIGKILL && limits.CPUTime > 0 && cpu >= limits.CPUTime-time.Second:
		e.Reason, e.Detail = ExitCPULimit, fmt.Sprintf("used %v of CPU, limit %v", cpu.Round(time.Millisecond), limits.CPUTime)
	case ws.Signaled() && ws.Signal() == syscall.SIGKILL && r.cgroup != nil && r.cgroup.oomKilled():
		e.Reason, e.Detail = ExitMemoryLimit, "cgroup memory.max reached"
	case ws.Signaled() && ws.Signal() == syscall.SIGSYS:
		e.Reason, e.Detail = ExitViolation, "disallowed syscall (SIGSYS; the violation monitor is off)"
	case ws.Exited() && ws.ExitStatus() != 0 && r.logs.threadCreateFailed():
		e.Reason, e.Detail = r.threadFailure(e.PeakRSS, last)
	case ws.Exited() && ws.ExitStatus() != 0 && exhausted == ExitMemoryLimit && memoryCorroborated(e.PeakRSS, limits.Memory):
		e.Reason, e.Detail = ExitMemoryLimit, fmt.Sprintf("resident peak %d MiB of the %d MiB limit: %s", e.PeakRSS>>20, limits.Memory>>20, last)
	case ws.Exited() && ws.ExitStatus() != 0 && exhausted == ExitMemoryLimit:
		e.Reason, e.Detail = ExitCrash, fmt.Sprintf("exit status %d; the renderer claimed: %s (resident peak %d MiB, memory limit %d MiB: not corroborated)", ws.ExitStatus(), last, e.PeakRSS>>20, limits.Memory>>20)
	case ws.Exited() && ws.ExitStatus() != 0 && exhausted == ExitThreadLimit:
		e.Reason, e.Detail = ExitThreadLimit, "thread limit (RLIMIT_NPROC) reached: "+last
	case ws.Signaled():
		e.Reason, e.Detail = ExitCrash, "signal "+ws.Signal().String()
	case ws.Exited() && ws.ExitStatus() == 0:
		e.Reason = ExitClean
	case ws.Exited() && ws.ExitStatus() == launch.ExitLockdown:
		e.Reason, e.Detail = ExitLockdownFailed, r.logs.lockdownFailure()
	default:
		e.Reason, e.Detail = ExitCrash, fmt.Sprintf("exit status %d: %s", ws.ExitStatus(), last)
	}
	return e
}

// peakRSS returns the resident peak the kernel recorded for a reaped
// renderer, in bytes; 0 if unknown.
func peakRSS(ps *os.ProcessState) uint64 {
	if ps == nil {
		return 0
	}
	ru, ok := ps.SysUsage().(*syscall.Rusage)
	if !ok || ru.Maxrss <= 0 {
		return 0
	}
	return uint64(ru.Maxrss) << 10 // kilobytes on Linux
}

// memoryCorroborated reports whether the broker's own evidence backs a
// renderer's claim that it ran out of memory: its resident peak, which the
// kernel measured, reached half its memory limit. The renderer's stderr
// is its own word: a compromised renderer that prints the runtime's
// out-of-memory line to pass off a crash as a limit must first have made
// half its limit resident. Without a limit there is none to have reached.
//
// Half, not all: the limit counts memory mapped, the resident peak
// memory touched, and at the failing allocation a runtime holds untouched
// reservations (a Go heap arena is 64 MiB) and the limit's last stretch
// is never resident. The price is that a single allocation larger than
// the limit, refused before anything was touched, is reported as a crash
// with the claim quoted, not as the memory limit: the broker cannot tell
// it from a lie. See SECURITY.md.
func memoryCorroborated(peak, limit uint64) bool {
	return limit != 0 && peak >= limit/2
}

// logTail keeps the last lines a renderer wrote to stderr, to explain its
// exit. The renderer is hostile: lines and the tail are bounded.
type logTail struct {
	mu    sync.Mutex
	lines []string
	// fatal is the runtime's first line about its death (see isFatal),
	// kept past the stack dump, and after it the lines that follow it.
	fatal string
	after []string
	// lockdown is the renderer's last launch.LockdownFailedPrefix line,
	// the prefix removed.
	lockdown string
}

const (
	maxLogLine    = 1024
	maxLogLines   = 16
	maxAfterFatal = 4
)

// isFatal reports whether line is one the Go runtime starts its last
// words with: a fatal error, a panic, a failed thread creation, or a
// signal it could not handle ("SIGSEGV: segmentation violation").
func isFatal(line string) bool {
	for _, prefix := range []string{"fatal error:", "panic:", cgoThreadFailed} {
		if strings.HasPrefix(line, prefix) {
			return true
		}
	}
	name, _, found := strings.Cut(line, ": ")
	return found && len(name) > 3 && strings.HasPrefix(name, "SIG") && strings.ToUpper(name) == name && !strings.Contains(name, " ")
}

func (t *logTail) add(line string) {
	if isSanitizerNoise(line) {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if failure, ok := strings.CutPrefix(line, launch.LockdownFailedPrefix); ok {
		t.lockdown = failure
	}
	switch {
	case t.fatal == "" && isFatal(line):
		t.fatal = line
	case t.fatal != "" && len(t.after) < maxAfterFatal && strings.TrimSpace(line) != "":
		t.after = append(t.after, line)
	}
	if len(t.lines) == maxLogLines {
		copy(t.lines, t.lines[1:])
		t.lines = t.lines[:maxLogLines-1]
	}
	t.lines = append(t.lines, line)
}

// isSanitizerNoise reports the one line the race detector's runtime
// (binaries built with -race: tests only) prints in every renderer: it
// looks for /proc/self/exe when it starts, after the ELF constructor has
// moved the renderer into its empty root. It says nothing of the renderer.
func isSanitizerNoise(line string) bool {
	return strings.HasPrefix(line, "==") && strings.Contains(line, "WARNING: reading executable name failed")
}

// lastLine returns the line that best explains a crash: the runtime's
// fatal error or panic line if there was one, else the last line.
func (t *logTail) lastLine() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.fatal != "" {
		return t.fatal
	}
	for i := len(t.lines) - 1; i >= 0; i-- {
		if strings.TrimSpace(t.lines[i]) != "" {
			return t.lines[i]
		}
	}
	return ""
}

// lockdownFailure explains an exit with launch.ExitLockdown that no
// ready report explained: the step and error the renderer wrote last
// (launch.LockdownFailedPrefix), else its last line. It is never empty:
// a renderer that said nothing is reported as such.
func (t *logTail) lockdownFailure() string {
	t.mu.Lock()
	failure := t.lockdown
	t.mu.Unlock()
	if failure != "" {
		return failure
	}
	if last := t.lastLine(); last != "" {
		return "no failing step reported; last log line: " + last
	}
	return fmt.Sprintf("exit status %d with no ready report and nothing on stderr", launch.ExitLockdown)
}

// cgoThreadFailed starts the line the runtime of a cgo program writes
// before it aborts because pthread_create failed. Renderers are cgo
// programs (the lockdown links libseccomp).
const cgoThreadFailed = "runtime/cgo: pthread_create failed:"

// exhausted reports which limit the runtime's last words name:
// ExitMemoryLimit, ExitThreadLimit, or "" for none. They are the
// renderer's word, so this explains an exit and grants nothing.
//
// Memory runs out in more places than the heap:
//   - the runtime's own metadata ("cannot allocate memory");
//   - the stack of a new thread, where glibc turns ENOMEM into EAGAIN,
//     the kernel's answer at RLIMIT_NPROC too: that line names no limit,
//     and classify decides it by the broker's own evidence alone
//     (Renderer.threadFailure);
//   - a span queue of the garbage collector. Go 1.26's collector does not
//     check that allocation (newSpanSPMC uses sysAlloc's result unchecked)
//     and faults on address 0 in spanQueue.tryDrain. Only that exact
//     fault counts; any other segmentation fault stays a crash.
func (t *logTail) exhausted() ExitReason {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch f := t.fatal; {
	case f == "fatal error: thread exhaustion":
		return ExitThreadLimit
	case strings.HasPrefix(f, "fatal error:") && (strings.Contains(f, "out of memory") || strings.Contains(f, "cannot allocate memory")),
		f == "SIGSEGV: segmentation violation" && t.spanQueueFault():
		return ExitMemoryLimit
	}
	return ""
}

// threadCreateFailed reports whether the runtime's last words say that
// pthread_create failed with EAGAIN: glibc's answer both when the kernel
// refused the thread (RLIMIT_NPROC, pids.max) and when the thread's stack
// could not be mapped (the memory limit). Only the broker's own evidence
// tells which (see Renderer.threadFailure).
func (t *logTail) threadCreateFailed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.fatal == cgoThreadFailed+" Resource temporarily unavailable"
}

// spanQueueFault reports whether the lines after a SIGSEGV line are those
// of the collector's unchecked span queue allocation: a fault on address
// 0 whose first frame, on the faulting thread's system goroutine, is
// spanQueue.tryDrain.
func (t *logTail) spanQueueFault() bool {
	if len(t.after) < 3 {
		return false
	}
	pc, header, frame := t.after[0], t.after[1], t.after[2]
	return strings.HasPrefix(pc, "PC=") && strings.HasSuffix(pc, " sigcode=1 addr=0x0") &&
		strings.HasPrefix(header, "goroutine 0 ") &&
		strings.HasPrefix(frame, "runtime.(*spanQueue).tryDrain(")
}

// A renderer's stderr costs the broker CPU for every byte it reads,
// splits and logs; a renderer that writes in a tight loop would make the
// broker spend a core on it. The log budget bounds that cost: a token
// bucket of logBurst bytes, refilled at logRate bytes a second. A renderer
// that writes past it is killed (ExitBrokerLimit).
const (
	// logBurst is what a renderer may write at once: ample room for the
	// runtime's last words, even a panic's dump of many goroutines (a few
	// hundred KiB), after a long ordinary log.
	logBurst = 1 << 20
	// logRate is what a renderer may write per second, sustained.
	logRate = 256 << 10
)

// logBudgetDetail names the bound in the renderer's ExitError.
var logBudgetDetail = fmt.Sprintf("log output over %d KiB at once or %d KiB/s sustained", logBurst>>10, logRate>>10)

// logBudget is a token bucket of log bytes.
type logBudget struct {
	tokens float64
	last   time.Time
}

func newLogBudget(now time.Time) *logBudget { return &logBudget{tokens: logBurst, last: now} }

// take spends n bytes at time now and reports whether they were within
// the budget.
func (b *logBudget) take(n int, now time.Time) bool {
	b.tokens = min(logBurst, b.tokens+now.Sub(b.last).Seconds()*logRate)
	b.last = now
	b.tokens -= float64(n)
	return b.tokens >= 0
}

// readLogs forwards the renderer's stderr to the broker's logger, line by
// line, truncating long lines, and keeps the tail for classify. Past the
// log budget it kills the renderer and reads the rest of the pipe (at
// most what the renderer wrote before it died, a pipe buffer) without
// looking at it.
func (r *Renderer) readLogs(f *os.File) {
	defer f.Close()
	br := bufio.NewReaderSize(f, maxLogLine)
	log := r.b.log.With("pid", r.pid)
	budget := newLogBudget(time.Now())
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 && !budget.take(len(line), time.Now()) {
			r.kill(ExitBrokerLimit, logBudgetDetail)
			_, _ = io.Copy(io.Discard, f)
			return
		}
		if len(line) > 0 {
			s := strings.ToValidUTF8(strings.TrimRight(string(line), "\n"), "?")
			r.logs.add(s)
			log.Debug("renderer log", "line", s)
			if strings.HasPrefix(s, cgoThreadFailed) {
				r.snapshotThreadFailure()
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) {
				log.Debug("renderer log pipe", "err", err)
			}
			return
		}
	}
}

// threadFailure explains an exit after a thread creation failed with
// EAGAIN (see evidence.go), from the broker's own evidence and not from
// what the renderer printed (quoted as last):
//   - with a cgroup whose pids.max is set, its pids.events "max" counter
//     says whether the kernel refused a task;
//   - else the snapshot the log reader took when the line arrived says
//     whether the renderer held all its tasks or all its address space;
//   - without a snapshot (the renderer was gone before it could be read),
//     the resident peak may still corroborate the memory limit; otherwise
//     the exit is a crash whose detail says the broker could not tell.
func (r *Renderer) threadFailure(peak uint64, last string) (ExitReason, string) {
	limits := r.b.policy.Limits
	if r.cgroup != nil && limits.Cgroup.PidsMax > 0 && r.cgroup.pidsMaxHit() {
		return ExitThreadLimit, fmt.Sprintf("thread limit reached: the kernel refused a task (cgroup pids.max %d)", limits.Cgroup.PidsMax)
	}
	r.mu.Lock()
	snap, snapErr := r.threadFailSnap, r.threadFailSnapErr
	r.mu.Unlock()
	if snap != nil {
		hostRoot := r.hostID < 0 && os.Geteuid() == 0
		reason, detail := threadFailureVerdict(snap, limits.Threads, hostRoot, threadStackSize())
		if reason == "" {
			return ExitCrash, detail + ": " + last
		}
		return reason, detail
	}
	if memoryCorroborated(peak, limits.Memory) {
		return ExitMemoryLimit, fmt.Sprintf("resident peak %d MiB of the %d MiB limit: %s", peak>>20, limits.Memory>>20, last)
	}
	return ExitCrash, fmt.Sprintf("%s; the thread limit and the memory limit could not be told apart: %v (resident peak %d MiB)", last, snapErr, peak>>20)
}

// snapshotThreadFailure records the kernel's view of the renderer the
// first time it says a thread could not be created; see evidence.go.
func (r *Renderer) snapshotThreadFailure() {
	r.mu.Lock()
	taken := r.threadFailSnap != nil || r.threadFailSnapErr != nil
	r.mu.Unlock()
	if taken {
		return
	}
	snap, err := snapshotTask(r.pid, r.pidfd)
	r.mu.Lock()
	r.threadFailSnap, r.threadFailSnapErr = snap, err
	r.mu.Unlock()
}
