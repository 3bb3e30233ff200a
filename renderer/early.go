package renderer

/*
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/securebits.h>

#include "early_lockdown.h"

#ifndef SYS_close_range
#define SYS_close_range 436 // the same number on every architecture
#endif

// Per-thread credential state (the capability bounding and ambient sets,
// securebits, no_new_privs) is inherited by every thread created later. A
// renderer sets it here, in an ELF constructor, while the process still has
// exactly one thread: before the Go runtime starts. Doing the same from Go
// means one all-threads broadcast (psx) per call, over 40 of them, which
// measured 3.5 ms of a 5 ms lockdown. The rest of the per-thread lockdown
// follows in the same constructor, once these steps hold (see
// early_lockdown.c): the empty root, which needs CAP_SYS_ADMIN in the
// renderer's user namespace, then the capability sets and Landlock.
//
// The constructor also sets the stack size of threads started later
// (see the last step), which has to happen before the runtime starts any.
//
// It acts only in a process started as a renderer (argv[1] carries the
// marker); in any other program importing this package it does nothing.
int sandkit_early_step;  // 0: not a renderer; 7: every step done; else the failed step
int sandkit_early_errno;
int sandkit_early_failed; // the first step that failed, 0 if none

static void fail(int step, int err) {
	if (sandkit_early_failed == 0) {
		sandkit_early_failed = step;
		sandkit_early_errno = err;
	}
}
int sandkit_early_fds_closed; // 1 once every descriptor above the socket is closed
int sandkit_early_fds_errno;

#define SANDKIT_FLAG "--sandkit-renderer="
#define SANDKIT_THREAD_STACK (256 << 10)
#define SANDKIT_SOCKET_FD 3 // the broker socket; launch.SocketFD

__attribute__((constructor)) static void sandkit_early(int argc, char **argv, char **envp) {
	(void)envp;
	if (argc < 2 || strncmp(argv[1], SANDKIT_FLAG, strlen(SANDKIT_FLAG)) != 0) {
		return;
	}
	// Close every descriptor above the broker socket while the runtime
	// has opened none of its own yet, so that whatever is open later is
	// the runtime's or the renderer's. The broker passes nothing else, but
	// a descriptor its own parent left without close-on-exec is inherited
	// by every renderer; done later, from Go, a descriptor of the kinds the
	// runtime's poller uses (epoll, eventfd) could not be told apart from
	// the runtime's own.
	if (syscall(SYS_close_range, SANDKIT_SOCKET_FD + 1, ~0U, 0) == 0) {
		sandkit_early_fds_closed = 1;
	} else {
		sandkit_early_fds_errno = errno;
	}
	// Every step is tried, each whatever happened before it, and the
	// first failure is kept: a credential step the policy allows
	// degraded must not cost no_new_privs, which Landlock needs, or the
	// lockdown below.
	int step;
	step = 1;
	for (int cap = 0; ; cap++) {
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
			if (errno == EINVAL && cap > 0) {
				break; // past the kernel's last capability
			}
			fail(step, errno);
			break;
		}
	}
	step = 2;
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) {
		fail(step, errno);
	}
	step = 3;
	// uid 0 inside the namespace must never regain capabilities.
	unsigned long bits = SECBIT_NOROOT | SECBIT_NOROOT_LOCKED |
		SECBIT_NO_SETUID_FIXUP | SECBIT_NO_SETUID_FIXUP_LOCKED |
		SECBIT_KEEP_CAPS_LOCKED;
	if (prctl(PR_SET_SECUREBITS, bits, 0, 0, 0) != 0) {
		fail(step, errno);
	}
	step = 4;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
		fail(step, errno);
	}
	step = 5;
	// A thread's stack is a private writable mapping, which RLIMIT_DATA
	// (the renderer's memory limit) counts in full whether touched or not:
	// glibc's default is RLIMIT_STACK, 8 MiB, per thread. Goroutines run
	// on stacks the Go runtime allocates; a thread's own stack only holds
	// the runtime's system stack and the few C calls of the lockdown, for
	// which SANDKIT_THREAD_STACK is ample. Without this, every thread the
	// runtime starts takes 8 MiB of the limit, and one started under
	// memory pressure fails in pthread_create instead of the allocation
	// that caused the pressure.
	pthread_attr_t attr;
	int err = pthread_attr_init(&attr);
	if (err == 0) {
		err = pthread_attr_setstacksize(&attr, SANDKIT_THREAD_STACK);
		if (err == 0) {
			err = pthread_setattr_default_np(&attr);
		}
		pthread_attr_destroy(&attr);
	}
	if (err != 0) {
		fail(step, err);
	}
	step = 6;
	// glibc gives each thread that calls malloc an arena of its own, up to
	// eight per core, and reserves 64 MiB of address space for each: five
	// threads of an idle renderer made 320 MiB. The renderer's memory limit
	// includes RLIMIT_AS, which counts those reservations; one arena is
	// plenty for the little C code a renderer runs (the lockdown, and a
	// library such as MuPDF called from one goroutine at a time).
	if (mallopt(M_ARENA_MAX, 1) != 1) {
		fail(step, EINVAL); // mallopt sets no errno
	}
	sandkit_early_step = sandkit_early_failed ? sandkit_early_failed : 7;
	// The lockdown proper runs whatever happened above: a failed step
	// is reported (sandkit_early_step), and the Go side refuses to start
	// unless the policy allows that layer degraded; the layers below
	// (empty root, capabilities, Landlock) must not be lost with it.
	sandkit_early_lockdown(argv[1]);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// The constructor keeps the descriptors up to SANDKIT_SOCKET_FD open, which
// must be the broker socket: this fails to compile if the two disagree.
const _ = uint(socketFD-C.SANDKIT_SOCKET_FD) + uint(C.SANDKIT_SOCKET_FD-socketFD)

// earlyFDsErr reports whether the constructor closed every descriptor
// above the broker socket.
func earlyFDsErr() error {
	switch {
	case C.sandkit_early_fds_closed == 1:
		return nil
	case C.sandkit_early_step == 0:
		return errors.New("early lockdown not run (argv[1] is not a renderer marker)")
	}
	return fmt.Errorf("early lockdown: close inherited descriptors: %w", syscall.Errno(C.sandkit_early_fds_errno))
}

// earlyErr reports whether the constructor ran to the end. The names match
// the constructor's steps.
func earlyErr() error {
	steps := []string{"not run (argv[1] is not a renderer marker)", "drop the bounding set", "clear ambient capabilities", "lock securebits", "set no_new_privs", "set the thread stack size", "limit malloc arenas"}
	step := int(C.sandkit_early_step)
	if step == len(steps) {
		return nil
	}
	if step < 0 || step >= len(steps) {
		return fmt.Errorf("early lockdown: unknown step %d", step)
	}
	if step == 0 {
		return fmt.Errorf("early lockdown %s", steps[0])
	}
	return fmt.Errorf("early lockdown step %d (%s): %w", step, steps[step], syscall.Errno(C.sandkit_early_errno))
}

// earlyLockdownErr reports whether the constructor's lockdown ran, from a
// well-formed spec, while the process had one thread: the condition under
// which what it set holds on every thread.
//
// A failed credential step (earlyErr) is not this: the constructor runs
// the lockdown all the same, and the capability and no_new_privs layers
// report that step, which the policy may allow degraded.
// earlyStepErr is earlyErr if the step that failed is one of steps.
func earlyStepErr(steps ...int) error {
	for _, st := range steps {
		if int(C.sandkit_early_step) == st {
			return earlyErr()
		}
	}
	return nil
}

func earlyLockdownErr() error {
	if C.sandkit_early_step == 0 {
		return earlyErr()
	}
	if err := earlyStepErr(5, 6); err != nil {
		return err // not a layer: nothing to degrade
	}
	switch {
	case C.sandkit_lockdown_ran != 1:
		return errors.New("early lockdown did not run")
	case C.sandkit_spec_errno != 0:
		return fmt.Errorf("early lockdown: spec in argv[1]: %w", syscall.Errno(C.sandkit_spec_errno))
	case C.sandkit_proc_errno != 0:
		return fmt.Errorf("early lockdown: open /proc/self: %w", syscall.Errno(C.sandkit_proc_errno))
	case C.sandkit_threads != 1:
		return fmt.Errorf("early lockdown: the process had %d threads, not 1", int(C.sandkit_threads))
	}
	return nil
}

// earlyRootErr reports whether the constructor made the empty root.
func earlyRootErr() error {
	if C.sandkit_root_errno == 0 {
		return nil
	}
	return fmt.Errorf("%s: %w", C.GoString(&C.sandkit_root_what[0]), syscall.Errno(C.sandkit_root_errno))
}

// earlyHostnameErr reports whether the constructor set the hostname.
func earlyHostnameErr() error {
	if C.sandkit_hostname_errno == 0 {
		return nil
	}
	return fmt.Errorf("sethostname: %w", syscall.Errno(C.sandkit_hostname_errno))
}

// earlyCapsErr reports whether the constructor emptied the capability sets.
func earlyCapsErr() error {
	if C.sandkit_caps_errno == 0 {
		return nil
	}
	return fmt.Errorf("capset: %w", syscall.Errno(C.sandkit_caps_errno))
}

// earlyLandlockErr reports whether the constructor restricted the process
// with Landlock.
func earlyLandlockErr() error {
	if C.sandkit_landlock_errno == 0 {
		return nil
	}
	return fmt.Errorf("landlock: %s: %w", C.GoString(&C.sandkit_landlock_what[0]), syscall.Errno(C.sandkit_landlock_errno))
}

// earlyProc is the renderer's /proc/self/status and /proc/self/fd, which
// the constructor opened from the procfs the renderer started with, before
// the empty root hid it. The renderer mounts no procfs of its own (the
// kernel refuses one inside an outer sandbox whose /proc is partly
// covered); these two are all it reads there, and it closes them before it
// reports ready.
type earlyProc struct {
	status, fdDir *os.File
	openErr       error
}

// takeEarlyProc returns the constructor's /proc/self files.
func takeEarlyProc() *earlyProc {
	if C.sandkit_proc_status_fd < 0 || C.sandkit_proc_fd_dir < 0 {
		for _, fd := range []C.int{C.sandkit_proc_status_fd, C.sandkit_proc_fd_dir} {
			if fd >= 0 {
				syscall.Close(int(fd))
			}
		}
		err := errors.New("early lockdown did not run")
		if C.sandkit_proc_errno != 0 {
			err = fmt.Errorf("open /proc/self: %w", syscall.Errno(C.sandkit_proc_errno))
		}
		return &earlyProc{openErr: err}
	}
	return &earlyProc{
		status: os.NewFile(uintptr(C.sandkit_proc_status_fd), "/proc/self/status"),
		fdDir:  os.NewFile(uintptr(C.sandkit_proc_fd_dir), "/proc/self/fd"),
	}
}

func (p *earlyProc) err() error { return p.openErr }

// Close closes both files.
func (p *earlyProc) Close() {
	if p.openErr == nil {
		p.status.Close()
		p.fdDir.Close()
	}
}

// readlinkAt reads the symbolic link name in the directory dirfd.
func readlinkAt(dirfd int, name string) (string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < len(buf) {
			return string(buf[:n]), nil
		}
		buf = make([]byte, 2*len(buf))
	}
}
