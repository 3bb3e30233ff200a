package policy

import (
	"fmt"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/internal/syscalltable"
)

// CmpOp is how a syscall argument is compared.
type CmpOp int

const (
	// Equal allows the call when the argument equals Value.
	Equal CmpOp = iota + 1
	// MaskedEqual allows the call when argument&Mask equals Value.
	MaskedEqual
)

// ArgCond is one condition on a syscall argument.
type ArgCond struct {
	Arg   uint // 0-based argument index
	Op    CmpOp
	Value uint64
	Mask  uint64 // MaskedEqual only
	// Self replaces Value with the renderer's own pid at lockdown time:
	// signals may go to the renderer itself and nowhere else.
	Self bool
}

func (c ArgCond) String() string {
	v := fmt.Sprintf("%#x", c.Value)
	if c.Self {
		v = "self"
	}
	if c.Op == MaskedEqual {
		return fmt.Sprintf("arg%d&%#x==%s", c.Arg, c.Mask, v)
	}
	return fmt.Sprintf("arg%d==%s", c.Arg, v)
}

// SyscallRule allows one syscall, or makes it fail with an errno.
type SyscallRule struct {
	Name string
	// AnyOf lists alternatives; the call is allowed when every condition
	// of one alternative holds. Empty means unconditionally.
	AnyOf [][]ArgCond
	// Errno, when nonzero, makes the call fail with that errno instead of
	// being allowed: for syscalls the runtime probes and falls back from.
	Errno unix.Errno
	// Why says why the renderer needs it; it is printed in SECURITY.md.
	Why string
}

// Conditions renders the rule's argument conditions for documentation.
func (r SyscallRule) Conditions() string {
	var alts []string
	for _, alt := range r.AnyOf {
		var cs []string
		for _, c := range alt {
			cs = append(cs, c.String())
		}
		alts = append(alts, strings.Join(cs, " and "))
	}
	return strings.Join(alts, " or ")
}

// ioctl request numbers golang.org/x/sys/unix does not name on every
// architecture (asm-generic values, as on amd64 and arm64).
const (
	ioctlFIONREAD = 0x541b
	// ioctlSIOCOUTQ is SIOCOUTQ (TIOCOUTQ): how many bytes a socket's
	// peer has not read yet, for ipc's bound on unread descriptors.
	ioctlSIOCOUTQ = 0x5411
	ioctlFIONBIO  = 0x5421
	ioctlFIONCLEX = 0x5450
	ioctlFIOCLEX  = 0x5451
)

// The exact clone flags that start a thread, and the only ones a renderer
// may pass, as Chromium's RestrictCloneToThreadsAndEPERMFork allows. A
// rule that only required CLONE_THREAD let through thread-looking clones
// that are something else: one with a descriptor table or filesystem
// context of its own (no CLONE_FILES or CLONE_FS), or with any further
// flag (CLONE_PARENT, CLONE_NEW*, CLONE_UNTRACED).
const (
	// cloneGoThread is the Go runtime's (runtime/os_linux.go
	// cloneFlags), used for its threads in a program without cgo.
	cloneGoThread = unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND |
		unix.CLONE_SYSVSEM | unix.CLONE_THREAD
	// cloneGlibcThread is glibc's pthread_create (nptl create_thread):
	// cgo's threads and C libraries' (MuPDF's), after clone3 failed with
	// ENOSYS.
	cloneGlibcThread = cloneGoThread | unix.CLONE_SETTLS | unix.CLONE_PARENT_SETTID | unix.CLONE_CHILD_CLEARTID
)

// shmExec is SHM_EXEC, shmat's flag for an executable attachment.
const shmExec = 0o100000

func allow(name, why string) SyscallRule { return SyscallRule{Name: name, Why: why} }

func allowIf(name, why string, alts ...[]ArgCond) SyscallRule {
	return SyscallRule{Name: name, AnyOf: alts, Why: why}
}

// withoutFlag allows the call only when flag is clear in the argument.
func withoutFlag(arg uint, flag uint64) []ArgCond {
	return []ArgCond{{Arg: arg, Op: MaskedEqual, Mask: flag, Value: 0}}
}

func argEq(arg uint, values ...uint64) [][]ArgCond {
	var alts [][]ArgCond
	for _, v := range values {
		alts = append(alts, []ArgCond{{Arg: arg, Op: Equal, Value: v}})
	}
	return alts
}

