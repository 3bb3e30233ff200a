// Package policy describes what a sandboxed renderer may do.
//
// A Policy is a value: the broker validates it, checks it against what the
// running kernel supports, and hands it to every renderer it spawns, which
// applies it to itself before it reads a byte of untrusted input. The
// default, Strict, turns every isolation layer on and grants nothing:
// programs widen it explicitly, one field at a time, so that a reviewer can
// see every exception in one place.
//
// Policies can be kept as protobuf text-format files (see Parse and Format)
// so operators can review and version them like code.
package policy

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Namespaces selects the Linux namespaces a renderer is created in. Each one
// is on in Strict; turning one off is an explicit, reviewable change.
type Namespaces struct {
	// User maps the broker's uid and gid to 0 inside a new user namespace
	// (setgroups denied), which lets the renderer build its empty root
	// without any privilege on the host.
	User bool
	// Mount gives the renderer an empty, read-only tmpfs root via
	// pivot_root; the host's root is unmounted.
	Mount bool
	// PID hides every other process; the renderer is pid 1 of its own
	// namespace and sees a /proc of its own.
	PID bool
	// Net leaves the renderer with no network interface, not even loopback.
	Net bool
	// IPC detaches System V IPC and POSIX message queues.
	IPC bool
	// UTS gives the renderer a hostname of its own.
	UTS bool
	// Cgroup hides the host's cgroup hierarchy.
	Cgroup bool
}

// Filesystem is the renderer's view of files.
type Filesystem struct {
	// Landlock handles every filesystem right of the running kernel's
	// Landlock ABI (up to the newest sandkit knows, 11), with no rule
	// granting any: every path-based access fails with EACCES, whatever
	// the mount table shows.
	Landlock bool
	// ReadOnlyPaths are absolute paths bind-mounted read-only at the same
	// place inside the empty root, and allowed read-only by Landlock.
	ReadOnlyPaths []string
	// ExecutablePaths are, for foreign programs (broker.Program) only,
	// absolute paths bind-mounted read-only at the same place with
	// execution allowed, and allowed read and execute by Landlock: the
	// program's shared libraries and its dynamic loader. The program
	// itself is bound so without being listed. See ForeignPaths.
	ExecutablePaths []string
	// Tmpfs lists, for foreign programs only, private writable tmpfs
	// mounts of bounded size (a scratch directory, a profile), the only
	// places Landlock lets the program write. Their pages are kernel
	// memory that no rlimit counts: Limits.Memory does not bound them,
	// their Size does.
	Tmpfs []Tmpfs
	// Devices are, for foreign programs only, character devices bound
	// read-only at their own path (the only mounts of the empty root
	// without nodev), allowed read-only by Landlock. Only the devices
	// ForeignDevice knows may be named, and the launcher checks each one's
	// device number before binding it: they hold no state a program
	// could change or read another's data from. Programs that read
	// /dev/urandom by name (NSS, which LibreOffice uses to write PDF)
	// fail without it.
	Devices []string
}

// Network restricts sockets beyond what the empty network namespace does.
type Network struct {
	// Landlock handles TCP bind and connect (ABI 4 and later), and UDP
	// bind, connect and send from ABI 10 on, with no port allowed. Below
	// ABI 10 (Linux 6.18 has 7) Landlock does not handle UDP: what stops it is the empty network namespace and
	// the seccomp allowlist, which has no socket() or socketpair().
	Landlock bool
}

// Scope restricts IPC that bypasses the filesystem.
type Scope struct {
	// Landlock scopes abstract unix sockets and signals (ABI 6 and later)
	// so the renderer cannot reach processes outside its own domain.
	Landlock bool
}

