// Package fdtest lists a process's open descriptors for the framework's
// leak checks.
//
// Checks compare which descriptors are open, by number and by what each
// refers to, never how many: the Go runtime opens and closes descriptors
// of its own (its cgroup's CPU limit files, its poller) at times of its
// choosing, so a count can move without anything leaking or being closed.
package fdtest

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Open returns this process's open descriptors and what each refers to
// (its /proc/self/fd link), without the one used to list them.
func Open() (map[int]string, error) {
	dir, err := os.Open("/proc/self/fd")
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	fds := make(map[int]string, len(names))
	for _, name := range names {
		fd, err := strconv.Atoi(name)
		if err != nil || fd == int(dir.Fd()) {
			continue
		}
		target, err := os.Readlink(filepath.Join("/proc/self/fd", name))
		if err != nil {
			continue // closed while we looked
		}
		fds[fd] = target
	}
	return fds, nil
}

// Added lists, sorted, the descriptors of now that base did not have (by
// number, or with another target), as "fd -> target".
func Added(base, now map[int]string) []string {
	var added []string
	for fd, target := range now {
		if base[fd] != target {
			added = append(added, fmt.Sprintf("%d -> %s", fd, target))
		}
	}
	sort.Strings(added)
	return added
}

// Children lists the processes whose parent is this one, from /proc: a
// leak check's test for zombies and renderers left running.
func Children() ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	self := strconv.Itoa(os.Getpid())
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		st := string(b)
		fields := strings.Fields(st[strings.LastIndexByte(st, ')')+1:])
		if len(fields) > 1 && fields[1] == self {
			out = append(out, pid)
		}
	}
	return out, nil
}
