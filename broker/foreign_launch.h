// The launcher of foreign programs (foreign_launch.c, foreign.go).
#ifndef SANDKIT_FOREIGN_LAUNCH_H
#define SANDKIT_FOREIGN_LAUNCH_H

#include <linux/filter.h>
#include <stdint.h>

enum {
	SANDKIT_MOUNT_READ_ONLY,  // bind, read-only, noexec
	SANDKIT_MOUNT_EXECUTABLE, // bind, read-only, exec allowed
	SANDKIT_MOUNT_TMPFS,      // private writable tmpfs of bounded size
	SANDKIT_MOUNT_DEVICE,     // bind of the character device rdev, read-only, noexec, dev allowed
};

struct sandkit_mount {
	const char *path; // absolute: where it goes in the new root
	int kind;
	int src;            // binds: the launcher's O_PATH descriptor of the source
	uint64_t size;      // tmpfs: bytes
	unsigned inodes;    // tmpfs: nr_inodes
	uint64_t rdev;      // device: the device number its source must have
};

struct sandkit_file {
	const char *path; // absolute, in the new root, inside a tmpfs
	int fd;           // the broker's descriptor of its content
};

struct sandkit_rlimit {
	int resource;
	uint64_t value;
};

// What the launcher does between clone and exec, all prepared by the
// broker: the child allocates nothing (it runs in the broker's memory).
struct sandkit_launch {
	int root;     // build the empty root with mounts (mount namespace)
	int hostname; // set the hostname (UTS namespace)
	struct sandkit_mount *mounts;
	int nmounts;
	// fds[i] is the broker's descriptor installed at i in the program;
	// -1 leaves i closed. Every other descriptor is closed.
	const int *fds;
	int nfds;
	const char *prog; // the program's path in the new root
	int exe_num;      // the program's descriptor number for execveat
	int sock;         // the broker's descriptor of the listener socket
	int sock_num;     // its number in the program until exec
	const struct sandkit_rlimit *limits;
	int nlimits;
	uint64_t handled_fs, handled_net, scoped;
	uint64_t read_rights, exec_rights, write_rights;
	const struct sock_filter *filter; // NULL: no seccomp layer
	unsigned short filter_len;
	int notify; // the filter returns a listener, sent on sock_num
	char *const *argv;
	char *const *envp;
	// Files the program opens by name (its document, a configuration):
	// each descriptor's bytes (the broker's, seekable) are copied into a
	// new read-only file at its path, inside a tmpfs mount, before the
	// program runs.
	const struct sandkit_file *files;
	int nfiles;
	// The index of the tmpfs mount whose directory is sent to the broker
	// on sock before the program runs, for the broker to read its output
	// file from after it has ended. -1: none.
	int send_mount;
	// Out: the step that failed (SANDKIT_LAUNCH_*) and, for a mount or a
	// Landlock rule, the index of its mount (-1 for none).
	int step, index;
};

// The launcher's steps, in the order of launchSteps in foreign.go.
enum {
	SANDKIT_LAUNCH_NONE,
	SANDKIT_LAUNCH_ROOT,
	SANDKIT_LAUNCH_MOUNT,
	SANDKIT_LAUNCH_HOSTNAME,
	SANDKIT_LAUNCH_FDS,
	SANDKIT_LAUNCH_OPEN_PROGRAM,
	SANDKIT_LAUNCH_RLIMITS,
	SANDKIT_LAUNCH_CAPS,
	SANDKIT_LAUNCH_NO_NEW_PRIVS,
	SANDKIT_LAUNCH_LANDLOCK,
	SANDKIT_LAUNCH_LANDLOCK_RULE,
	SANDKIT_LAUNCH_SECCOMP,
	SANDKIT_LAUNCH_SEND_LISTENER,
	SANDKIT_LAUNCH_EXEC,
	SANDKIT_LAUNCH_SEND_MOUNT,
	SANDKIT_LAUNCH_INPUT,
};

// sandkit_launch locks the calling process down and execs the program.
// It returns only on failure, with l->step set and errno the cause.
void sandkit_launch(struct sandkit_launch *l);

#endif
