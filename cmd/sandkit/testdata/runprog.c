// A program for sandkit run's tests: it knows nothing of sandkit.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc < 2) return 2;
	const char *mode = argv[1];
	if (strcmp(mode, "exit") == 0 && argc == 3) {
		return atoi(argv[2]);
	}
	if (strcmp(mode, "stderr") == 0 && argc == 3) {
		fprintf(stderr, "%s\n", argv[2]);
		return 0;
	}
	if (strcmp(mode, "socket") == 0) {
		syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
		puts("socket returned");
		return 0;
	}
	if (strcmp(mode, "segv") == 0) {
		*(volatile int *)0 = 1;
		return 0;
	}
	if (strcmp(mode, "spin") == 0) {
		for (volatile unsigned long i = 0;; i++) {
		}
	}
	if (strcmp(mode, "wait") == 0) {
		// Blocks until stdin ends: the tests never end it.
		char c;
		return read(0, &c, 1) < 0;
	}
	if (strcmp(mode, "write") == 0) {
		// Create each file named and write to it; report the errno.
		for (int i = 2; i < argc; i++) {
			errno = 0;
			int fd = open(argv[i], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
			int err = fd < 0 ? errno : (write(fd, "x", 1) == 1 ? 0 : errno);
			if (fd >= 0) close(fd);
			printf("write %s %d\n", argv[i], err);
		}
		return 0;
	}
	if (strcmp(mode, "env") == 0) {
		for (char **e = __environ; *e != NULL; e++) puts(*e);
		return 0;
	}
	return 2;
}
