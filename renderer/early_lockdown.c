// The part of a renderer's lockdown that must happen while the process has
// one thread: the empty root (which needs CAP_SYS_ADMIN), the hostname, the
// capability sets and Landlock. Capabilities and Landlock domains are
// per-thread and inherited by every thread created later; done here, before
// the Go runtime starts its threads, they hold on every thread without an
// all-threads broadcast, and so without psx, which finds threads through
// /proc/<pid>/task: that needs a procfs of the renderer's own pid
// namespace, which the kernel refuses to mount inside an outer sandbox
// whose /proc is partly covered (every container runtime, bwrap, Flatpak).
//
// sandkit_early_lockdown records the outcome of each part in the globals
// below; the Go side (lockdown.go) turns them into the layer report and
// refuses the start where a layer the policy requires did not hold. Each
// part is attempted even when an earlier one failed: the renderer exits
// anyway unless the failed layer may be degraded, and a later layer in force
// is never less safe.
//
// The spec (see lockdownplan.EarlySpec) is the end of argv[1], after the
// last '~': "FLAGS:FS:NET:SCOPED[:PATH...]" with FLAGS a subset of "mhl"
// (empty root, hostname, Landlock), FS, NET and SCOPED the Landlock
// ruleset's handled rights in hex, and each read-only path hex-encoded.

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "early_lockdown.h"

#ifndef SYS_landlock_create_ruleset // the same numbers on every architecture
#define SYS_landlock_create_ruleset 444
#define SYS_landlock_add_rule 445
#define SYS_landlock_restrict_self 446
#endif

int sandkit_lockdown_ran;
int sandkit_spec_errno;
int sandkit_proc_errno;
int sandkit_proc_status_fd = -1;
int sandkit_proc_fd_dir = -1;
int sandkit_threads;
int sandkit_root_errno;
char sandkit_root_what[SANDKIT_WHAT_LEN];
int sandkit_hostname_errno;
int sandkit_caps_errno;
int sandkit_landlock_errno;
char sandkit_landlock_what[SANDKIT_WHAT_LEN];

struct sandkit_spec {
	int root, hostname, landlock;
	uint64_t fs, net, scoped;
	int npaths;
	char **paths;
};

static int unhex(char c) {
	if (c >= '0' && c <= '9') return c - '0';
	if (c >= 'a' && c <= 'f') return c - 'a' + 10;
	return -1;
}

// parse_spec splits the spec in place. It returns 0 or EINVAL.
static int parse_spec(char *s, struct sandkit_spec *sp) {
	memset(sp, 0, sizeof(*sp));
	int fields = 1;
	for (char *c = s; *c; c++) {
		fields += *c == ':';
	}
	if (fields < 4) {
		return EINVAL;
	}
	sp->paths = calloc(fields - 4 + 1, sizeof(char *));
	if (sp->paths == NULL) {
		return ENOMEM;
	}
	char *field = s;
	for (int i = 0; field != NULL; i++) {
		char *next = strchr(field, ':');
		if (next != NULL) {
			*next++ = 0;
		}
		if (i == 0) {
			for (char *c = field; *c; c++) {
				switch (*c) {
				case 'm': sp->root = 1; break;
				case 'h': sp->hostname = 1; break;
				case 'l': sp->landlock = 1; break;
				default: return EINVAL;
				}
			}
		} else if (i <= 3) {
			char *end;
			errno = 0;
			uint64_t v = strtoull(field, &end, 16);
			if (errno != 0 || end == field || *end != 0) {
				return EINVAL;
			}
			*(i == 1 ? &sp->fs : i == 2 ? &sp->net : &sp->scoped) = v;
		} else {
			size_t n = strlen(field);
			if (n == 0 || n % 2 != 0) {
				return EINVAL;
			}
			// Decoded in place: the path is half as long as its hex.
			for (size_t j = 0; j < n / 2; j++) {
				int hi = unhex(field[2 * j]), lo = unhex(field[2 * j + 1]);
				if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
					return EINVAL;
				}
				field[j] = (char)(hi << 4 | lo);
			}
			field[n / 2] = 0;
			if (field[0] != '/') {
				return EINVAL;
			}
			sp->paths[sp->npaths++] = field;
		}
		field = next;
	}
	return 0;
}

// count_threads returns the Threads: field of /proc/self/status, read
// through fd, or -1.
static int count_threads(int fd) {
	char buf[4096];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	if (n <= 0) {
		return -1;
	}
	buf[n] = 0;
	char *t = strstr(buf, "\nThreads:");
	if (t == NULL) {
		return -1;
	}
	return atoi(t + strlen("\nThreads:"));
}

