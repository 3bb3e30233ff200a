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
#include <unistd.h>

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif

// What the child is asked to do and what it reports back. The child runs
// on its own stack in the parent's memory (CLONE_VM) until it execs or
// exits, so it writes step and err straight into this struct; the parent
// is suspended until then (CLONE_VFORK) and reads them after clone returns.
struct sandkit_spawn {
	const char *path;
	char *const *argv;
	int ns_flags;       // CLONE_NEW* flags
	int map_ids;        // write this process's own uid/gid map (user namespace)
	unsigned uid, gid;  // the broker's, mapped to 0 inside
	int log_fd;         // becomes stdout and stderr
	int sock_fd;        // becomes fd 3
	int pidfd;          // out
	int step, err;      // out: the step that failed and its errno
};

enum {
	SANDKIT_STEP_NONE,
	SANDKIT_STEP_SETGROUPS,
	SANDKIT_STEP_UID_MAP,
	SANDKIT_STEP_GID_MAP,
	SANDKIT_STEP_SETSID,
	SANDKIT_STEP_PDEATHSIG,
	SANDKIT_STEP_FDS,
	SANDKIT_STEP_EXEC,
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

// sandkit_child runs in the new process before exec. It uses only system
// calls and its own stack: the memory around it is the parent's, whose Go
// runtime keeps running on other threads.
static int sandkit_child(void *arg) {
	struct sandkit_spawn *s = arg;
	char buf[32];
	// Signal handlers are the parent's (Go's), and so is the signal
	// mask (everything blocked, see sandkit_spawn): make both the
	// defaults before any signal can be delivered here.
	struct sigaction dfl;
	memset(&dfl, 0, sizeof dfl);
	dfl.sa_handler = SIG_DFL;
	for (int sig = 1; sig < NSIG; sig++) {
		sigaction(sig, &dfl, NULL); // fails harmlessly for SIGKILL, SIGSTOP and glibc's own
	}
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);

	// A process may map its own uid and gid in the user namespace it
	// created (user_namespaces(7)): no help from the parent is needed,
	// which is what lets the parent stay suspended.
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
	if (setsid() < 0) {
		sandkit_fail(s, SANDKIT_STEP_SETSID);
	}
	// Killed when the spawning thread exits (the broker's locked spawner
	// thread). Should the broker die in the microseconds before this, the
	// renderer still ends: its socket hangs up.
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) {
		sandkit_fail(s, SANDKIT_STEP_PDEATHSIG);
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
	execve(s->path, s->argv, env);
	sandkit_fail(s, SANDKIT_STEP_EXEC);
	return 127;
}

#define SANDKIT_CHILD_STACK (64 << 10)

// sandkit_spawn starts s->path in new namespaces and returns its pid, or
// -1 with errno set when clone itself failed. The calling thread blocks
// until the child has exec'd or exited; s->step says which step failed.
static int sandkit_spawn(struct sandkit_spawn *s) {
	char *stack = malloc(SANDKIT_CHILD_STACK);
	if (stack == NULL) {
		return -1;
	}
	// Block every signal on this thread while the child shares it: a
	// signal delivered in the child before it reset the handlers would run
	// Go's handler on a thread the Go runtime does not know.
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	s->pidfd = -1;
	s->step = SANDKIT_STEP_NONE;
	s->err = 0;
	int pid = clone(sandkit_child, stack + SANDKIT_CHILD_STACK,
		CLONE_VM | CLONE_VFORK | CLONE_PIDFD | s->ns_flags | SIGCHLD, s, &s->pidfd);
	int saved = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	free(stack);
	errno = saved;
	return pid;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// vforkSpec is what spawnVfork starts: path with argv, no environment, in
// the namespaces ns, with log as stdout and stderr, sock as fd 3 and
// /dev/null as stdin.
type vforkSpec struct {
	path      string
	argv      []string
	ns        uintptr // CLONE_NEW* flags
	mapIDs    bool    // map the broker's uid and gid to 0 (user namespace)
	log, sock *os.File
}

// childStepError is a failure of the child between clone and exec.
type childStepError struct {
	step string
	err  error
}

func (e *childStepError) Error() string { return fmt.Sprintf("renderer child: %s: %v", e.step, e.err) }
func (e *childStepError) Unwrap() error { return e.err }

var childSteps = [...]string{"", "deny setgroups", "write uid_map", "write gid_map", "setsid", "set the parent-death signal", "install descriptors", "exec"}

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
// It returns the pid and a pidfd, and must be called from the spawner's
// locked thread (Pdeathsig).
func spawnVfork(s vforkSpec) (pid int, pidfd int, err error) {
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
	if s.mapIDs {
		cs.map_ids = 1
	}
	cs.uid, cs.gid = C.uint(os.Getuid()), C.uint(os.Getgid())
	// The descriptors stay open (and are not reused) until the call
	// returns, because the caller holds the files.
	cs.log_fd = C.int(s.log.Fd())
	cs.sock_fd = C.int(s.sock.Fd())
	r, cerr := C.sandkit_spawn(cs)
	if r < 0 {
		if errno, ok := cerr.(syscall.Errno); ok {
			return 0, -1, fmt.Errorf("clone: %w", errno)
		}
		return 0, -1, fmt.Errorf("clone: %v", cerr)
	}
	pid, pidfd = int(r), int(cs.pidfd)
	if cs.step != 0 {
		// The child exited before exec: reap it here.
		var info unix.Siginfo
		_ = unix.Waitid(unix.P_PIDFD, pidfd, &info, unix.WEXITED, nil)
		unix.Close(pidfd)
		step := "unknown step"
		if int(cs.step) < len(childSteps) {
			step = childSteps[cs.step]
		}
		return 0, -1, &childStepError{step: step, err: syscall.Errno(cs.err)}
	}
	return pid, pidfd, nil
}
