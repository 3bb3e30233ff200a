package testrenderer

/*
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

static int testrenderer_exit_at_once(void *arg) {
	(void)arg;
	syscall(SYS_exit, 0); // this task only, never exit_group
	return 0;
}

static int testrenderer_ptid, testrenderer_ctid;

// testrenderer_clone starts a task with exactly flags that exits at once,
// and returns its tid or -errno. Its stack is never freed: nothing here
// waits for the task's exit, so it may still be on it after clone returns
// (64 KiB per call, in a renderer that makes a few). Every signal is
// blocked while the task may run: it runs no Go handler.
static long testrenderer_clone(unsigned long flags) {
	enum { STACK = 64 << 10 };
	char *stack = malloc(STACK);
	if (stack == NULL) {
		return -ENOMEM;
	}
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int tid = clone(testrenderer_exit_at_once, stack + STACK, (int)flags, NULL,
		&testrenderer_ptid, NULL, &testrenderer_ctid);
	int err = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return tid < 0 ? -err : tid;
}

static void *testrenderer_thread(void *arg) { return arg; }

// testrenderer_pthread starts a thread the way C libraries do and waits
// for it; it returns 0 or the error number.
static int testrenderer_pthread(void) {
	pthread_t t;
	int err = pthread_create(&t, NULL, testrenderer_thread, NULL);
	if (err != 0) {
		return err;
	}
	return pthread_join(t, NULL);
}
*/
import "C"

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// cloneTask calls clone with exactly flags, for a task that exits at once,
// and reports "ok" or the errno name: a compromised renderer's attempt at
// a task that looks like a thread and is not one.
func cloneTask(flags uint64) string {
	if r := C.testrenderer_clone(C.ulong(flags)); r < 0 {
		return unix.ErrnoName(syscall.Errno(-r))
	}
	return "ok"
}

// pthread starts and joins a thread through glibc's pthread_create, as
// cgo and C libraries do, and reports "ok" or the errno name.
func pthread() string {
	if err := C.testrenderer_pthread(); err != 0 {
		return unix.ErrnoName(syscall.Errno(err))
	}
	return "ok"
}