// mkdirs makes path and its parents (mode 0755), like os.MkdirAll.
static int mkdirs(const char *path) {
	char buf[PATH_MAX];
	if (strlen(path) >= sizeof(buf)) {
		return ENAMETOOLONG;
	}
	strcpy(buf, path);
	for (char *c = buf + 1; ; c++) {
		if (*c == '/' || *c == 0) {
			char saved = *c;
			*c = 0;
			if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
				return errno;
			}
			*c = saved;
			if (saved == 0) {
				return 0;
			}
		}
	}
}

// bind_ro bind-mounts src (an O_PATH descriptor) at dst read-only,
// keeping the atime flags the kernel does not let a user namespace change.
static int bind_ro(int src, const char *dst) {
	struct stat st;
	if (fstat(src, &st) != 0) {
		return errno;
	}
	int err;
	if (S_ISDIR(st.st_mode)) {
		err = mkdirs(dst);
	} else {
		char parent[PATH_MAX];
		snprintf(parent, sizeof(parent), "%s", dst);
		char *slash = strrchr(parent, '/');
		if (slash != NULL && slash != parent) {
			*slash = 0;
		}
		err = mkdirs(parent);
		if (err == 0) {
			int f = open(dst, O_CREAT | O_WRONLY | O_CLOEXEC, 0444);
			if (f < 0) {
				err = errno;
			} else {
				close(f);
			}
		}
	}
	if (err != 0) {
		return err;
	}
	// The magic link names the file the descriptor holds, not a path that
	// could have changed since it was opened.
	char magic[64];
	snprintf(magic, sizeof(magic), "/proc/self/fd/%d", src);
	if (mount(magic, dst, NULL, MS_BIND | MS_REC, NULL) != 0) {
		return errno;
	}
	struct statvfs sv;
	if (statvfs(dst, &sv) != 0) {
		return errno;
	}
	unsigned long flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;
	if (sv.f_flag & ST_NOATIME) flags |= MS_NOATIME;
	if (sv.f_flag & ST_NODIRATIME) flags |= MS_NODIRATIME;
	if (sv.f_flag & ST_RELATIME) flags |= MS_RELATIME;
	if (mount(NULL, dst, NULL, flags, NULL) != 0) {
		return errno;
	}
	return 0;
}

#define ROOT_FAIL(...) do { \
	sandkit_root_errno = errno ? errno : EINVAL; \
	snprintf(sandkit_root_what, SANDKIT_WHAT_LEN, __VA_ARGS__); \
	goto out; \
} while (0)

// empty_root replaces the root with a small tmpfs that holds only the
// read-only paths, then detaches the host's root. No /proc: nothing in the
// renderer needs one once this file's steps are done.
static void empty_root(const struct sandkit_spec *sp) {
	int *src = calloc(sp->npaths + 1, sizeof(int));
	int opened = 0;
	errno = 0;
	if (src == NULL) {
		ROOT_FAIL("allocate");
	}
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
		ROOT_FAIL("make / rprivate");
	}
	// Any existing directory can hold the new root's mount point; the
	// mount is private to this namespace and hides nothing of the host.
	const char *bases[] = {"/tmp", "/mnt", "/run", "/dev"}, *base = NULL;
	for (size_t i = 0; i < sizeof(bases) / sizeof(bases[0]); i++) {
		struct stat st;
		if (lstat(bases[i], &st) == 0 && S_ISDIR(st.st_mode)) {
			base = bases[i];
			break;
		}
	}
	if (base == NULL) {
		errno = ENOENT;
		ROOT_FAIL("no directory to mount the new root on");
	}
	// Hold the read-only paths open before the new root hides them: one
	// of them may well live under base.
	for (; opened < sp->npaths; opened++) {
		src[opened] = open(sp->paths[opened], O_PATH | O_CLOEXEC);
		if (src[opened] < 0) {
			ROOT_FAIL("read-only path %s", sp->paths[opened]);
		}
	}
	const unsigned long flags = MS_NOSUID | MS_NODEV | MS_NOEXEC;
	if (mount("sandkit", base, "tmpfs", flags, "size=64k,nr_inodes=256,mode=0755") != 0) {
		ROOT_FAIL("mount tmpfs root");
	}
	for (int i = 0; i < sp->npaths; i++) {
		char dst[PATH_MAX];
		if ((size_t)snprintf(dst, sizeof(dst), "%s%s", base, sp->paths[i]) >= sizeof(dst)) {
			errno = ENAMETOOLONG;
			ROOT_FAIL("read-only path %s", sp->paths[i]);
		}
		int err = bind_ro(src[i], dst);
		if (err != 0) {
			errno = err;
			ROOT_FAIL("read-only path %s", sp->paths[i]);
		}
	}
	if (chdir(base) != 0) {
		ROOT_FAIL("chdir to the new root");
	}
	// pivot_root(".", ".") stacks the old root under the new one at "/";
	// detaching "." then removes the host's root from this namespace.
	if (syscall(SYS_pivot_root, ".", ".") != 0) {
		ROOT_FAIL("pivot_root");
	}
	if (umount2(".", MNT_DETACH) != 0) {
		ROOT_FAIL("detach old root");
	}
	if (chdir("/") != 0) {
		ROOT_FAIL("chdir /");
	}
	if (mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | flags, NULL) != 0) {
		ROOT_FAIL("remount root read-only");
	}
