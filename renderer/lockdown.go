package renderer

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"github.com/landlock-lsm/go-landlock/landlock"
	llsys "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"
	"kernel.org/pub/linux/libs/security/libcap/psx"

	"github.com/sandkit/sandkit/internal/launch"
	"github.com/sandkit/sandkit/policy"
)

// lockdown applies p to the running process, in an order where each step
// still has the privilege it needs and removes some for the next:
//
//  1. (before apply, in run) descriptors: everything but stdio and the
//     broker socket is closed, stdio is never a terminal;
//  2. mount namespace: rprivate, an empty tmpfs root with a fresh /proc
//     (Landlock's thread walk needs a /proc of this pid namespace), the
//     read-only paths, pivot_root, the old root detached, the root
//     remounted read-only;
//  3. hostname; rlimits; not dumpable;
//  4. no_new_privs and every capability dropped, on every thread (the
//     per-thread parts before the runtime started, see early.go; the
//     capability sets through psx);
//  5. Landlock, on every thread;
//  6. seccomp, synchronized to every thread, its listener returned for
//     the broker.
//
// Capabilities go before Landlock rather than after because psx finds
// threads through /proc, which Landlock then forbids.
//
// A step that fails for a layer the policy allows degraded is reported
// inactive and skipped; any other failure is returned as a
// *policy.UnavailableError naming the layer, and the renderer exits.
type lockdown struct {
	p      *policy.Policy
	prog   *seccompProgram // compiled by the broker; nil to compile here
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
		if err := l.record(policy.LayerMountNS, emptyRoot(p.Filesystem.ReadOnlyPaths), "empty read-only root"); err != nil {
			return nil, err
		}
	} else {
		l.skip(policy.LayerMountNS, "disabled by the policy")
	}
	if ns.UTS {
		if err := unix.Sethostname([]byte("sandkit")); err != nil {
			return nil, &policy.UnavailableError{Layer: policy.LayerUTSNS, Err: fmt.Errorf("sethostname: %w", err)}
		}
	}
	rdetail, rerr := setRlimits(p.Limits)
	if err := l.record(policy.LayerRlimits, rerr, rdetail); err != nil {
		return nil, err
	}
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("prctl(PR_SET_DUMPABLE): %w", err)
	}
	if err := l.record(policy.LayerNoNewPrivs, checkNoNewPrivs(), "set before the runtime started"); err != nil {
		return nil, err
	}
	if err := l.record(policy.LayerCapabilities, dropCapabilities(), "bounding, ambient, permitted, effective, inheritable"); err != nil {
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
		listener, unmonitored, serr = l.prog.load(allowUnmonitored)
	} else {
		listener, unmonitored, serr = loadSeccomp(p, allowUnmonitored)
	}
	if errors.Is(serr, ErrWaitKillableUnsupported) {
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
func sanitizeStdio() error {
	if err := earlyFDsErr(); err != nil {
		return err
	}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("list descriptors: %w", err)
	}
	var doomed []int
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd <= SocketFD {
			continue
		}
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue // the directory's own descriptor, closed by now
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
		null, err := unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		err = unix.Dup3(null, fd, 0)
		unix.Close(null)
		if err != nil {
			return err
		}
	}
	return nil
}

