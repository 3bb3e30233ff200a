// The trusted launcher of a foreign program: the code that locks down a
// program that knows nothing of sandkit, between clone and exec.
//
// It runs in the broker's child (sandkit_child in vfork.go) before exec,
// when the process holds nothing untrusted: no input has been read, and
// every descriptor, path, limit and filter was prepared by the broker.
// The child shares the broker's memory (CLONE_VM) until exec, so this
// code only makes system calls, on its own stack: no malloc, no stdio.
//
// The order matters:
//   1. the empty root, with the binds and tmpfs mounts (needs
//      CAP_SYS_ADMIN in the user namespace); the sources are opened
//      here, in the child's mount namespace, as the renderer's id;
//      the directory of the tmpfs that will hold the program's output
//      file, if any, is sent to the broker on its socket;
//   2. the hostname, and the input file: the input descriptor's bytes
//      copied into a new file in a tmpfs (sendfile: the launcher never
//      reads them itself);
//   3. the descriptors: the program's at 0..nfds-1, the listener socket
//      at sock_num, every other one closed;
//   4. the program's descriptor at exe_num, opened in the new root;
//   5. rlimits, RLIMIT_NOFILE last-but-not-least below exe_num and
//      sock_num, so that the program can never again hold a descriptor
//      with either number (see the seccomp rule for execveat);
//   6. capabilities: bounding and ambient sets, securebits (uid 0 never
//      regains capabilities at exec), no_new_privs, then the sets;
//   7. Landlock: read on read-only binds, read and execute on
//      executable binds and the program, read and write on tmpfs mounts;
//   8. seccomp: the program's filter plus the launcher's one exec; the
//      listener is sent to the broker and closed;
//   9. execveat of exe_num.
// After step 8 only sendmsg, close, execveat and exit_group run, all
// allowed by the filter: a notification here would wait for a monitor
// that does not have the listener yet.

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "foreign_launch.h"

#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#define SYS_landlock_add_rule 445
#define SYS_landlock_restrict_self 446
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
#define SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (1UL << 5)
#endif

#define LAUNCH_PATH_MAX 4096

// Landlock rights that only a directory can be given.
#define LL_FILE_RIGHTS ((1ULL << 0) | (1ULL << 1) | (1ULL << 2) | (1ULL << 14) | (1ULL << 15))

static int fail(struct sandkit_launch *l, int step, int index) {
	l->step = step;
	l->index = index;
	return -1;
}

// cat appends s to buf (n bytes) at *len; ENAMETOOLONG if it does not fit.
static int cat(char *buf, size_t n, size_t *len, const char *s) {
	size_t k = strlen(s);
	if (*len + k + 1 > n) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(buf + *len, s, k + 1);
	*len += k;
	return 0;
}

// utoa writes v in decimal into buf (at least 21 bytes).
static void utoa(char *buf, uint64_t v) {
	char digits[21];
	int n = 0;
	do {
		digits[n++] = '0' + v % 10;
		v /= 10;
	} while (v != 0);
	while (n > 0) {
		*buf++ = digits[--n];
	}
	*buf = 0;
}

// mkdirs makes path and its parents (mode 0755) in place: path is a
// scratch copy it modifies and restores.
static int mkdirs(char *path) {
	for (char *c = path + 1;; c++) {
		if (*c == '/' || *c == 0) {
			char saved = *c;
			*c = 0;
			int r = mkdir(path, 0755);
			*c = saved;
			if (r != 0 && errno != EEXIST) {
				return -1;
			}
			if (saved == 0) {
				return 0;
			}
		}
	}
}

// bind_mount mounts the O_PATH descriptor src at dst, read-only,
// nosuid, nodev unless dev, and noexec unless exec; the atime flags the
// kernel does not let a user namespace change are kept.
static int bind_mount(int src, char *dst, int exec, int dev) {
	struct stat st;
	if (fstat(src, &st) != 0) {
		return -1;
	}
	if (S_ISDIR(st.st_mode)) {
		if (mkdirs(dst) != 0) {
			return -1;
		}
	} else {
		char *slash = strrchr(dst, '/');
		*slash = 0;
		int r = mkdirs(dst);
		*slash = '/';
		if (r != 0) {
			return -1;
		}
		int f = open(dst, O_CREAT | O_WRONLY | O_CLOEXEC, 0444);
		if (f < 0) {
			return -1;
		}
		close(f);
	}
	char magic[48] = "/proc/self/fd/";
	utoa(magic + strlen(magic), (uint64_t)src);
	if (mount(magic, dst, NULL, MS_BIND | MS_REC, NULL) != 0) {
		return -1;
	}
	struct statvfs sv;
	if (statvfs(dst, &sv) != 0) {
		return -1;
	}
	unsigned long flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID;
	if (!dev) flags |= MS_NODEV;
	if (!exec) flags |= MS_NOEXEC;
	if (sv.f_flag & ST_NOATIME) flags |= MS_NOATIME;
	if (sv.f_flag & ST_NODIRATIME) flags |= MS_NODIRATIME;
	if (sv.f_flag & ST_RELATIME) flags |= MS_RELATIME;
	return mount(NULL, dst, NULL, flags, NULL);
}

