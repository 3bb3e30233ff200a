package renderer

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/internal/lockdownplan"
	"github.com/sandkit/sandkit/internal/seccompfilter"
	"github.com/sandkit/sandkit/policy"
)

// lockdown applies p to the running process, in an order where each step
// still has the privilege it needs and removes some for the next:
//
//  1. before the Go runtime starts, while the process has one thread, in
//     the ELF constructor (early.go, early_lockdown.c): no_new_privs, the
//     bounding and ambient sets, securebits; the mount namespace (rprivate,
//     an empty tmpfs root holding only the read-only paths, pivot_root,
//     the old root detached, the root remounted read-only); the hostname;
//     the permitted, effective and inheritable capability sets emptied;
//     Landlock. Per-thread state set then is inherited by every thread the
//     runtime creates later, so no step needs to reach other threads, nor
//     to find them through a /proc of the renderer's pid namespace, which
//     an outer sandbox with a partly covered /proc cannot give;
//  2. (in run) descriptors: everything but stdio and the broker socket is
//     closed, stdio is never a terminal;
//  3. here: the record of 1; rlimits; not dumpable;
//  4. seccomp, synchronized to every thread by the kernel (TSYNC), its
//     listener returned for the broker.
//
// A step that fails for a layer the policy allows degraded is reported
// inactive and skipped; any other failure is returned as a
// *policy.UnavailableError naming the layer, and the renderer exits.
type lockdown struct {
	p      *policy.Policy
	prog   *seccompfilter.Program // compiled by the broker; nil to compile here
	spec   string                 // the constructor's spec, from argv[1]
	proc   *earlyProc             // the renderer's /proc/self, opened by the constructor
	status policy.Status
}

func (l *lockdown) record(layer policy.Layer, err error, detail string) error {
	if err == nil {
		l.status = append(l.status, policy.LayerStatus{Layer: layer, Active: true, Detail: detail})
		return nil
	}
	if l.p.Degradable(layer) {
		l.status = append(l.status, policy.LayerStatus{Layer: layer, Active: false, Detail: err.Error()})
		return nil
	}
	return &policy.UnavailableError{Layer: layer, Err: err}
}

func (l *lockdown) skip(layer policy.Layer, why string) {
	l.status = append(l.status, policy.LayerStatus{Layer: layer, Active: false, Detail: why})
}

