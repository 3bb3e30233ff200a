package policy

import (
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Tmpfs is a private writable tmpfs of a foreign program: mounted at Path
// in its empty root (nosuid, nodev, noexec), at most Size bytes and
// MaxTmpfsInodes files, and the only place Landlock lets it write.
type Tmpfs struct {
	Path string
	Size uint64
}

// Bounds on a policy's tmpfs mounts. Each one's pages are kernel memory
// no rlimit counts, so a policy states their size and these cap it.
const (
	MaxTmpfsSize   = 1 << 30
	MaxTmpfsMounts = 8
	// MaxTmpfsInodes bounds the files of one tmpfs, whose inodes are
	// kernel memory too (nr_inodes).
	MaxTmpfsInodes = 4096
)

// ForeignDevice returns the device number of path if it is one of the
// character devices a policy may bind (Filesystem.Devices): /dev/null,
// /dev/zero, /dev/full, /dev/random and /dev/urandom, the kernel's memory
// devices (major 1). Each is stateless or a source of random bytes, and
// Landlock lets the program only read them (a write to /dev/null or
// /dev/urandom would be harmless too, but is not needed). A function, not
// a map, so that no caller can widen the list.
func ForeignDevice(path string) (rdev uint64, ok bool) {
	switch path {
	case "/dev/null":
		return unix.Mkdev(1, 3), true
	case "/dev/zero":
		return unix.Mkdev(1, 5), true
	case "/dev/full":
		return unix.Mkdev(1, 7), true
	case "/dev/random":
		return unix.Mkdev(1, 8), true
	case "/dev/urandom":
		return unix.Mkdev(1, 9), true
	}
	return 0, false
}

// The clone flags of glibc's fork (_Fork: arch_fork) and of the bare fork
// system call's equivalent. A child gets its own memory, descriptor table
// and filesystem context, and no namespace, tracing or parent change.
const (
	cloneGlibcFork = unix.CLONE_CHILD_SETTID | unix.CLONE_CHILD_CLEARTID | uint64(unix.SIGCHLD)
	cloneFork      = uint64(unix.SIGCHLD)
)

// ForeignSyscallRules returns the allowlist of a foreign program under
// p: SyscallRules, plus, with AllowChildren, clone with exactly the flags
// of fork (as further alternatives of the thread rule) and the wait
// calls; with AllowPathStat, newfstatat without conditions. prlimit64
// may also set the program's own limits, rt_sigaction install handlers,
// prctl read the bounding set; with AllowFileLocks, fcntl's record locks,
// fsync and fdatasync; with AllowUnixSockets, socket and socketpair of
// AF_UNIX. exec is never among them: the broker's launcher adds the one
// exec of the program itself (see broker.Program).
func (p *Policy) ForeignSyscallRules() []SyscallRule {
	rules := p.SyscallRules()
	for i := range rules {
		if rules[i].Name == "rt_sigaction" {
			// A C program installs its handlers after exec, when the
			// filter is in force. One without SA_RESTART may see a
			// disallowed call end in EINTR, unreported, if a signal
			// comes before the monitor reads the notification; the
			// call still never runs.
			rules[i].AnyOf = nil
			rules[i].Why = "install signal handlers (a C program does so after exec); a disallowed call a signal interrupts before the monitor reads it ends in EINTR, never runs"
		}
		if rules[i].Name == "prlimit64" {
			// A foreign program may set its own limits too (glibc's
			// setrlimit; LibreOffice raises its descriptor limit's
			// soft value): without CAP_SYS_RESOURCE it can only lower
			// a hard limit, and the launcher set every soft limit to
			// its hard one.
			rules[i].AnyOf = [][]ArgCond{{{Arg: 0, Op: Equal, Value: 0}}}
			rules[i].Why = "read and set its own limits (pid 0): without capabilities a hard limit only goes down"
		}
		if rules[i].Name == "prctl" {
			// Libraries probe capabilities before using them
			// (LibreOffice's Impress does): a read of the bounding
			// set, which the launcher emptied.
			rules[i].AnyOf = append(slices.Clone(rules[i].AnyOf), argEq(0, unix.PR_CAPBSET_READ)...)
			rules[i].Why += "; PR_CAPBSET_READ (a read of its own bounding set, empty)"
		}
	}
	if p.Seccomp.AllowPathStat {
		for i := range rules {
			if rules[i].Name == "newfstatat" {
				rules[i].AnyOf = nil
				rules[i].Why = "stat by path (allow_path_stat): in the empty root a path reaches only the policy's binds and tmpfs mounts"
			}
		}
	}
	if p.Seccomp.AllowFileLocks {
		for i := range rules {
			if rules[i].Name == "fcntl" {
				rules[i].AnyOf = append(slices.Clone(rules[i].AnyOf), argEq(1, unix.F_GETLK, unix.F_SETLK, unix.F_SETLKW,
					unix.F_OFD_GETLK, unix.F_OFD_SETLK, unix.F_OFD_SETLKW)...)
				rules[i].Why += "; record locks (allow_file_locks)"
			}
		}
		rules = append(rules,
			SyscallRule{Name: "fsync", Why: "flush a file (allow_file_locks: SQLite syncs its database)"},
			SyscallRule{Name: "fdatasync", Why: "flush a file's data (allow_file_locks: SQLite syncs its journal)"})
	}
	if p.Seccomp.AllowUnixSockets {
		unixOnly := [][]ArgCond{{{Arg: 0, Op: Equal, Value: unix.AF_UNIX}}}
		rules = append(rules,
			SyscallRule{Name: "socket", AnyOf: unixOnly, Why: "AF_UNIX sockets only (allow_unix_sockets): nothing outside the empty root and the Landlock scope to reach"},
			SyscallRule{Name: "socketpair", AnyOf: unixOnly, Why: "AF_UNIX socket pairs only (allow_unix_sockets)"})
	}
	if !p.Seccomp.AllowChildren {
		return rules
	}
	for i := range rules {
		if rules[i].Name == "clone" {
			rules[i].AnyOf = append(slices.Clone(rules[i].AnyOf), argEq(0, cloneGlibcFork, cloneFork)...)
			rules[i].Why += "; or exactly fork's (allow_children)"
		}
	}
	return append(rules,
		allow("wait4", "reap child processes (allow_children)"),
		allow("waitid", "reap child processes (allow_children)"))
}

// validateForeign checks the fields only foreign programs use.
func (p *Policy) validateForeign(bad func(string, ...any)) {
	fs := p.Filesystem
	if (len(fs.ExecutablePaths) > 0 || len(fs.Tmpfs) > 0) && !p.Namespaces.Mount {
		bad("filesystem: executable_paths and tmpfs need the mount namespace (they are mounted in the empty root)")
	}
	seen := map[string]bool{}
	for _, path := range fs.ReadOnlyPaths {
		seen[path] = true
	}
	for _, path := range fs.ExecutablePaths {
		if why := badMountPath(path); why != "" {
			bad("filesystem: executable path %q %s", path, why)
		}
		if seen[path] {
			bad("filesystem: executable path %q listed twice or also read-only", path)
		}
		seen[path] = true
	}
	binds := append(slices.Clone(fs.ReadOnlyPaths), fs.ExecutablePaths...)
	if len(fs.Devices) > 0 && !p.Namespaces.Mount {
		bad("filesystem: devices need the mount namespace (they are bound in the empty root)")
	}
	for _, dev := range fs.Devices {
		if _, ok := ForeignDevice(dev); !ok {
			bad("filesystem: device %q is not one of /dev/null, /dev/zero, /dev/full, /dev/random, /dev/urandom", dev)
		}
		if seen[dev] {
			bad("filesystem: device %q listed twice or also a path", dev)
		}
		seen[dev] = true
		for _, other := range binds {
			if beneath(dev, other) {
				bad("filesystem: device %q lies beneath the bind %q", dev, other)
			}
		}
	}
	binds = append(binds, fs.Devices...)
	if len(fs.Tmpfs) > MaxTmpfsMounts {
		bad("filesystem: %d tmpfs mounts, at most %d", len(fs.Tmpfs), MaxTmpfsMounts)
	}
	for i, t := range fs.Tmpfs {
		if why := badMountPath(t.Path); why != "" {
			bad("filesystem: tmpfs %q %s", t.Path, why)
		}
		if t.Size == 0 || t.Size > MaxTmpfsSize {
			bad("filesystem: tmpfs %q of %d bytes: give a size from 1 to %d", t.Path, t.Size, uint64(MaxTmpfsSize))
		}
		// Binds are mounted before tmpfs mounts: one beneath a tmpfs
		// would be hidden, and a tmpfs beneath a bind cannot be made
		// on the read-only bind.
		for _, other := range append(slices.Clone(binds), tmpfsPaths(fs.Tmpfs[:i])...) {
			if beneath(t.Path, other) || beneath(other, t.Path) {
				bad("filesystem: tmpfs %q overlaps %q", t.Path, other)
			}
		}
	}
	if p.Seccomp.AllowPathStat && !p.Seccomp.Enabled {
		bad("seccomp: allow_path_stat needs seccomp enabled")
	}
	if p.Seccomp.AllowUnixSockets && (!p.Seccomp.Enabled || !p.Scope.Landlock || !p.Namespaces.Net) {
		bad("seccomp: allow_unix_sockets needs seccomp, the Landlock scope (abstract sockets) and the network namespace")
	}
	if p.Seccomp.AllowFileLocks && !p.Seccomp.Enabled {
		bad("seccomp: allow_file_locks needs seccomp enabled")
	}
	if p.Seccomp.AllowChildren && !p.Seccomp.Enabled {
		bad("seccomp: allow_children needs seccomp enabled (without it nothing stops children)")
	}
}

func tmpfsPaths(ts []Tmpfs) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.Path
	}
	return out
}

// beneath reports whether path is dir or inside it.
func beneath(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// badMountPath says what is wrong with a path to mount in the empty
// root, "" if nothing.
func badMountPath(path string) string {
	switch {
	case !filepath.IsAbs(path):
		return "is not absolute"
	case filepath.Clean(path) != path:
		return "is not clean"
	case path == "/":
		return "would cover the whole root"
	case beneath(path, "/proc"):
		return "is under /proc"
	case strings.ContainsRune(path, 0):
		return "holds a NUL byte"
	}
	return ""
}