// emptyRoot replaces the root with a small tmpfs that holds only /proc
// and the read-only paths, then detaches the host's root.
func emptyRoot(readOnly []string) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / rprivate: %w", err)
	}
	// Any existing directory can hold the new root's mount point; the
	// mount is private to this namespace and hides nothing of the host.
	var base string
	for _, dir := range []string{"/tmp", "/mnt", "/run", "/dev"} {
		if fi, err := os.Lstat(dir); err == nil && fi.IsDir() {
			base = dir
			break
		}
	}
	if base == "" {
		return errors.New("no directory to mount the new root on")
	}
	// Hold the read-only paths open before the new root hides them: one
	// of them may well live under base.
	sources := make([]*os.File, 0, len(readOnly))
	defer func() {
		for _, f := range sources {
			f.Close()
		}
	}()
	for _, path := range readOnly {
		fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("read-only path %s: %w", path, err)
		}
		sources = append(sources, os.NewFile(uintptr(fd), path))
	}
	const flags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	if err := unix.Mount("sandkit", base, "tmpfs", flags, "size=64k,nr_inodes=256,mode=0755"); err != nil {
		return fmt.Errorf("mount tmpfs root: %w", err)
	}
	if err := os.Mkdir(filepath.Join(base, "proc"), 0o555); err != nil {
		return err
	}
	if err := unix.Mount("proc", filepath.Join(base, "proc"), "proc", flags, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	for i, path := range readOnly {
		if err := bindReadOnly(sources[i], filepath.Join(base, path)); err != nil {
			return fmt.Errorf("read-only path %s: %w", path, err)
		}
	}
	if err := unix.Chdir(base); err != nil {
		return err
	}
	// pivot_root(".", ".") stacks the old root under the new one at "/";
	// detaching "." then removes the host's root from this namespace.
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|flags, ""); err != nil {
		return fmt.Errorf("remount root read-only: %w", err)
	}
	return nil
}