// BaseSyscalls returns the allowlist every renderer gets: what the Go
// runtime (with cgo and glibc), the ipc package and the shared-memory path
// need once the renderer is locked down, and nothing that reaches a file
// by name, creates a process or a socket, or changes privileges.
func BaseSyscalls() []SyscallRule {
	rules := []SyscallRule{
		// I/O on descriptors the renderer already holds.
		allow("read", "read the broker's socket and handed-in files"),
		allow("readv", "vectored reads"),
		allow("pread64", "positional reads of handed-in files"),
		allow("write", "log pipe, eventfd wakeups, shared memory from the broker"),
		allow("writev", "vectored writes"),
		allow("pwrite64", "positional writes into shared memory from the broker"),
		allow("lseek", "seek in handed-in files"),
		allowIf("openat", "libraries that probe files get EACCES from Landlock or ENOENT from the empty root, not a crash; "+
			"never O_PATH, which needs no Landlock right and would let fstat tell the host's devices, inodes and sizes",
			withoutFlag(2, unix.O_PATH)),
		allow("close", "close descriptors"),
		allow("dup", "duplicate descriptors"),
		allow("dup3", "duplicate descriptors"),
		allow("fstat", "check handed-in descriptors"),
		allowIf("newfstatat", "fstat through fstatat(fd, \"\", AT_EMPTY_PATH); path lookups stay useless in the empty root",
			[]ArgCond{{Arg: 3, Op: MaskedEqual, Mask: unix.AT_EMPTY_PATH, Value: unix.AT_EMPTY_PATH}}),
		allowIf("fcntl", "descriptor flags and memfd seals",
			argEq(1, unix.F_GETFD, unix.F_SETFD, unix.F_GETFL, unix.F_SETFL, unix.F_DUPFD_CLOEXEC, unix.F_ADD_SEALS, unix.F_GET_SEALS)...),
		allowIf("ioctl", "harmless descriptor queries; never TIOCSTI or device ioctls",
			argEq(1, ioctlFIONREAD, ioctlSIOCOUTQ, ioctlFIOCLEX, ioctlFIONCLEX, ioctlFIONBIO, unix.TCGETS)...),
		// The IPC socket.
		allow("recvmsg", "receive IPC datagrams and descriptors"),
		allow("sendmsg", "send IPC datagrams and descriptors"),
		allowIf("getsockopt", "SO_TYPE/SO_DOMAIN checks of the IPC socket",
			[]ArgCond{{Arg: 1, Op: Equal, Value: unix.SOL_SOCKET}}),
		allow("shutdown", "close the IPC socket"),
		// No memfd_create or ftruncate: shared memory for bulk results
		// comes from the broker, sized and counted there
		// (Limits.SharedMemory), because the pages of a memfd the
		// renderer wrote and kept open would count against no limit.
		// Memory.
		allow("mmap", "memory allocation and shared-memory mappings"),
		allow("munmap", "memory release"),
		allow("mprotect", "thread stack guard pages (glibc)"),
		allow("mremap", "realloc of large blocks (glibc)"),
		allow("madvise", "return memory to the kernel"),
		allow("brk", "malloc (glibc)"),
		// Threads, never processes.
		allowIf("clone", "threads only: exactly the flags of a Go runtime thread or of glibc's pthread_create",
			argEq(0, cloneGoThread, cloneGlibcThread)...),
		{Name: "clone3", Errno: unix.ENOSYS, Why: "its flags are behind a pointer seccomp cannot check; ENOSYS makes glibc fall back to clone"},
		allow("set_robust_list", "thread start (glibc)"),
		allow("rseq", "thread start (glibc)"),
		allow("set_tid_address", "thread start"),
		allow("futex", "locks and thread parking"),
		allow("sched_yield", "scheduler"),
		allow("sched_getaffinity", "runtime CPU count"),
		allow("gettid", "runtime thread ids"),
		allow("getpid", "runtime signal delivery to itself"),
		allow("exit", "thread exit"),
		allow("exit_group", "process exit"),
		// Signals, to the renderer itself only.
		allowIf("rt_sigaction", "read handlers only: the runtime installed its own, all SA_RESTART, before the filter; a new handler without SA_RESTART would let a signal turn a disallowed syscall into EINTR before the monitor reads it",
			[]ArgCond{{Arg: 1, Op: Equal, Value: 0}}),
		allow("rt_sigprocmask", "runtime signal masks"),
		allow("rt_sigreturn", "return from signal handlers"),
		allow("sigaltstack", "runtime signal stacks"),
		allowIf("tgkill", "goroutine preemption and ipc wakeups: signals to its own threads only",
			[]ArgCond{{Arg: 0, Op: Equal, Self: true}}),
		allowIf("kill", "runtime raise: signals to itself only",
			[]ArgCond{{Arg: 0, Op: Equal, Self: true}}),
		// Time and polling.
		allow("clock_gettime", "time"),
		allow("clock_nanosleep", "sleep"),
		allow("nanosleep", "sleep"),
		allow("gettimeofday", "time"),
		allow("epoll_create1", "runtime network poller"),
		allow("epoll_ctl", "runtime network poller"),
		allow("epoll_pwait", "runtime network poller"),
		allow("epoll_pwait2", "runtime network poller"),
		allow("epoll_wait", "runtime network poller"),
		allow("eventfd2", "runtime network poller wakeups"),
		allow("pipe2", "runtime network poller wakeups (older runtimes)"),
		allow("ppoll", "poll a descriptor"),
		allow("poll", "poll a descriptor"),
		allow("restart_syscall", "restart after a signal"),
		// Process information about itself.
		allow("getrandom", "randomness for maps and crypto"),
		allowIf("prlimit64", "read its own limits; never set them",
			[]ArgCond{{Arg: 0, Op: Equal, Value: 0}, {Arg: 2, Op: Equal, Value: 0}}),
		allow("getrlimit", "read its own limits"),
		allow("uname", "runtime kernel version checks"),
		allow("getuid", "identity queries"),
		allow("geteuid", "identity queries"),
		allow("getgid", "identity queries"),
		allow("getegid", "identity queries"),
		allowIf("prctl", "thread names and anonymous mapping names only",
			argEq(0, unix.PR_SET_NAME, unix.PR_GET_NAME, unix.PR_SET_VMA, unix.PR_GET_DUMPABLE)...),
	}
	return rules
}