out:
	for (int i = 0; i < opened; i++) {
		close(src[i]);
	}
	free(src);
}

// drop_caps empties the permitted, effective and inheritable sets of the
// one thread there is; every thread created later inherits them empty.
static void drop_caps(void) {
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct data[2];
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capset, &hdr, data) != 0) {
		sandkit_caps_errno = errno;
	}
}

struct sandkit_ruleset_attr {
	uint64_t handled_access_fs, handled_access_net, scoped;
};

struct sandkit_path_beneath {
	uint64_t allowed_access;
	int32_t parent_fd;
} __attribute__((packed));

#define LL_EXECUTE (1ULL << 0)
#define LL_READ_FILE (1ULL << 2)
#define LL_READ_DIR (1ULL << 3)
#define LL_RULE_PATH_BENEATH 1

#define LL_FAIL(...) do { \
	sandkit_landlock_errno = errno ? errno : EINVAL; \
	snprintf(sandkit_landlock_what, SANDKIT_WHAT_LEN, __VA_ARGS__); \
	goto out; \
} while (0)

// landlock handles sp's rights with no rule granting any, except read
// access to the read-only paths, and restricts this thread (and so every
// later one) to the result. no_new_privs is set already.
static void landlock(const struct sandkit_spec *sp) {
	struct sandkit_ruleset_attr attr = {sp->fs, sp->net, sp->scoped};
	errno = 0;
	int rs = syscall(SYS_landlock_create_ruleset, &attr, sizeof(attr), 0);
	if (rs < 0) {
		LL_FAIL("create ruleset");
	}
	for (int i = 0; i < sp->npaths && sp->fs != 0; i++) {
		int fd = open(sp->paths[i], O_PATH | O_CLOEXEC);
		if (fd < 0) {
			LL_FAIL("read-only path %s", sp->paths[i]);
		}
		struct stat st;
		int err = fstat(fd, &st);
		struct sandkit_path_beneath pb = {
			.allowed_access = (LL_EXECUTE | LL_READ_FILE | (S_ISDIR(st.st_mode) ? LL_READ_DIR : 0)) & sp->fs,
			.parent_fd = fd,
		};
		if (err == 0 && pb.allowed_access != 0) {
			err = syscall(SYS_landlock_add_rule, rs, LL_RULE_PATH_BENEATH, &pb, 0);
		}
		int saved = errno;
		close(fd);
		if (err != 0) {
			errno = saved;
			LL_FAIL("rule for %s", sp->paths[i]);
		}
	}
	if (syscall(SYS_landlock_restrict_self, rs, 0) != 0) {
		LL_FAIL("restrict self");
	}
out:
	if (rs >= 0) {
		close(rs);
	}
}

void sandkit_early_lockdown(const char *arg) {
	sandkit_lockdown_ran = 1;
	const char *tilde = strrchr(arg, '~');
	char *spec = tilde == NULL ? NULL : strdup(tilde + 1);
	struct sandkit_spec sp;
	if (spec == NULL) {
		sandkit_spec_errno = tilde == NULL ? EINVAL : ENOMEM;
		return;
	}
	if ((sandkit_spec_errno = parse_spec(spec, &sp)) != 0) {
		free(spec);
		return;
	}
	// The renderer's own /proc/self, from the procfs the renderer was
	// started with, kept open through the new root: the Go side lists its
	// descriptors with it and measures its address space at lockdown, then
	// closes both.
	sandkit_proc_status_fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	if (sandkit_proc_status_fd >= 0) {
		sandkit_proc_fd_dir = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	}
	if (sandkit_proc_status_fd < 0 || sandkit_proc_fd_dir < 0) {
		sandkit_proc_errno = errno;
	} else {
		sandkit_threads = count_threads(sandkit_proc_status_fd);
	}
	if (sp.root) {
		empty_root(&sp);
	}
	if (sp.hostname && sethostname("sandkit", strlen("sandkit")) != 0) {
		sandkit_hostname_errno = errno;
	}
	drop_caps();
	if (sp.landlock) {
		landlock(&sp);
	}
	free(sp.paths);
	free(spec);
}