// bindReadOnly bind-mounts src (an O_PATH descriptor) at dst read-only.
func bindReadOnly(src *os.File, dst string) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(src.Fd()), &st); err != nil {
		return err
	}
	isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	var err error
	if isDir {
		err = os.MkdirAll(dst, 0o755)
	} else {
		if err = os.MkdirAll(filepath.Dir(dst), 0o755); err == nil {
			var f *os.File
			if f, err = os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o444); err == nil {
				f.Close()
			}
		}
	}
	if err != nil {
		return err
	}
	// The magic link names the file the descriptor holds, not a path
	// that could have changed since it was opened.
	if err := unix.Mount(fmt.Sprintf("/proc/self/fd/%d", src.Fd()), dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(dst, &sfs); err != nil {
		return err
	}
	flags := uintptr(unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	for _, f := range []struct{ st, ms int64 }{
		{unix.ST_NOATIME, unix.MS_NOATIME}, {unix.ST_NODIRATIME, unix.MS_NODIRATIME}, {unix.ST_RELATIME, unix.MS_RELATIME},
	} {
		if sfs.Flags&f.st != 0 {
			flags |= uintptr(f.ms)
		}
	}
	if err := unix.Mount("", dst, "", flags, ""); err != nil {
		return fmt.Errorf("remount read-only: %w", err)
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
func setRlimits(l policy.Limits) (detail string, err error) {
	var as uint64
	if l.Memory != 0 {
		base, err := addressSpace()
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

// addressSpace returns the process's mapped address space, VmSize.
func addressSpace() (uint64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
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

// allThreads runs a syscall on every thread of the process, the unused
// arguments zero (prctl insists):
// no_new_privs, the capability sets and securebits are per-thread
// attributes, and a single forgotten thread would keep them.
func allThreads(nr, a1, a2, a3 uintptr) error {
	if _, _, errno := psx.Syscall6(nr, a1, a2, a3, 0, 0, 0); errno != 0 {
		return errno
	}
	return nil
}

// checkNoNewPrivs confirms no_new_privs, which the ELF constructor set
// while the process had one thread (see early.go), so every thread has it.
func checkNoNewPrivs() error {
	if err := earlyErr(); err != nil {
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

// dropCapabilities clears the permitted, effective and inheritable sets on
// every thread. The bounding and ambient sets were emptied and securebits
// locked by the ELF constructor before any other thread existed (see
// early.go); this checks that they were.
func dropCapabilities() error {
	if err := earlyErr(); err != nil {
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
	if err := allThreads(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	return nil
}

// landlockConfig returns the Landlock ABI the renderer applies on a kernel
// whose ABI is kernel, and go-landlock's configuration for it, which
// handles every right of that ABI: the kernel's own, or, on a kernel newer
// than go-landlock, the newest go-landlock knows (V11 in v0.11.2; add the
// next one here when go-landlock does).
func landlockConfig(kernel int) (int, landlock.Config) {
	configs := []landlock.Config{{}, landlock.V1, landlock.V2, landlock.V3, landlock.V4, landlock.V5,
		landlock.V6, landlock.V7, landlock.V8, landlock.V9, landlock.V10, landlock.V11}
	abi := min(max(kernel, 0), len(configs)-1)
	return abi, configs[abi]
}

// landlockDetail says, for a layer's status, which ABI was applied and
// what it handles. kernel is the kernel's ABI, named when it is newer than
// the one applied.
func landlockDetail(layer policy.Layer, abi, kernel int, cfg landlock.Config) string {
	d := fmt.Sprintf("ABI %d", abi)
	if kernel != abi {
		d += fmt.Sprintf(" (the kernel has %d)", kernel)
	}
	switch layer {
	case policy.LayerLandlockFS:
		d += fmt.Sprintf(": %d filesystem rights", bits.OnesCount64(uint64(cfg.HandledAccessFS)))
	case policy.LayerLandlockNet:
		d += ": " + cfg.HandledAccessNet.String()
		if cfg.HandledAccessNet&llsys.AccessNetBindUDP == 0 {
			d += "; no UDP before ABI 10"
		}
	case policy.LayerLandlockScope:
		d += ": " + cfg.Scoped.String()
	}
	return d
}

// landlock handles every right of the applied ABI (see landlockConfig) for
// each requested kind (filesystem, network, scope) with no rule granting
// any, except read access to the policy's read-only paths.
func (l *lockdown) landlock() error {
	p := l.p
	kernel, abiErr := llsys.LandlockGetABIVersion()
	if abiErr == nil && kernel < 1 {
		abiErr = errors.New("landlock ABI 0")
	}
	abi, full := landlockConfig(kernel)
	var cfg landlock.Config
	var pending []policy.Layer
	want := func(on bool, layer policy.Layer, apply func()) error {
		minABI := launch.LandlockABI(layer)
		switch {
		case !on:
			l.skip(layer, "disabled by the policy")
		case abiErr != nil:
			return l.record(layer, fmt.Errorf("landlock unavailable: %w", abiErr), "")
		case abi < minABI:
			return l.record(layer, fmt.Errorf("landlock ABI %d is older than %d", abi, minABI), "")
		default:
			apply()
			pending = append(pending, layer)
		}
		return nil
	}
	if err := want(p.Filesystem.Landlock, policy.LayerLandlockFS, func() { cfg.HandledAccessFS = full.HandledAccessFS }); err != nil {
		return err
	}
	if err := want(p.Network.Landlock, policy.LayerLandlockNet, func() { cfg.HandledAccessNet = full.HandledAccessNet }); err != nil {
		return err
	}
	if err := want(p.Scope.Landlock, policy.LayerLandlockScope, func() { cfg.Scoped = full.Scoped }); err != nil {
		return err
	}
	if len(pending) == 0 {
		return nil
	}
	var rules []landlock.Rule
	for _, path := range p.Filesystem.ReadOnlyPaths {
		if cfg.HandledAccessFS == 0 {
			break // nothing handled, nothing to grant
		}
		if fi, err := os.Stat(path); err == nil && !fi.IsDir() {
			rules = append(rules, landlock.ROFiles(path))
		} else {
			rules = append(rules, landlock.RODirs(path))
		}
	}
	err := cfg.Restrict(rules...)
	for _, layer := range pending {
		if rerr := l.record(layer, err, landlockDetail(layer, abi, kernel, cfg)); rerr != nil {
			return rerr
		}
	}
	return nil
}