// EscapeSurface returns syscalls that have been the first step of sandbox
// escapes or that undo the sandbox. A policy can never allow them; they
// are also absent from BaseSyscalls, so calling one is a violation.
func EscapeSurface() []string {
	return []string{
		"acct", "add_key", "bpf", "chroot", "clone3", "delete_module", "execve", "execveat",
		"finit_module", "fsconfig", "fsmount", "fsopen", "fspick", "init_module", "io_uring_enter",
		"io_uring_register", "io_uring_setup", "ioperm", "iopl", "kcmp", "kexec_file_load", "kexec_load",
		"keyctl", "mount", "mount_setattr", "move_mount", "name_to_handle_at", "open_by_handle_at",
		"open_tree", "perf_event_open", "personality", "pidfd_getfd", "pidfd_open", "pidfd_send_signal",
		"pivot_root", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace", "quotactl",
		"reboot", "request_key", "setns", "socket", "socketpair", "swapoff", "swapon", "umount2",
		"unshare", "userfaultfd", "vmsplice", "capset", "setuid", "setgid", "setreuid", "setregid",
		"setresuid", "setresgid", "setgroups", "seccomp", "fork", "vfork", "syslog",
	}
}

func isEscapeSurface(name string) bool { return slices.Contains(EscapeSurface(), name) }

func inBase(name string) bool {
	return slices.ContainsFunc(BaseSyscalls(), func(r SyscallRule) bool { return r.Name == name })
}

// knownSyscall reports whether name is a syscall of an architecture
// sandkit supports, from a table generated from libseccomp: policy needs
// neither cgo nor the library to check a name.
func knownSyscall(name string) bool { return syscalltable.Known(name) }

// uncheckable says why a policy cannot allow name, "" if it can: a rule
// of the base list depends on an argument name keeps behind a pointer,
// where seccomp cannot read it (openat2 would open with O_PATH, which
// openat's rule refuses).
func uncheckable(name string) string {
	if name == "openat2" {
		return "its flags are behind a pointer seccomp cannot check, and O_PATH is never allowed"
	}
	return ""
}

// SyscallRules returns the complete allowlist of p: BaseSyscalls plus
// p.Seccomp.Allow, allowed under the argument conditions every syscall of
// their kind must meet (open never with O_PATH, as openat), otherwise
// unconditionally. Call it on a validated policy: Validate refuses names
// that are unknown, duplicated, already in the base list, escape surface
// or uncheckable.
func (p *Policy) SyscallRules() []SyscallRule {
	rules := BaseSyscalls()
	for _, name := range p.Seccomp.Allow {
		r := SyscallRule{Name: name, Why: "allowed by the policy"}
		if name == "open" {
			r.AnyOf = [][]ArgCond{withoutFlag(1, unix.O_PATH)}
			r.Why += "; never O_PATH"
		}
		rules = append(rules, r)
	}
	if p.Seccomp.DenyExecMemory {
		for i := range rules {
			denyExec(&rules[i])
		}
	}
	return rules
}

// execArg gives, for each syscall that can make memory executable, the
// argument and the bit that asks for it.
func execArg(name string) (arg uint, bit uint64, ok bool) {
	switch name {
	case "mmap", "mprotect", "pkey_mprotect":
		return 2, unix.PROT_EXEC, true
	case "shmat":
		return 2, shmExec, true
	}
	return 0, 0, false
}

// denyExec makes r allow its syscall only without the bit that asks for
// executable memory (Seccomp.DenyExecMemory), in every alternative.
func denyExec(r *SyscallRule) {
	arg, bit, ok := execArg(r.Name)
	if !ok || r.Errno != 0 {
		return
	}
	cond := ArgCond{Arg: arg, Op: MaskedEqual, Mask: bit, Value: 0}
	if len(r.AnyOf) == 0 {
		r.AnyOf = [][]ArgCond{{cond}}
	} else {
		alts := make([][]ArgCond, len(r.AnyOf))
		for i, alt := range r.AnyOf {
			alts[i] = append(slices.Clone(alt), cond)
		}
		r.AnyOf = alts
	}
	r.Why += "; never executable (deny_exec_memory)"
}