// Seccomp is the syscall filter.
type Seccomp struct {
	// Enabled installs the allowlist: the Go runtime's needs after
	// lockdown (see BaseSyscalls) plus Allow.
	Enabled bool
	// Monitor sends every disallowed syscall to the broker's violation
	// monitor (seccomp user notification), which records the syscall and
	// its arguments and kills the renderer. Without it, a disallowed
	// syscall kills the renderer at once and only the signal is known.
	Monitor bool
	// Allow lists syscalls, by name, allowed on top of BaseSyscalls. The
	// escape surface (see EscapeSurface) can never be allowed.
	Allow []string
	// DenyExecMemory forbids new executable memory once the renderer is
	// locked down: mmap and mprotect (and pkey_mprotect or shmat, if
	// Allow lists them) are allowed only without PROT_EXEC (SHM_EXEC),
	// and a call with it is a violation. Code injected through a memory
	// bug then has no executable page to land in: every executable
	// mapping is one the program and its libraries made before
	// lockdown, none of them writable. Neither the Go runtime (cgo and
	// glibc's thread stacks included) nor glibc's allocator maps
	// executable memory; a library that loads code or JITs after
	// lockdown does, and needs this off.
	DenyExecMemory bool
	// AllowChildren lets a foreign program (broker.Program) fork child
	// processes inside its pid namespace: clone with exactly the flags
	// of fork, and wait4 and waitid. The children count against
	// Limits.Threads (RLIMIT_NPROC counts every task of the renderer's
	// user), cannot exec, and die with the program, which is pid 1 of
	// the namespace. Go renderers never fork; they ignore it.
	AllowChildren bool
	// AllowPathStat lets a foreign program stat files by path:
	// newfstatat with any path and flags, not only fstat through
	// AT_EMPTY_PATH. Dynamic loaders and programs that probe their
	// installation (LibreOffice) need it. In the empty root a path
	// reaches only the policy's binds and tmpfs mounts, whose files
	// the program may read anyway: the metadata it gains (sizes,
	// inodes, times) is of files it was given. Go renderers ignore it:
	// their base rule stays AT_EMPTY_PATH only.
	AllowPathStat bool
	// AllowUnixSockets lets a foreign program make AF_UNIX sockets
	// (socket and socketpair with that domain only; bind, listen,
	// accept4, connect come from Allow). LibreOffice will not start
	// without its single-instance pipe, a socket it binds in /tmp. Such
	// a socket reaches nothing outside the sandbox: abstract names are
	// scoped by Landlock (Scope.Landlock), the network namespace is
	// empty, and a path socket must lie in the empty root, whose only
	// files are the policy's binds (which must hold no host socket) and
	// tmpfs mounts. Go renderers ignore it.
	AllowUnixSockets bool
	// AllowFileLocks lets a foreign program take POSIX record locks
	// (fcntl F_GETLK, F_SETLK, F_SETLKW and their open-file-description
	// forms), fsync and fdatasync: SQLite locks its database (LibreOffice's NSS
	// keeps its certificate store in one, in the tmpfs). Locks are
	// advisory: one on a file of its tmpfs concerns only the program;
	// one on a read-only bind can delay, while the program lives, only a
	// host process that asks for a conflicting lock on the same file.
	// Go renderers ignore it.
	AllowFileLocks bool
}