// apply runs every step. listener is the seccomp notification fd when the
// monitor is in force, nil otherwise.
func (l *lockdown) apply() (listener *os.File, err error) {
	p := l.p
	ns := p.Namespaces
	want, err := lockdownplan.EarlySpec(p)
	if err != nil {
		return nil, err
	}
	if l.spec != want {
		// The broker computed the spec from the same policy on the same
		// kernel: a difference means the constructor did not apply what
		// the policy asks.
		return nil, fmt.Errorf("the early lockdown spec %q does not match the policy's %q", l.spec, want)
	}
	if err := earlyLockdownErr(); err != nil {
		return nil, err
	}
	// The broker created the namespaces (clone flags); it only spawns a
	// renderer once they exist, so here they are recorded, and checked
	// where a check is cheap.
	for _, n := range []struct {
		on    bool
		layer policy.Layer
	}{{ns.User, policy.LayerUserNS}, {ns.PID, policy.LayerPIDNS}, {ns.Net, policy.LayerNetNS},
		{ns.IPC, policy.LayerIPCNS}, {ns.UTS, policy.LayerUTSNS}, {ns.Cgroup, policy.LayerCgroupNS}} {
		if !n.on {
			l.skip(n.layer, "disabled by the policy")
			continue
		}
		var err error
		if n.layer == policy.LayerPIDNS && os.Getpid() != 1 {
			err = fmt.Errorf("renderer is pid %d, not 1 of its own namespace", os.Getpid())
		}
		if err := l.record(n.layer, err, ""); err != nil {
			return nil, err
		}
	}
	if ns.Mount {
		if err := l.record(policy.LayerMountNS, earlyRootErr(), "empty read-only root, no /proc"); err != nil {
			return nil, err
		}
	} else {
		l.skip(policy.LayerMountNS, "disabled by the policy")
	}
	if ns.UTS {
		if err := earlyHostnameErr(); err != nil {
			return nil, &policy.UnavailableError{Layer: policy.LayerUTSNS, Err: err}
		}
	}
	rdetail, rerr := setRlimits(p.Limits, l.proc.status)
	if err := l.record(policy.LayerRlimits, rerr, rdetail); err != nil {
		return nil, err
	}
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("prctl(PR_SET_DUMPABLE): %w", err)
	}
	if err := l.record(policy.LayerNoNewPrivs, checkNoNewPrivs(), "set before the runtime started"); err != nil {
		return nil, err
	}
	if err := l.record(policy.LayerCapabilities, dropCapabilities(), "bounding, ambient, permitted, effective, inheritable; before the runtime started"); err != nil {
		return nil, err
	}
	if err := l.landlock(); err != nil {
		return nil, err
	}
	if !p.Seccomp.Enabled {
		l.skip(policy.LayerSeccomp, "disabled by the policy")
		l.skip(policy.LayerSeccompMonitor, "disabled by the policy")
		return nil, nil
	}
	allowUnmonitored := !p.Seccomp.Monitor || p.Degradable(policy.LayerSeccompMonitor)
	var unmonitored, serr error
	if l.prog != nil {
		listener, unmonitored, serr = l.prog.Load(allowUnmonitored)
	} else {
		listener, unmonitored, serr = seccompfilter.CompileAndLoad(p, allowUnmonitored)
	}
	if errors.Is(serr, seccompfilter.ErrWaitKillableUnsupported) {
		// The filter is not loaded: the monitor it needs cannot be in
		// force, and the policy does not allow it degraded.
		return nil, &policy.UnavailableError{Layer: policy.LayerSeccompMonitor, Err: serr}
	}
	if err := l.record(policy.LayerSeccomp, serr, fmt.Sprintf("%d rules", len(p.SyscallRules()))); err != nil {
		return nil, err
	}
	switch {
	case !p.Seccomp.Monitor:
		l.skip(policy.LayerSeccompMonitor, "disabled by the policy: violations kill without a report")
	case serr != nil:
		l.skip(policy.LayerSeccompMonitor, "seccomp degraded")
	case unmonitored != nil:
		l.skip(policy.LayerSeccompMonitor, unmonitored.Error()+"; violations kill without a report")
	case listener == nil:
		if err := l.record(policy.LayerSeccompMonitor, errors.New("seccomp user notification unsupported; violations kill without a report"), ""); err != nil {
			return nil, err
		}
	default:
		l.status = append(l.status, policy.LayerStatus{Layer: policy.LayerSeccompMonitor, Active: true, Detail: "wait killable once received"})
	}
	return listener, nil
}

// pinGOMAXPROCS fixes GOMAXPROCS at the value the runtime chose, so that
// the runtime stops reading its cgroup's CPU limit.
//
// Since Go 1.25 the runtime opens its cgroup's CPU limit files at start-up,
// keeps the descriptors, and while the process is busy sysmon rereads them
// by number about once a second. sanitizeStdio closes them, and their
// numbers are reused for what the broker hands over: the runtime would
// then read the first bytes of an untrusted input and take them for a CPU
// limit. Setting GOMAXPROCS explicitly ends the rereads for good, and
// returns only once a reread in progress has finished. (The other switch,
// GODEBUG=updatemaxprocs=0, would need an environment; the renderer's is
// empty.) A renderer's CPU share is the broker's business (cgroup
// cpu.max, RLIMIT_CPU), not something to follow at run time.
func pinGOMAXPROCS() { runtime.GOMAXPROCS(runtime.GOMAXPROCS(0)) }