// mount_tmpfs mounts a private tmpfs of m->size bytes and m->inodes files at
// dst, writable by the program (uid 0 of its user namespace) only.
static int mount_tmpfs(const struct sandkit_mount *m, char *dst) {
	if (mkdirs(dst) != 0) {
		return -1;
	}
	char opts[96];
	size_t len = 0;
	char num[21];
	utoa(num, m->size);
	cat(opts, sizeof opts, &len, "size=");
	cat(opts, sizeof opts, &len, num);
	utoa(num, m->inodes);
	cat(opts, sizeof opts, &len, ",nr_inodes=");
	cat(opts, sizeof opts, &len, num);
	if (cat(opts, sizeof opts, &len, ",mode=0700") != 0) {
		return -1;
	}
	return mount("sandkit-tmpfs", dst, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts);
}

// send_fd sends fd on sock, one byte with one descriptor.
static int send_fd(int sock, int fd) {
	char byte = 0;
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	memset(&u, 0, sizeof u);
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof fd);
	ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
	if (n != 1) {
		if (n >= 0) errno = EIO;
		return -1;
	}
	return 0;
}

// send_dir sends an O_PATH descriptor of the directory dir (a tmpfs
// mount just made) on sock: the broker keeps the mount through it after
// the program's namespace is gone.
static int send_dir(int sock, const char *dir) {
	int fd = open(dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		return -1;
	}
	int r = send_fd(sock, fd);
	int saved = errno;
	close(fd);
	errno = saved;
	return r;
}

// copy_file copies the broker's descriptor f->fd, from offset 0, into a
// new read-only file at f->path in the new root, making its parent
// directories. The bytes move inside the kernel (sendfile): the launcher
// reads none of them. The tmpfs's size bounds the copy (ENOSPC).
static int copy_file(const struct sandkit_file *f) {
	char dir[LAUNCH_PATH_MAX];
	size_t len = 0;
	if (cat(dir, sizeof dir, &len, f->path) != 0) {
		return -1;
	}
	char *slash = strrchr(dir, '/');
	if (slash != NULL && slash != dir) {
		*slash = 0;
		if (mkdirs(dir) != 0) {
			return -1;
		}
	}
	int out = open(f->path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0400);
	if (out < 0) {
		return -1;
	}
	off_t off = 0;
	for (;;) {
		ssize_t n = sendfile(out, f->fd, &off, 1 << 30);
		if (n == 0) {
			break;
		}
		if (n < 0 && errno != EINTR) {
			int saved = errno;
			close(out);
			errno = saved;
			return -1;
		}
	}
	return close(out);
}