// Limits bounds the resources of one renderer.
type Limits struct {
	// Memory bounds the renderer's memory in bytes, counted when mapped,
	// not when touched, through two rlimits:
	//   - RLIMIT_DATA = Memory: private writable memory (heap, malloc,
	//     thread stacks); an idle renderer's runtime already maps about
	//     75 MB of it;
	//   - RLIMIT_AS = Memory + the address space mapped at lockdown: every
	//     mapping, shared ones and memfds included. The address space at
	//     lockdown, mostly the Go runtime's inaccessible start-up
	//     reservations (measured 1.21 GiB for a small renderer, Go 1.26
	//     amd64), would otherwise leave no room; a compromised renderer
	//     can unmap them and reuse the room, so RLIMIT_AS, not Memory, is
	//     the hard bound on what it can touch (see SECURITY.md).
	// Shared memory a renderer hands the broker (result memfds, regions)
	// counts, so include it. Allocations past the limit fail and the Go
	// runtime dies; the broker reports the memory limit when the
	// renderer's resident peak backs that, a crash otherwise. Kernel
	// memory is not counted: only a cgroup bounds it. Zero leaves it
	// unlimited.
	Memory uint64
	// OpenFiles is RLIMIT_NOFILE.
	OpenFiles uint64
	// Threads is RLIMIT_NPROC, counted inside the renderer's own user
	// namespace: the renderer's threads. The renderer sets the Go
	// runtime's own thread limit just below it (debug.SetMaxThreads), so
	// that an honest renderer's end reads "thread exhaustion". The kernel
	// exempts host root from RLIMIT_NPROC, so a root broker runs each
	// renderer as a host id of its own (broker.Config.RendererIDs); an
	// ordinary broker's renderers also count against its user's
	// RLIMIT_NPROC (SECURITY.md, "Threads and user ids").
	Threads uint64
	// CPUTime is RLIMIT_CPU, rounded up to whole seconds; at the limit the
	// kernel sends SIGKILL.
	CPUTime time.Duration
	// FileSize is RLIMIT_FSIZE in bytes. A renderer has no file it could
	// write to; shared memory comes from the broker (SharedMemory).
	FileSize uint64
	// SharedMemory is how many bytes of shared memory the broker
	// allocates for the renderer over its whole life
	// (renderer.Session.Alloc): the memfds its bulk results travel in.
	// A renderer cannot create shared memory itself (memfd_create is not
	// in the allowlist), because the kernel charges a memfd's pages to
	// no rlimit unless they are mapped: one written with write(2) and
	// kept open would escape Memory. The broker counts what it hands
	// out and refuses past this budget, whatever the renderer does with
	// the buffers afterwards; reusable regions and streams spend it once.
	// Zero: no shared memory.
	SharedMemory uint64
	// LockedMemory is RLIMIT_MEMLOCK in bytes.
	LockedMemory uint64
	// Stack is RLIMIT_STACK in bytes.
	Stack uint64
	// CallTimeout bounds one call from the broker; a renderer that does
	// not answer in time is killed. Zero means no per-call limit.
	CallTimeout time.Duration
	// Lifetime bounds a renderer's whole life. Zero means none.
	Lifetime time.Duration
	// Cgroup limits apply when the broker is given a writable cgroup v2
	// directory; each renderer gets a child group of its own.
	Cgroup CgroupLimits
}

// CPUSeconds is CPUTime in whole seconds for RLIMIT_CPU, rounded up so a
// limit is never loosened to nothing, without overflowing near the
// largest Duration.
func (l Limits) CPUSeconds() uint64 {
	if l.CPUTime <= 0 {
		return 0
	}
	s := uint64(l.CPUTime / time.Second)
	if l.CPUTime%time.Second != 0 {
		s++
	}
	return s
}

// CgroupLimits are cgroup v2 controller settings for one renderer.
type CgroupLimits struct {
	MemoryMax  uint64 // memory.max in bytes; 0 leaves it unset
	PidsMax    uint64 // pids.max; 0 leaves it unset
	CPUPercent uint64 // cpu.max as a percentage of one CPU; 0 leaves it unset
}

// Policy is everything a renderer may do. The zero value is not a useful
// policy: start from Strict and change what the renderer needs.
type Policy struct {
	Namespaces Namespaces
	Filesystem Filesystem
	Network    Network
	Scope      Scope
	Seccomp    Seccomp
	Limits     Limits
	// AllowDegraded lists the layers the caller accepts running without
	// when the kernel lacks them. Every other requested layer that is
	// unavailable makes spawning fail.
	AllowDegraded []Layer
}

