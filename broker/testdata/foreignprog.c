// A foreign program for the broker's tests: it knows nothing of sandkit.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int outfd = 1;

static void out(const char *s) {
	size_t n = strlen(s);
	while (n > 0) {
		ssize_t w = write(outfd, s, n);
		if (w <= 0) _exit(3);
		s += w;
		n -= w;
	}
}

// probe reports the errno of one file operation, 0 for success.
static void probe(const char *what, const char *path, int flags) {
	errno = 0;
	int fd = open(path, flags | O_CLOEXEC, 0644);
	int err = fd < 0 ? errno : 0;
	if (fd >= 0 && (flags & O_ACCMODE) != O_RDONLY && write(fd, "x", 1) != 1) {
		err = errno;
	}
	if (fd >= 0) close(fd);
	char line[512];
	snprintf(line, sizeof line, "%s %s %d\n", what, path, err);
	out(line);
}

int main(int argc, char **argv) {
	if (argc < 2) return 2;
	const char *mode = argv[1];
	char line[256];
	if (strcmp(mode, "echo") == 0) {
		// Read the input descriptor to its end, write it back upper-cased.
		char buf[4096];
		ssize_t n;
		size_t total = 0;
		while ((n = read(0, buf, sizeof buf)) > 0) {
			for (ssize_t i = 0; i < n; i++) if (buf[i] >= 'a' && buf[i] <= 'z') buf[i] -= 32;
			if (write(1, buf, n) != n) return 3;
			total += n;
		}
		return n < 0 ? 4 : 0;
	}
	if (strcmp(mode, "socket") == 0) {
		syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
		out("socket returned\n");
		return 0;
	}
	if (strcmp(mode, "forkbomb") == 0) {
		int n = 0;
		for (;;) {
			pid_t pid = fork();
			if (pid == 0) {
				// Blocks: the test never writes the input.
				char c;
				_exit(read(0, &c, 1) < 0);
			}
			if (pid < 0) break;
			n++;
		}
		snprintf(line, sizeof line, "forked %d errno %d\n", n, errno);
		out(line);
		// The children, paused, hold the input and the output: they
		// must die with this process, pid 1 of their namespace.
		return 0;
	}
	if (strcmp(mode, "fs") == 0) {
		for (int i = 2; i + 1 < argc; i += 2) {
			int flags = strcmp(argv[i], "read") == 0 ? O_RDONLY :
				strcmp(argv[i], "write") == 0 ? O_WRONLY :
				strcmp(argv[i], "create") == 0 ? O_WRONLY | O_CREAT | O_EXCL : O_RDONLY | O_DIRECTORY;
			probe(argv[i], argv[i + 1], flags);
		}
		return 0;
	}
	if (strcmp(mode, "head") == 0 && argc == 4) {
		// Read argv[3] bytes of argv[2]; report how many, and how many
		// of them were zero.
		int fd = open(argv[2], O_RDONLY | O_CLOEXEC);
		if (fd < 0) { snprintf(line, sizeof line, "open %d\n", errno); out(line); return 0; }
		unsigned char buf[4096];
		size_t want = (size_t)atoi(argv[3]), got = 0, zeros = 0;
		if (want > sizeof buf) want = sizeof buf;
		while (got < want) {
			ssize_t n = read(fd, buf + got, want - got);
			if (n <= 0) break;
			got += n;
		}
		for (size_t i = 0; i < got; i++) zeros += buf[i] == 0;
		snprintf(line, sizeof line, "read %zu zeros %zu\n", got, zeros);
		out(line);
		return 0;
	}
	if (strcmp(mode, "fill") == 0) {
		// Write to a file in argv[2] until it fails; report how far.
		int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0) { snprintf(line, sizeof line, "open %d\n", errno); out(line); return 0; }
		static char buf[4096];
		long total = 0;
		ssize_t w;
		while ((w = write(fd, buf, sizeof buf)) > 0) total += w;
		snprintf(line, sizeof line, "wrote %ld errno %d\n", total, errno);
		out(line);
		return 0;
	}
	if (strcmp(mode, "reexec") == 0) {
		// The launcher exec'd this program through descriptor argv[2]:
		// it can neither get that number back nor exec anything else.
		int num = atoi(argv[2]);
		errno = 0;
		int r = syscall(SYS_dup3, 0, num, 0);
		snprintf(line, sizeof line, "dup3 %d errno %d\n", r, r < 0 ? errno : 0);
		out(line);
		char *const args[] = {argv[0], "echo", NULL};
		errno = 0;
		r = syscall(SYS_execveat, num, "", args, NULL, AT_EMPTY_PATH);
		snprintf(line, sizeof line, "execveat %d errno %d\n", r, r < 0 ? errno : 0);
		out(line);
		execve(argv[0], args, NULL);
		out("execve returned\n");
		return 0;
	}
	if (strcmp(mode, "fds") == 0) {
		// List every open descriptor up to argv[2] on argv[3].
		int max = atoi(argv[2]);
		outfd = atoi(argv[3]);
		for (int fd = 0; fd <= max; fd++) {
			if (fcntl(fd, F_GETFD) >= 0) {
				snprintf(line, sizeof line, "%d\n", fd);
				out(line);
			}
		}
		return 0;
	}
	if (strcmp(mode, "convert") == 0 && argc == 4) {
		// Open the document by name (argv[2]), report whether it may
		// be written, and write it upper-cased to a file by name
		// (argv[3]), as a converter that reads and writes paths does;
		// a last line says whether the input could be opened to write.
		int w = open(argv[2], O_WRONLY | O_CLOEXEC);
		snprintf(line, sizeof line, "write input errno %d\n", w < 0 ? errno : 0);
		int in = open(argv[2], O_RDONLY | O_CLOEXEC);
		int o = open(argv[3], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (in < 0 || o < 0) return 5;
		outfd = o;
		char buf[4096];
		ssize_t n;
		while ((n = read(in, buf, sizeof buf)) > 0) {
			for (ssize_t i = 0; i < n; i++) if (buf[i] >= 'a' && buf[i] <= 'z') buf[i] -= 32;
			if (write(o, buf, n) != n) return 3;
		}
		out(line);
		return n < 0 ? 4 : 0;
	}
	if (strcmp(mode, "symlink") == 0 && argc == 4) {
		// Leave argv[3] a symlink to argv[2] instead of an output.
		return syscall(SYS_symlinkat, argv[2], AT_FDCWD, argv[3]) != 0 ? 5 : 0;
	}
	if (strcmp(mode, "mkdir") == 0 && argc == 3) {
		return syscall(SYS_mkdirat, AT_FDCWD, argv[2], 0700) != 0 ? 5 : 0;
	}
	if (strcmp(mode, "exit") == 0) {
		return atoi(argv[2]);
	}
	return 2;
}
