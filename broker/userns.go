package broker

/*
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static int sandkit_probe_child(void *arg) {
	(void)arg;
	_exit(0);
	return 0;
}

#define SANDKIT_PROBE_STACK (16 << 10)

// sandkit_probe_ns clones a child into new namespaces (flags) that exits at
// once, reaps it, and returns 0, or the errno clone failed with. The child
// shares the caller's memory (CLONE_VM) and the caller waits for its exit
// (CLONE_VFORK): nothing of the broker is copied. Every signal stays
// blocked in the child, which runs no handler: it only exits.
static int sandkit_probe_ns(int flags) {
	char *stack = malloc(SANDKIT_PROBE_STACK);
	if (stack == NULL) {
		return ENOMEM;
	}
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int pid = clone(sandkit_probe_child, stack + SANDKIT_PROBE_STACK,
		CLONE_VM | CLONE_VFORK | flags | SIGCHLD, NULL);
	int err = pid < 0 ? errno : 0;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (pid > 0) {
		int status;
		while (waitpid(pid, &status, __WALL) < 0 && errno == EINTR) {
		}
	}
	free(stack);
	return err;
}
*/
import "C"

import (
	"fmt"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// probeUserNamespace creates a user namespace the way a renderer's spawn
// does, in a child that exits at once, and explains a refusal. With mount
// set it also creates a mount namespace inside it, which takes
// CAP_SYS_ADMIN there: AppArmor's restriction of unprivileged user
// namespaces may let an unconfined program create one but deny it every
// capability in it, and a profile that allows the broker lifts both. The
// sysctls decide nothing: what the kernel does is the answer, and they
// only say why it refused.
func probeUserNamespace(mount bool) error {
	flags := unix.CLONE_NEWUSER
	name := "CLONE_NEWUSER"
	if mount {
		flags |= unix.CLONE_NEWNS
		name += "|CLONE_NEWNS"
	}
	if errno := C.sandkit_probe_ns(C.int(flags)); errno != 0 {
		return explainUserNSRefusal(name, syscall.Errno(errno), readSysctl)
	}
	return nil
}

func readSysctl(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// explainUserNSRefusal names the setting that most likely refused a user
// namespace and the exact change that allows it; docs/deploying.md has one
// section per environment. read returns a /proc file's content, or "" when
// it does not exist.
func explainUserNSRefusal(flags string, errno syscall.Errno, read func(string) string) error {
	var why string
	switch {
	case read("/proc/sys/user/max_user_namespaces") == "0":
		why = "user.max_user_namespaces is 0 (set it to a positive number: sudo sysctl user.max_user_namespaces=10000)"
	case errno == unix.ENOSPC:
		why = "the user.max_user_namespaces limit is reached, here or in an enclosing user namespace: a sandbox that allows no nested one, such as bwrap --disable-userns (drop that option), or a container whose user.max_user_namespaces is 0 (docker/podman run --sysctl user.max_user_namespaces=10000; or run the broker outside it)"
	case read("/proc/sys/kernel/unprivileged_userns_clone") == "0":
		why = "kernel.unprivileged_userns_clone is 0 (run: sudo sysctl kernel.unprivileged_userns_clone=1)"
	case read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
		why = "AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns=1): allow them for the broker binary with an AppArmor profile that grants \"userns,\" (see docs/deploying.md), or set the sysctl to 0 (sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0)"
	case seccompFiltered(read("/proc/self/status")) && (errno == unix.EPERM || errno == unix.EACCES || errno == unix.ENOSYS):
		why = "the broker runs under a seccomp filter that refuses namespaces: the default seccomp profile of Docker, Podman and containerd denies clone and unshare with namespace flags. " +
			"Run the container with a profile that allows them (docker or podman run --security-opt seccomp=/path/to/profile.json; " +
			"Kubernetes: securityContext.seccompProfile {type: Localhost, localhostProfile: profile.json}), see docs/deploying.md"
	default:
		why = "no sysctl explains it, and the broker runs under no seccomp filter: a security module (AppArmor, SELinux) may forbid user namespaces to this program; see docs/deploying.md"
	}
	return fmt.Errorf("cannot create a user namespace (clone %s: %w): %s", flags, errno, why)
}

// seccompFiltered reports whether status (/proc/self/status) says the
// process runs under a seccomp filter (Seccomp: 2).
func seccompFiltered(status string) bool {
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, "Seccomp:"); ok {
			return strings.TrimSpace(v) == "2"
		}
	}
	return false
}
