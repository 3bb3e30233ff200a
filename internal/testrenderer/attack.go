package testrenderer

/*
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <unistd.h>

static void sandkit_test_noop(int sig) { (void)sig; }

struct sandkit_test_flood {
	pid_t pid, tid;
	int sig;
	atomic_int sent, stop;
};

static void *sandkit_test_signaller(void *arg) {
	struct sandkit_test_flood *f = arg;
	while (!atomic_load(&f->stop)) {
		syscall(SYS_tgkill, f->pid, f->tid, f->sig);
		atomic_store(&f->sent, 1);
	}
	return NULL;
}

// sandkit_test_interrupted_ptrace has another thread send sig to this
// one in a loop and calls ptrace(PTRACE_TRACEME), which the sandbox
// disallows, once. With own_handler it first installs a handler for sig
// without SA_RESTART, so that a signal ending the syscall's wait returns
// EINTR instead of restarting it; otherwise sig keeps the Go runtime's
// handler. It returns the errno of the call (0 for success), or minus the
// errno of a failed setup step.
static int sandkit_test_interrupted_ptrace(int sig, int own_handler) {
	if (own_handler) {
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = sandkit_test_noop;
		sa.sa_flags = SA_ONSTACK; // the Go runtime's signal stack; no SA_RESTART
		sigemptyset(&sa.sa_mask);
		if (sigaction(sig, &sa, NULL) != 0) {
			return -errno;
		}
	}
	struct sandkit_test_flood f = {.pid = getpid(), .tid = (pid_t)syscall(SYS_gettid), .sig = sig};
	pthread_t t;
	int err = pthread_create(&t, NULL, sandkit_test_signaller, &f);
	if (err != 0) {
		return -err;
	}
	// Let the flood start before the syscall.
	for (int i = 0; i < 1000 && !atomic_load(&f.sent); i++) {
		usleep(100);
	}
	long r = syscall(SYS_ptrace, PTRACE_TRACEME, 0, 0, 0);
	int result = r == -1 ? errno : 0;
	atomic_store(&f.stop, 1);
	pthread_join(t, NULL);
	return result;
}
*/
import "C"

import (
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// interruptedPtrace runs sandkit_test_interrupted_ptrace on a thread of
// its own and answers the errno the renderer got: it answers only if the
// monitor missed the attempt. handler is "own" (a SIGUSR2 handler without
// SA_RESTART) or "runtime" (SIGURG, the Go runtime's preemption signal,
// whose handler restarts syscalls).
func interruptedPtrace(handler string) string {
	// Locked, and never unlocked: the signaller aims at this very thread.
	runtime.LockOSThread()
	sig, own := C.int(unix.SIGURG), C.int(0)
	if handler == "own" {
		sig, own = C.int(unix.SIGUSR2), 1
	}
	n := C.sandkit_test_interrupted_ptrace(sig, own)
	if n < 0 {
		return "setup: " + unix.ErrnoName(syscall.Errno(-n))
	}
	if n == 0 {
		return "ptrace: ok"
	}
	return "ptrace: " + unix.ErrnoName(syscall.Errno(n))
}