// sanitizeStdio closes every descriptor the renderer inherited besides
// stdio and the broker socket, and makes sure none of 0-2 is a terminal:
// a terminal would let the renderer inject input into the user's shell
// (TIOCSTI) or read what is typed there.
//
// The ELF constructor closed everything the renderer inherited above the
// socket before the runtime started (see early.go). What is open above it
// now is the runtime's: its poller (an epoll instance and its eventfd,
// which os may create during package initialization), kept; and its
// cgroup files, closed: call pinGOMAXPROCS first.
//
// fdDir is /proc/self/fd, which the constructor opened before the new root
// hid the procfs: it and /proc/self/status are kept (ours).
func sanitizeStdio(proc *earlyProc) error {
	if err := earlyFDsErr(); err != nil {
		return err
	}
	if err := proc.err(); err != nil {
		return err
	}
	names, err := proc.fdDir.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("list descriptors: %w", err)
	}
	var doomed []int
	for _, name := range names {
		fd, err := strconv.Atoi(name)
		if err != nil || fd <= socketFD || fd == int(proc.fdDir.Fd()) || fd == int(proc.status.Fd()) {
			continue
		}
		target, err := readlinkAt(int(proc.fdDir.Fd()), name)
		if err != nil {
			continue // closed since the listing
		}
		if target == "anon_inode:[eventpoll]" || target == "anon_inode:[eventfd]" {
			continue
		}
		doomed = append(doomed, fd)
	}
	for _, fd := range doomed {
		unix.Close(fd)
	}
	for fd := 0; fd <= 2; fd++ {
		if _, err := unix.IoctlGetTermios(fd, unix.TCGETS); err != nil {
			continue // not a terminal
		}
		// The root has no /dev/null by now: the read end of a pipe with
		// no writer reads end of file, and refuses writes.
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			return fmt.Errorf("replace terminal %d: %w", fd, err)
		}
		unix.Close(p[1])
		err := unix.Dup3(p[0], fd, 0)
		unix.Close(p[0])
		if err != nil {
			return fmt.Errorf("replace terminal %d: %w", fd, err)
		}
	}
	return nil
}

// setRlimits applies l. The memory limit is two rlimits:
//
//   - RLIMIT_DATA = Memory bounds private writable memory (the Go heap,
//     malloc, thread stacks), counted when mapped;
//   - RLIMIT_AS = Memory + the address space mapped now bounds every
//     mapping, shared ones and memfds included, which RLIMIT_DATA does
//     not count. What is mapped now is the executable, the libraries and
//     above all the Go runtime's start-up reservations (page allocator
//     summaries, the scavenger index: about 1.1 GiB of inaccessible
//     address space), which would otherwise eat the limit; taking it as
//     measured keeps the allowance exact for each renderer binary instead
//     of a constant that is too small for one and too large for another.
//
// The detail names the address-space limit applied.
func setRlimits(l policy.Limits, status *os.File) (detail string, err error) {
	var as uint64
	if l.Memory != 0 {
		base, err := addressSpace(status)
		if err != nil {
			return "", fmt.Errorf("address space at lockdown: %w", err)
		}
		as = base + l.Memory
		if as < base {
			as = unix.RLIM_INFINITY
		}
		detail = fmt.Sprintf("address space %d MiB = %d MiB at lockdown + memory %d MiB", as>>20, base>>20, l.Memory>>20)
	}
	set := func(resource int, v uint64) error {
		if err := unix.Setrlimit(resource, &unix.Rlimit{Cur: v, Max: v}); err != nil {
			return fmt.Errorf("setrlimit(%d, %d): %w", resource, v, err)
		}
		return nil
	}
	type limit struct {
		resource int
		value    uint64
		set      bool
	}
	cpu := l.CPUSeconds()
	for _, lim := range []limit{
		{unix.RLIMIT_CORE, 0, true},
		{unix.RLIMIT_FSIZE, l.FileSize, true},
		{unix.RLIMIT_MEMLOCK, l.LockedMemory, true},
		{unix.RLIMIT_DATA, l.Memory, l.Memory != 0},
		{unix.RLIMIT_AS, as, l.Memory != 0},
		{unix.RLIMIT_NOFILE, l.OpenFiles, l.OpenFiles != 0},
		{unix.RLIMIT_NPROC, l.Threads, l.Threads != 0},
		{unix.RLIMIT_CPU, cpu, cpu != 0},
		{unix.RLIMIT_STACK, l.Stack, l.Stack != 0},
	} {
		if !lim.set {
			continue
		}
		if err := set(lim.resource, lim.value); err != nil {
			return "", err
		}
	}
	if l.Threads != 0 {
		// The runtime's own thread limit trips first and names itself
		// ("fatal error: thread exhaustion"). Otherwise the kernel's
		// EAGAIN from thread creation would read the same as the one
		// glibc returns when the memory limit leaves no room for a
		// thread's stack, and the broker could not tell the limits apart.
		debug.SetMaxThreads(int(min(l.Threads, math.MaxInt32)) - threadMargin)
	}
	return detail, nil
}

