package broker

/*
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "foreign_launch.h"

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif

// What the children are asked to do and what they report back. They run
// on their own stacks in the parent's memory (CLONE_VM) until they exec or
// exit, so they write pid, pidfd, step and err straight into this struct;
// the parent is suspended until then (CLONE_VFORK) and reads them after
// clone returns.
struct sandkit_spawn {
	const char *path;
	int exe_fd;         // >= 0: exec this descriptor (execveat), not path
	char *const *argv;
	int ns_flags;       // CLONE_NEW* flags
	int map_ids;        // write this process's own uid/gid map (user namespace)
	unsigned uid, gid;  // the ids mapped to 0 inside
	int switch_ids;     // become host_id (uid, gid, no groups) before exec
	unsigned host_id;
	int two_step;       // switch ids in a first child, which clones the renderer
	int probe;          // the renderer exits after its maps (probeHostIDSpawn)
	int log_fd;         // becomes stdout and stderr
	int sock_fd;        // becomes fd 3
	char *stack2;       // top of the renderer's stack (two_step)
	int pid, pidfd;     // out: the renderer's
	int step, err;      // out: the step that failed and its errno
	int status;         // out: the first child's wait status (SANDKIT_STEP_SWITCHER)
	struct sandkit_launch *launch; // a foreign program: its launcher replaces the steps from FDS on
};

// The steps, in the order of childSteps in Go.
enum {
	SANDKIT_STEP_NONE,
	SANDKIT_STEP_SETGROUPS,
	SANDKIT_STEP_UID_MAP,
	SANDKIT_STEP_GID_MAP,
	SANDKIT_STEP_SETSID,
	SANDKIT_STEP_PDEATHSIG,
	SANDKIT_STEP_FDS,
	SANDKIT_STEP_EXEC,
	SANDKIT_STEP_DROP_GROUPS,
	SANDKIT_STEP_SETGID,
	SANDKIT_STEP_SETUID,
	SANDKIT_STEP_DUMPABLE,
	SANDKIT_STEP_CLONE,
	SANDKIT_STEP_SWITCHER,
	SANDKIT_STEP_LAUNCH,
};

static int sandkit_write_file(const char *path, const char *s) {
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0) {
		return -1;
	}
	ssize_t n = write(fd, s, strlen(s));
	int saved = errno;
	close(fd);
	errno = saved;
	return n < 0 ? -1 : 0;
}

// sandkit_id_map formats "0 <id> 1" into buf (at least 16 bytes): a map
// line, without stdio, which is not async-signal-safe.
static void sandkit_id_map(char *buf, unsigned id) {
	char digits[10];
	int n = 0;
	do {
		digits[n++] = '0' + id % 10;
		id /= 10;
	} while (id != 0);
	char *p = buf;
	*p++ = '0';
	*p++ = ' ';
	while (n > 0) {
		*p++ = digits[--n];
	}
	*p++ = ' ';
	*p++ = '1';
	*p = '\0';
}

static int sandkit_fail(struct sandkit_spawn *s, int step) {
	s->step = step;
	s->err = errno;
	_exit(127);
}

// sandkit_default_handlers makes every signal handler the default. The
// handlers are the parent's (Go's), copied at clone; the signal mask is
// the parent's too: everything blocked (see sandkit_spawn), so no handler
// can run before this.
static void sandkit_default_handlers(void) {
	struct sigaction dfl;
	memset(&dfl, 0, sizeof dfl);
	dfl.sa_handler = SIG_DFL;
	for (int sig = 1; sig < NSIG; sig++) {
		sigaction(sig, &dfl, NULL); // fails harmlessly for SIGKILL, SIGSTOP and glibc's own
	}
}

// sandkit_become makes the calling process host_id, with no supplementary
// groups, the gid first while it still may. It makes raw system calls:
// glibc's setgroups, setresgid and setresuid change every thread of the
// process they think they run in, and the memory here is the broker's, so
// they would signal the broker's threads and wait for them. A raw call
// changes this process only.
static void sandkit_become(struct sandkit_spawn *s) {
	if (syscall(SYS_setgroups, 0, NULL) < 0) {
		sandkit_fail(s, SANDKIT_STEP_DROP_GROUPS);
	}
	if (syscall(SYS_setresgid, s->host_id, s->host_id, s->host_id) < 0) {
		sandkit_fail(s, SANDKIT_STEP_SETGID);
	}
	if (syscall(SYS_setresuid, s->host_id, s->host_id, s->host_id) < 0) {
		sandkit_fail(s, SANDKIT_STEP_SETUID);
	}
}

// sandkit_child becomes the renderer: it runs in the new process before
// exec. It uses only system calls and its own stack: the memory around it
// is the broker's, whose Go runtime keeps running on other threads.
static int sandkit_child(void *arg) {
	struct sandkit_spawn *s = arg;
	char buf[32];
	if (!s->two_step) {
		sandkit_default_handlers(); // else the first child did
	}
	if (s->switch_ids && !s->two_step) {
		// No user namespace: the ids are host ids. Before the
		// parent-death signal, which a change of ids clears.
		sandkit_become(s);
	}
	// A process may map its own uid and gid in the user namespace it
	// created (user_namespaces(7)): no help from the parent is needed,
	// which is what lets the parent stay suspended. In two steps, the
	// namespace was created by host_id, which is this process's own.
	if (s->map_ids) {
		if (sandkit_write_file("/proc/self/setgroups", "deny") < 0) {
			sandkit_fail(s, SANDKIT_STEP_SETGROUPS);
		}
		sandkit_id_map(buf, s->uid);
		if (sandkit_write_file("/proc/self/uid_map", buf) < 0) {
			sandkit_fail(s, SANDKIT_STEP_UID_MAP);
		}
		sandkit_id_map(buf, s->gid);
		if (sandkit_write_file("/proc/self/gid_map", buf) < 0) {
			sandkit_fail(s, SANDKIT_STEP_GID_MAP);
		}
	}
	if (s->probe) {
		_exit(0);
	}
	if (s->two_step) {
		// /proc/self is no longer needed: the broker's memory is not
		// dumpable while an unprivileged id shares it (see
		// sandkit_switcher), a few system calls earlier than the
		// parent's restoring of its own setting would make it.
		if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) {
			sandkit_fail(s, SANDKIT_STEP_DUMPABLE);
		}
	}
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (setsid() < 0) {
		sandkit_fail(s, SANDKIT_STEP_SETSID);
	}
	// Killed when the spawning thread exits (the broker's locked spawner
	// thread; in two steps too: CLONE_PARENT made this process its
	// child). Should the broker die in the microseconds before this, the
	// renderer still ends: its socket hangs up.
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) {
		sandkit_fail(s, SANDKIT_STEP_PDEATHSIG);
	}
	if (s->launch != NULL) {
		sandkit_launch(s->launch); // returns only on failure
		sandkit_fail(s, SANDKIT_STEP_LAUNCH);
	}
	// Move the sources above the targets first, so that installing one
	// never overwrites another; the copies are close-on-exec.
	int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (null_fd < 0) {
		sandkit_fail(s, SANDKIT_STEP_FDS);
	}
	int src[4] = {null_fd, s->log_fd, s->log_fd, s->sock_fd};
	for (int i = 0; i < 4; i++) {
		src[i] = fcntl(src[i], F_DUPFD_CLOEXEC, 10);
		if (src[i] < 0) {
			sandkit_fail(s, SANDKIT_STEP_FDS);
		}
	}
	for (int i = 0; i < 4; i++) {
		if (dup2(src[i], i) < 0) { // the target is not close-on-exec
			sandkit_fail(s, SANDKIT_STEP_FDS);
		}
	}
	char *const env[] = {NULL};
	if (s->exe_fd >= 0) {
		// The descriptor, not the path: host_id need not be allowed
		// to search the directories above the executable.
		syscall(SYS_execveat, s->exe_fd, "", s->argv, env, AT_EMPTY_PATH);
	} else {
		execve(s->path, s->argv, env);
	}
	sandkit_fail(s, SANDKIT_STEP_EXEC);
	return 127;
}

#define SANDKIT_CHILD_STACK (64 << 10)

// sandkit_switcher is the first of two steps: it becomes host_id and
// clones the renderer into new namespaces, its user namespace owned by
// host_id, so that the renderer may map host_id itself.
//
// It shares the broker's descriptor table (CLONE_FILES), so that the
// renderer's pidfd (CLONE_PIDFD) is the broker's; the renderer gets a
// copy of the table, as a single-step child does. CLONE_PARENT makes the
// renderer the broker's child (its parent-death signal, its wait), and
// its exit signal this process's, SIGCHLD. This process exits once the
// renderer has exec'd or exited (CLONE_VFORK); the broker reaps it.
//
// Changing its ids makes the memory it shares, the broker's, not
// dumpable (commit_creds sets fs.suid_dumpable), and a non-dumpable
// process's /proc/self files belong to root, which the renderer could not
// open to write its maps. So it makes the memory dumpable again, for
// about as long as the renderer takes to write them: an unprivileged
// process of the same id could read it meanwhile, and no other process
// runs as host_id (Config.RendererIDs is the broker's own range, and an
// id is reused only after its renderer and everything in its pid
// namespace have been reaped).
static int sandkit_switcher(void *arg) {
	struct sandkit_spawn *s = arg;
	sandkit_default_handlers(); // the renderer copies them at clone
	sandkit_become(s);
	if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) < 0) {
		sandkit_fail(s, SANDKIT_STEP_DUMPABLE);
	}
	int pid = clone(sandkit_child, s->stack2,
		CLONE_VM | CLONE_VFORK | CLONE_PARENT | CLONE_PIDFD | s->ns_flags | SIGCHLD, s, &s->pidfd);
	if (pid < 0) {
		sandkit_fail(s, SANDKIT_STEP_CLONE);
	}
	s->pid = pid;
	_exit(0);
	return 0;
}

// sandkit_spawn starts the renderer in new namespaces and returns 0, or
// -1 with errno set when the first clone itself failed. The calling
// thread blocks until the renderer has exec'd or exited; s->step says
// which step failed, s->pid and s->pidfd are the renderer's.
static int sandkit_spawn(struct sandkit_spawn *s) {
	char *stack = malloc(SANDKIT_CHILD_STACK * (s->two_step ? 2 : 1));
	if (stack == NULL) {
		return -1;
	}
	// Block every signal on this thread while the child shares it: a
	// signal delivered in the child before it reset the handlers would run
	// Go's handler on a thread the Go runtime does not know.
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	// A child that changes its ids changes the dumpable setting of the
	// memory it shares, the broker's: put back what it was.
	int dumpable = s->switch_ids ? prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) : -1;
	s->pid = 0;
	s->pidfd = -1;
	s->step = SANDKIT_STEP_NONE;
	s->err = 0;
	s->status = 0;
	int ret = 0;
	if (s->two_step) {
		s->stack2 = stack + 2 * SANDKIT_CHILD_STACK;
		int pid = clone(sandkit_switcher, stack + SANDKIT_CHILD_STACK,
			CLONE_VM | CLONE_VFORK | CLONE_FILES | SIGCHLD, s);
		if (pid < 0) {
			ret = -1;
		} else {
			int status = 0;
			while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
			}
			if (s->step == SANDKIT_STEP_NONE && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
				// Killed before it could say: by a signal from
				// outside, since its own are all blocked.
				s->step = SANDKIT_STEP_SWITCHER;
				s->status = status;
			}
		}
	} else {
		int pid = clone(sandkit_child, stack + SANDKIT_CHILD_STACK,
			CLONE_VM | CLONE_VFORK | CLONE_PIDFD | s->ns_flags | SIGCHLD, s, &s->pidfd);
		if (pid < 0) {
			ret = -1;
		} else {
			s->pid = pid;
		}
	}
	int saved = errno;
	if ((dumpable == 0 || dumpable == 1) && prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != dumpable) {
		prctl(PR_SET_DUMPABLE, dumpable, 0, 0, 0);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	free(stack);
	errno = saved;
	return ret;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// dumpableMu serializes spawnVfork across every Broker of the process.
// A child that switches ids changes the dumpable setting of the memory it
// shares, which is the whole process's (see sandkit_switcher), and a
// renderer can write its own id maps only while that setting is 1: two
// spawns at once, from two brokers (the document viewer's batch runs one
// per document), would turn it off under each other ("deny setgroups:
// permission denied"). Each broker already spawns from one thread; this
// makes it one per process. It is the one piece of package state, because
// what it guards is process state.
var dumpableMu sync.Mutex

// vforkSpec is what spawnVfork starts: path (or exe) with argv, no
// environment, in the namespaces ns, with log as stdout and stderr, sock
// as fd 3 and /dev/null as stdin.
type vforkSpec struct {
	path string
	// exe, if set, is exec'd instead of path (execveat AT_EMPTY_PATH): a
	// renderer that runs as an id of its own may not search the path's
	// directories.
	exe  *os.File
	argv []string
	ns   uintptr // CLONE_NEW* flags
	// hostID is the host uid and gid the renderer runs as, with no
	// supplementary groups; -1 keeps the broker's.
	hostID int
	log    *os.File
	sock   *os.File
	// probe makes the renderer exit once its ids are mapped, before it
	// touches a descriptor (probeHostIDSpawn).
	probe bool
	// launch, if set, starts a foreign program: its launcher
	// (foreign_launch.c) installs the descriptors, locks the child down
	// and execs, in place of log, sock and exe.
	launch *C.struct_sandkit_launch
}

// childStepError is a failure of a child between clone and exec.
type childStepError struct {
	step string
	// namespace is whether the step creates or maps the renderer's
	// namespaces, which a kernel or a security module may refuse (see
	// spawnErr).
	namespace bool
	err       error
}

func (e *childStepError) Error() string { return fmt.Sprintf("renderer child: %s: %v", e.step, e.err) }
func (e *childStepError) Unwrap() error { return e.err }

// childSteps names the C enum's steps, by value.
var childSteps = [...]string{
	"", "deny setgroups", "write uid_map", "write gid_map", "setsid", "set the parent-death signal",
	"install descriptors", "exec", "drop supplementary groups (setgroups)", "switch gid (setresgid)",
	"switch uid (setresuid)", "set dumpable (prctl)", "clone the renderer into its namespaces", "switch ids",
	"launch the foreign program",
}

func namespaceStep(step C.int) bool {
	switch step {
	case C.SANDKIT_STEP_SETGROUPS, C.SANDKIT_STEP_UID_MAP, C.SANDKIT_STEP_GID_MAP, C.SANDKIT_STEP_CLONE:
		return true
	}
	return false
}

// spawnVfork starts a renderer the way posix_spawn starts a program:
// clone with CLONE_VM|CLONE_VFORK, so that nothing of the broker's memory
// is copied, whatever its size. Go's own fork cannot do that for a child
// in a new user namespace, because it writes the child's uid and gid maps
// from the parent while the child waits; it copies the broker's page
// tables instead, which measured 0.8 ms for a 10 MB heap and 14.5 ms for
// 400 MB per spawn on the development VM (0.2 ms with this, at any size).
// Here the child maps its own ids, which user_namespaces(7) allows for the
// uid and gid that created the namespace.
//
// A renderer with a host id of its own (s.hostID) in a user namespace is
// started in two steps, so that the namespace's creator is that id: a
// first child (sandkit_switcher) becomes it and clones the renderer,
// which maps it. Without a user namespace one child becomes it after its
// clone. Either way with raw system calls, and exec through s.exe.
//
// It returns the pid and a pidfd, and must be called from the spawner's
// locked thread (Pdeathsig).
func spawnVfork(s vforkSpec) (pid int, pidfd int, err error) {
	dumpableMu.Lock()
	defer dumpableMu.Unlock()
	cs := (*C.struct_sandkit_spawn)(C.calloc(1, C.size_t(unsafe.Sizeof(C.struct_sandkit_spawn{}))))
	if cs == nil {
		return 0, -1, errors.New("spawn: out of memory")
	}
	defer C.free(unsafe.Pointer(cs))
	cs.path = C.CString(s.path)
	defer C.free(unsafe.Pointer(cs.path))
	argv := C.calloc(C.size_t(len(s.argv)+1), C.size_t(unsafe.Sizeof(uintptr(0))))
	if argv == nil {
		return 0, -1, errors.New("spawn: out of memory")
	}
	defer C.free(argv)
	args := unsafe.Slice((**C.char)(argv), len(s.argv)+1)
	for i, a := range s.argv {
		args[i] = C.CString(a)
		defer C.free(unsafe.Pointer(args[i]))
	}
	cs.argv = (**C.char)(argv)
	cs.ns_flags = C.int(s.ns)
	userNS := s.ns&unix.CLONE_NEWUSER != 0
	if userNS {
		cs.map_ids = 1
	}
	cs.uid, cs.gid = C.uint(os.Getuid()), C.uint(os.Getgid())
	cs.exe_fd = -1
	if s.exe != nil {
		cs.exe_fd = C.int(s.exe.Fd())
	}
	if s.hostID >= 0 {
		cs.switch_ids, cs.host_id = 1, C.uint(s.hostID)
		cs.uid, cs.gid = C.uint(s.hostID), C.uint(s.hostID)
		if userNS {
			cs.two_step = 1
		}
	}
	if s.probe {
		cs.probe = 1
	}
	cs.launch = s.launch
	// The descriptors stay open (and are not reused) until the call
	// returns, because the caller holds the files.
	cs.log_fd, cs.sock_fd = -1, -1
	if s.log != nil {
		cs.log_fd = C.int(s.log.Fd())
	}
	if s.sock != nil {
		cs.sock_fd = C.int(s.sock.Fd())
	}
	r, cerr := C.sandkit_spawn(cs)
	if r < 0 {
		if errno, ok := cerr.(syscall.Errno); ok {
			return 0, -1, fmt.Errorf("clone: %w", errno)
		}
		return 0, -1, fmt.Errorf("clone: %v", cerr)
	}
	pid, pidfd = int(cs.pid), int(cs.pidfd)
	if cs.step != C.SANDKIT_STEP_NONE {
		if pidfd >= 0 {
			// The renderer exists: it failed a step, or the first
			// child was killed after cloning it. Kill it if need be
			// and reap it here.
			_ = unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
			var info unix.Siginfo
			_ = unix.Waitid(unix.P_PIDFD, pidfd, &info, unix.WEXITED, nil)
			unix.Close(pidfd)
		}
		return 0, -1, stepError(cs)
	}
	if pidfd < 0 {
		return 0, -1, fmt.Errorf("renderer child: clone returned no pidfd for pid %d", pid)
	}
	return pid, pidfd, nil
}

func stepError(cs *C.struct_sandkit_spawn) error {
	step := "unknown step"
	if int(cs.step) < len(childSteps) {
		step = childSteps[cs.step]
	}
	if cs.step == C.SANDKIT_STEP_SWITCHER {
		ws := syscall.WaitStatus(cs.status)
		var how string
		if ws.Signaled() {
			how = "killed by " + ws.Signal().String()
		} else {
			how = fmt.Sprintf("exit status %d", ws.ExitStatus())
		}
		return &childStepError{step: step, err: fmt.Errorf("the first child ended before the renderer was cloned: %s", how)}
	}
	if cs.step == C.SANDKIT_STEP_LAUNCH && cs.launch != nil {
		return launchError(cs.launch, syscall.Errno(cs.err))
	}
	return &childStepError{step: step, namespace: namespaceStep(cs.step), err: syscall.Errno(cs.err)}
}

// probeHostIDSpawn starts, as hostID, what a spawn of a renderer with that
// id in the namespaces ns would start, up to its maps, and reports the
// step that failed. The kernel may let root create user namespaces but
// not an unprivileged id (kernel.unprivileged_userns_clone=0, AppArmor's
// apparmor_restrict_unprivileged_userns=1), and only trying tells.
func probeHostIDSpawn(hostID int, ns uintptr) error {
	pid, pidfd, err := spawnVfork(vforkSpec{argv: []string{"probe"}, ns: ns, hostID: hostID, probe: true})
	if err != nil {
		return err
	}
	defer unix.Close(pidfd)
	var ws unix.WaitStatus
	if _, err := unix.Wait4(pid, &ws, 0, nil); err != nil {
		return fmt.Errorf("probe child: wait: %w", err)
	}
	if !ws.Exited() || ws.ExitStatus() != 0 {
		return fmt.Errorf("probe child: wait status %#x", uint32(ws))
	}
	return nil
}