// empty_root replaces the root with a small read-only tmpfs holding only
// the mounts, then detaches the host's root, as a Go renderer's
// constructor does (renderer/early_lockdown.c).
static int empty_root(struct sandkit_launch *l) {
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
		return fail(l, SANDKIT_LAUNCH_ROOT, -1);
	}
	const char *bases[] = {"/tmp", "/mnt", "/run", "/dev"}, *base = NULL;
	for (size_t i = 0; i < sizeof bases / sizeof bases[0]; i++) {
		struct stat st;
		if (lstat(bases[i], &st) == 0 && S_ISDIR(st.st_mode)) {
			base = bases[i];
			break;
		}
	}
	if (base == NULL) {
		errno = ENOENT;
		return fail(l, SANDKIT_LAUNCH_ROOT, -1);
	}
	// Hold the sources open before the new root hides them: one may
	// well live under base. Opened here, in this mount namespace: a
	// bind mount's source must be a mount of the caller's namespace.
	for (int i = 0; i < l->nmounts; i++) {
		struct sandkit_mount *m = &l->mounts[i];
		if (m->kind == SANDKIT_MOUNT_TMPFS) {
			continue;
		}
		// A device must be exactly the character device the broker
		// named, not a symlink or another node at its path.
		int nofollow = m->kind == SANDKIT_MOUNT_DEVICE ? O_NOFOLLOW : 0;
		if ((m->src = open(m->path, O_PATH | O_CLOEXEC | nofollow)) < 0) {
			return fail(l, SANDKIT_LAUNCH_MOUNT, i);
		}
		struct stat st;
		if (m->kind == SANDKIT_MOUNT_DEVICE && (fstat(m->src, &st) != 0 || !S_ISCHR(st.st_mode) || st.st_rdev != m->rdev)) {
			errno = ENODEV;
			return fail(l, SANDKIT_LAUNCH_MOUNT, i);
		}
	}
	const unsigned long flags = MS_NOSUID | MS_NODEV | MS_NOEXEC;
	if (mount("sandkit", base, "tmpfs", flags, "size=64k,nr_inodes=256,mode=0755") != 0) {
		return fail(l, SANDKIT_LAUNCH_ROOT, -1);
	}
	char dst[LAUNCH_PATH_MAX];
	for (int i = 0; i < l->nmounts; i++) {
		const struct sandkit_mount *m = &l->mounts[i];
		size_t len = 0;
		if (cat(dst, sizeof dst, &len, base) != 0 || cat(dst, sizeof dst, &len, m->path) != 0) {
			return fail(l, SANDKIT_LAUNCH_MOUNT, i);
		}
		int r = m->kind == SANDKIT_MOUNT_TMPFS ? mount_tmpfs(m, dst) :
			bind_mount(m->src, dst, m->kind == SANDKIT_MOUNT_EXECUTABLE, m->kind == SANDKIT_MOUNT_DEVICE);
		if (r != 0) {
			return fail(l, SANDKIT_LAUNCH_MOUNT, i);
		}
		if (i == l->send_mount && send_dir(l->sock, dst) != 0) {
			return fail(l, SANDKIT_LAUNCH_SEND_MOUNT, i);
		}
	}
	// pivot_root(".", ".") stacks the old root under the new one;
	// detaching "." removes the host's root from this namespace.
	if (chdir(base) != 0 || syscall(SYS_pivot_root, ".", ".") != 0 || umount2(".", MNT_DETACH) != 0 || chdir("/") != 0 ||
		mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | flags, NULL) != 0) {
		return fail(l, SANDKIT_LAUNCH_ROOT, -1);
	}
	return 0;
}

// install_fds puts the program's descriptors at 0..nfds-1 and the
// listener socket at sock_num (close-on-exec), and closes every other
// descriptor: the child's table is a copy of the broker's.
static int install_fds(struct sandkit_launch *l) {
	// Move the sources above every target first, so that installing one
	// never overwrites another.
	int high = l->sock_num + 1;
	int src[64];
	if (l->nfds > 64) {
		errno = EINVAL;
		return fail(l, SANDKIT_LAUNCH_FDS, -1);
	}
	for (int i = 0; i < l->nfds; i++) {
		src[i] = -1;
		if (l->fds[i] >= 0 && (src[i] = fcntl(l->fds[i], F_DUPFD_CLOEXEC, high)) < 0) {
			return fail(l, SANDKIT_LAUNCH_FDS, i);
		}
	}
	int sock = fcntl(l->sock, F_DUPFD_CLOEXEC, high);
	if (sock < 0 || dup3(sock, l->sock_num, O_CLOEXEC) < 0) {
		return fail(l, SANDKIT_LAUNCH_FDS, -1);
	}
	for (int i = 0; i < l->nfds; i++) {
		if (src[i] >= 0 ? dup2(src[i], i) < 0 : close(i) != 0 && errno != EBADF) {
			return fail(l, SANDKIT_LAUNCH_FDS, i);
		}
	}
	if (syscall(SYS_close_range, l->nfds, l->sock_num - 1, 0) != 0 ||
		syscall(SYS_close_range, l->sock_num + 1, ~0U, 0) != 0) {
		return fail(l, SANDKIT_LAUNCH_FDS, -1);
	}
	return 0;
}

static int drop_caps(struct sandkit_launch *l) {
	for (int cap = 0;; cap++) {
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
			if (errno == EINVAL && cap > 0) {
				break; // past the kernel's last capability
			}
			return fail(l, SANDKIT_LAUNCH_CAPS, -1);
		}
	}
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) {
		return fail(l, SANDKIT_LAUNCH_CAPS, -1);
	}
	// uid 0 of the user namespace must not regain capabilities at exec.
	unsigned long bits = SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP |
		SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED;
	if (prctl(PR_SET_SECUREBITS, bits, 0, 0, 0) != 0) {
		return fail(l, SANDKIT_LAUNCH_CAPS, -1);
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
		return fail(l, SANDKIT_LAUNCH_NO_NEW_PRIVS, -1);
	}
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct data[2];
	memset(data, 0, sizeof data);
	if (syscall(SYS_capset, &hdr, data) != 0) {
		return fail(l, SANDKIT_LAUNCH_CAPS, -1);
	}
	return 0;
}

struct ll_ruleset_attr {
	uint64_t handled_access_fs, handled_access_net, scoped;
};