// addressSpace returns the process's mapped address space now: VmSize of
// status, the renderer's /proc/self/status, which the kernel generates
// afresh at every read. The constructor opened it before the new root hid
// the procfs (the renderer mounts none of its own): reading an open file
// needs no path, and Landlock checks only the open.
func addressSpace(status *os.File) (uint64, error) {
	b := make([]byte, 4096)
	n, err := status.ReadAt(b, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	b = b[:n]
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmSize:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("VmSize %q: %w", v, err)
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("no VmSize in /proc/self/status")
}

// threadMargin is how far below RLIMIT_NPROC the runtime's thread limit
// sits. The kernel counts every task of the renderer's uid, the runtime
// only its own threads; the margin keeps the runtime's count the one that
// runs out.
const threadMargin = 2

// checkNoNewPrivs confirms no_new_privs, which the ELF constructor set
// while the process had one thread (see early.go), so every thread has it.
func checkNoNewPrivs() error {
	if err := earlyStepErr(4); err != nil {
		return err
	}
	nnp, err := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
	if err != nil {
		return err
	}
	if nnp != 1 {
		return errors.New("no_new_privs is not set")
	}
	return nil
}

// dropCapabilities confirms that every capability set is empty on every
// thread. The constructor emptied them while the process had one thread
// (see early_lockdown.c), after the empty root, which needs CAP_SYS_ADMIN:
// every thread since inherited the empty sets. This checks the
// constructor's record, that the process then had one thread, and this
// thread's sets.
func dropCapabilities() error {
	if err := earlyStepErr(1, 2, 3); err != nil {
		return err
	}
	if err := earlyCapsErr(); err != nil {
		return err
	}
	for c := 0; ; c++ {
		in, err := unix.PrctlRetInt(unix.PR_CAPBSET_READ, uintptr(c), 0, 0, 0)
		if errors.Is(err, syscall.EINVAL) && c > 0 {
			break
		}
		if err != nil {
			return fmt.Errorf("read bounding set: %w", err)
		}
		if in != 0 {
			return fmt.Errorf("capability %d is still in the bounding set", c)
		}
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	if data != ([2]unix.CapUserData{}) {
		return fmt.Errorf("capability sets not empty: %+v", data)
	}
	return nil
}

// landlock records the Landlock layers: those the constructor applied,
// with its result, and those it could not.
func (l *lockdown) landlock() error {
	steps, cfg, abi, kernel := lockdownplan.LandlockPlan(l.p)
	applied := earlyLandlockErr()
	for _, st := range steps {
		var err error
		switch {
		case st.Skip:
			l.skip(st.Layer, "disabled by the policy")
			continue
		case st.Err != nil:
			err = st.Err
		default:
			err = applied
		}
		if err := l.record(st.Layer, err, lockdownplan.LandlockDetail(st.Layer, abi, kernel, cfg)); err != nil {
			return err
		}
	}
	return nil
}