// Strict returns the default renderer policy: every namespace, every
// Landlock right, the base seccomp allowlist with the violation monitor
// and no new executable memory, and tight resource limits. Each call returns a fresh value that the
// caller may change.
func Strict() *Policy {
	return &Policy{
		Namespaces: Namespaces{User: true, Mount: true, PID: true, Net: true, IPC: true, UTS: true, Cgroup: true},
		Filesystem: Filesystem{Landlock: true},
		Network:    Network{Landlock: true},
		Scope:      Scope{Landlock: true},
		Seccomp:    Seccomp{Enabled: true, Monitor: true, DenyExecMemory: true},
		Limits: Limits{
			Memory:       1 << 30,
			OpenFiles:    64,
			Threads:      64,
			CPUTime:      60 * time.Second,
			FileSize:     0,
			LockedMemory: 0,
			Stack:        8 << 20,
			CallTimeout:  30 * time.Second,
			Lifetime:     0,
		},
	}
}

// Clone returns a deep copy of p.
func (p *Policy) Clone() *Policy {
	c := *p
	c.Filesystem.ReadOnlyPaths = slices.Clone(p.Filesystem.ReadOnlyPaths)
	c.Filesystem.ExecutablePaths = slices.Clone(p.Filesystem.ExecutablePaths)
	c.Filesystem.Tmpfs = slices.Clone(p.Filesystem.Tmpfs)
	c.Filesystem.Devices = slices.Clone(p.Filesystem.Devices)
	c.Seccomp.Allow = slices.Clone(p.Seccomp.Allow)
	c.AllowDegraded = slices.Clone(p.AllowDegraded)
	return &c
}

// ErrInvalid is wrapped by every error Validate returns.
var ErrInvalid = errors.New("invalid policy")

// Validate reports every problem with p at once, each wrapped in ErrInvalid.
func (p *Policy) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...))
	}
	ns := p.Namespaces
	if !ns.User && (ns.Mount || ns.PID || ns.Net || ns.IPC || ns.UTS || ns.Cgroup) {
		// Without a user namespace, creating the others needs
		// CAP_SYS_ADMIN on the host: a renderer must never hold that.
		bad("namespaces: mount/pid/net/ipc/uts/cgroup namespaces need the user namespace")
	}
	if ns.PID && !ns.Mount {
		// A new PID namespace with the host's /proc still mounted shows
		// the host's processes; the empty root has no /proc at all.
		bad("namespaces: a pid namespace needs a mount namespace for its own /proc")
	}
	if len(p.Filesystem.ReadOnlyPaths) > 0 {
		if !ns.Mount {
			bad("filesystem: read_only_paths need the mount namespace (they are bind-mounted into the empty root)")
		}
		seen := map[string]bool{}
		for _, path := range p.Filesystem.ReadOnlyPaths {
			switch {
			case !filepath.IsAbs(path):
				bad("filesystem: read-only path %q is not absolute", path)
			case filepath.Clean(path) != path:
				bad("filesystem: read-only path %q is not clean (want %q)", path, filepath.Clean(path))
			case path == "/":
				bad("filesystem: read-only path %q would expose the whole host", path)
			case path == "/proc" || strings.HasPrefix(path, "/proc/"):
				bad("filesystem: read-only path %q: /proc is the renderer's own", path)
			case seen[path]:
				bad("filesystem: read-only path %q listed twice", path)
			}
			seen[path] = true
		}
	}
	p.validateForeign(bad)
	if p.Seccomp.Monitor && !p.Seccomp.Enabled {
		bad("seccomp: monitor needs seccomp enabled")
	}
	if p.Seccomp.DenyExecMemory && !p.Seccomp.Enabled {
		bad("seccomp: deny_exec_memory needs seccomp enabled")
	}
	if len(p.Seccomp.Allow) > 0 && !p.Seccomp.Enabled {
		bad("seccomp: allow lists syscalls but seccomp is disabled")
	}
	seen := map[string]bool{}
	for _, name := range p.Seccomp.Allow {
		switch {
		case !knownSyscall(name):
			bad("seccomp: unknown syscall %q", name)
		case isEscapeSurface(name):
			bad("seccomp: %q is escape surface and cannot be allowed", name)
		case uncheckable(name) != "":
			bad("seccomp: %q cannot be allowed: %s", name, uncheckable(name))
		case inBase(name):
			bad("seccomp: %q is already in the base allowlist, with argument conditions that a policy cannot widen", name)
		case seen[name]:
			bad("seccomp: %q listed twice", name)
		}
		seen[name] = true
	}
	l := p.Limits
	if l.Memory != 0 && l.Memory < minMemory {
		bad("limits: memory %d is below the %d bytes the Go runtime needs to start", l.Memory, uint64(minMemory))
	}
	if l.OpenFiles != 0 && l.OpenFiles < minOpenFiles {
		bad("limits: open files %d is below the %d the renderer needs", l.OpenFiles, minOpenFiles)
	}
	if l.Threads != 0 && l.Threads < minThreads {
		bad("limits: threads %d is below the %d the Go runtime needs", l.Threads, minThreads)
	}
	if l.CPUTime < 0 || l.CallTimeout < 0 || l.Lifetime < 0 {
		bad("limits: durations must not be negative")
	}
	if l.Cgroup.CPUPercent > 100*maxCPUs {
		bad("limits: cgroup cpu percent %d is over %d", l.Cgroup.CPUPercent, 100*maxCPUs)
	}
	seenLayer := map[Layer]bool{}
	for _, layer := range p.AllowDegraded {
		switch {
		case !slices.Contains(AllLayers(), layer):
			bad("allow_degraded: unknown layer %q", layer)
		case seenLayer[layer]:
			bad("allow_degraded: layer %q listed twice", layer)
		case isNamespace(layer):
			// The broker creates namespaces before the renderer runs, in
			// one clone; there is no partial fallback to degrade to.
			bad("allow_degraded: namespace %q cannot be degraded at run time; disable it in the policy instead", layer)
		}
		seenLayer[layer] = true
	}
	return errors.Join(errs...)
}