struct ll_path_beneath {
	uint64_t allowed_access;
	int32_t parent_fd;
} __attribute__((packed));

// add_rule grants rights beneath path, in the new root.
static int add_rule(int rs, const char *path, uint64_t rights) {
	int fd = open(path, O_PATH | O_CLOEXEC);
	if (fd < 0) {
		return -1;
	}
	struct stat st;
	int r = fstat(fd, &st);
	struct ll_path_beneath pb = {.allowed_access = rights, .parent_fd = fd};
	if (r == 0 && !S_ISDIR(st.st_mode)) {
		pb.allowed_access &= LL_FILE_RIGHTS;
	}
	if (r == 0 && pb.allowed_access != 0) {
		r = syscall(SYS_landlock_add_rule, rs, 1 /* LANDLOCK_RULE_PATH_BENEATH */, &pb, 0);
	}
	int saved = errno;
	close(fd);
	errno = saved;
	return r;
}

static int landlock(struct sandkit_launch *l) {
	struct ll_ruleset_attr attr = {l->handled_fs, l->handled_net, l->scoped};
	int rs = syscall(SYS_landlock_create_ruleset, &attr, sizeof attr, 0);
	if (rs < 0) {
		return fail(l, SANDKIT_LAUNCH_LANDLOCK, -1);
	}
	int r = 0;
	for (int i = 0; i < l->nmounts && l->handled_fs != 0 && r == 0; i++) {
		const struct sandkit_mount *m = &l->mounts[i];
		uint64_t rights = m->kind == SANDKIT_MOUNT_TMPFS ? l->write_rights :
			m->kind == SANDKIT_MOUNT_EXECUTABLE ? l->exec_rights : l->read_rights;
		if (add_rule(rs, m->path, rights) != 0) {
			r = fail(l, SANDKIT_LAUNCH_LANDLOCK_RULE, i);
		}
	}
	if (r == 0 && syscall(SYS_landlock_restrict_self, rs, 0) != 0) {
		r = fail(l, SANDKIT_LAUNCH_LANDLOCK, -1);
	}
	int saved = errno;
	close(rs);
	errno = saved;
	return r;
}

// install_seccomp installs the filter and hands its listener to the broker.
static int install_seccomp(struct sandkit_launch *l) {
	struct sock_fprog prog = {.len = l->filter_len, .filter = (struct sock_filter *)l->filter};
	unsigned long flags = l->notify ? SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV : 0;
	long listener = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
	if (listener < 0) {
		return fail(l, SANDKIT_LAUNCH_SECCOMP, -1);
	}
	if (!l->notify) {
		return 0;
	}
	// From here on, only what the filter allows: sendmsg, close,
	// execveat of the program, exit_group.
	int fd = (int)listener;
	int r = send_fd(l->sock_num, fd);
	int saved = errno;
	close(fd);
	errno = saved;
	return r != 0 ? fail(l, SANDKIT_LAUNCH_SEND_LISTENER, -1) : 0;
}

void sandkit_launch(struct sandkit_launch *l) {
	l->step = SANDKIT_LAUNCH_NONE;
	l->index = -1;
	if (l->root && empty_root(l) != 0) {
		return;
	}
	if (l->hostname && sethostname("sandkit", strlen("sandkit")) != 0) {
		fail(l, SANDKIT_LAUNCH_HOSTNAME, -1);
		return;
	}
	for (int i = 0; i < l->nfiles; i++) {
		if (copy_file(&l->files[i]) != 0) {
			fail(l, SANDKIT_LAUNCH_INPUT, -1);
			return;
		}
	}
	if (install_fds(l) != 0) {
		return;
	}
	int exe = open(l->prog, O_PATH | O_CLOEXEC);
	if (exe < 0 || dup3(exe, l->exe_num, O_CLOEXEC) < 0) {
		fail(l, SANDKIT_LAUNCH_OPEN_PROGRAM, -1);
		return;
	}
	close(exe);
	for (int i = 0; i < l->nlimits; i++) {
		struct rlimit64 rl = {.rlim_cur = l->limits[i].value, .rlim_max = l->limits[i].value};
		if (syscall(SYS_prlimit64, 0, l->limits[i].resource, &rl, NULL) != 0) {
			fail(l, SANDKIT_LAUNCH_RLIMITS, i);
			return;
		}
	}
	if (drop_caps(l) != 0) {
		return;
	}
	if ((l->handled_fs | l->handled_net | l->scoped) != 0 && landlock(l) != 0) {
		return;
	}
	if (l->filter != NULL && install_seccomp(l) != 0) {
		return;
	}
	syscall(SYS_execveat, l->exe_num, "", l->argv, l->envp, AT_EMPTY_PATH);
	fail(l, SANDKIT_LAUNCH_EXEC, -1);
}