// Floors below which the renderer cannot even start; Validate refuses
// limits under them so the failure is a clear error, not a crash.
const (
	minMemory    = 64 << 20
	minOpenFiles = 8
	minThreads   = 16
	maxCPUs      = 1024
)

func isNamespace(l Layer) bool {
	switch l {
	case LayerUserNS, LayerMountNS, LayerPIDNS, LayerNetNS, LayerIPCNS, LayerUTSNS, LayerCgroupNS:
		return true
	}
	return false
}

// Requested returns the layers p asks for, in lockdown order.
func (p *Policy) Requested() []Layer {
	var out []Layer
	add := func(on bool, l Layer) {
		if on {
			out = append(out, l)
		}
	}
	ns := p.Namespaces
	add(ns.User, LayerUserNS)
	add(ns.Mount, LayerMountNS)
	add(ns.PID, LayerPIDNS)
	add(ns.Net, LayerNetNS)
	add(ns.IPC, LayerIPCNS)
	add(ns.UTS, LayerUTSNS)
	add(ns.Cgroup, LayerCgroupNS)
	add(true, LayerRlimits)
	add(true, LayerNoNewPrivs)
	add(true, LayerCapabilities)
	add(p.Filesystem.Landlock, LayerLandlockFS)
	add(p.Network.Landlock, LayerLandlockNet)
	add(p.Scope.Landlock, LayerLandlockScope)
	add(p.Seccomp.Enabled, LayerSeccomp)
	add(p.Seccomp.Monitor, LayerSeccompMonitor)
	return out
}

// Degradable reports whether the caller accepts running without layer l.
func (p *Policy) Degradable(l Layer) bool {
	return slices.Contains(p.AllowDegraded, l)
}
