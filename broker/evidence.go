package broker

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A thread creation that fails with EAGAIN ("runtime/cgo: pthread_create
// failed: Resource temporarily unavailable") is the same line for two
// limits: the kernel refused a task (RLIMIT_NPROC), or glibc could not map
// the new thread's stack (RLIMIT_AS or RLIMIT_DATA) and turned ENOMEM into
// EAGAIN. The resident peak that wait4 reports cannot tell them apart: a
// thread bomb touches little, and neither does a decoder whose one large
// allocation reserved the address space it was refused the rest of.
//
// The kernel can tell, while the renderer still exists: how many tasks it
// has and how much address space it has mapped, against the limits it
// runs under. So when that line arrives, the broker's log reader takes a
// taskSnapshot of the renderer, and classify judges by it. The renderer
// is still there to be read: its stderr pipe holds one page (logPipe), so
// the runtime's dump after the line (several KiB: registers, stacks,
// goroutines) blocks it until the broker has read past the line, which it
// does only after the snapshot.

// taskSnapshot is what the kernel reported of a live renderer: its
// /proc/<pid>/status and /proc/<pid>/limits, read by the broker.
type taskSnapshot struct {
	threads   uint64 // tasks in the thread group
	vmSize    uint64 // bytes mapped: what RLIMIT_AS counts
	vmData    uint64 // private writable bytes mapped: what RLIMIT_DATA counts
	limitAS   uint64 // RLIMIT_AS in force; 0 for none
	limitData uint64 // RLIMIT_DATA in force; 0 for none
}

// errTaskGone is snapshotTask's error for a renderer that had already
// exited: there is nothing left to read.
var errTaskGone = errors.New("the renderer had already exited")

// snapshotTask reads the kernel's view of the renderer pid. The files are
// opened first and the pidfd checked after: a renderer that had not exited
// then still held its pid, so the files are its own and not those of a
// process that reused the pid. One that exits between the check and the
// read leaves no memory figures (its memory is gone), which is
// errTaskGone too.
func snapshotTask(pid int, pidfd *os.File) (*taskSnapshot, error) {
	dir := "/proc/" + strconv.Itoa(pid)
	status, err := os.Open(dir + "/status")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errTaskGone, err)
	}
	defer status.Close()
	limits, err := os.Open(dir + "/limits")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errTaskGone, err)
	}
	defer limits.Close()
	if exited, err := hasExited(pidfd); err != nil || exited {
		return nil, fmt.Errorf("%w (pidfd: %v)", errTaskGone, err)
	}
	var s taskSnapshot
	found, err := readFields(status, func(name, value string) (bool, error) {
		switch name {
		case "Threads":
			return true, parseUint(value, 1, &s.threads)
		case "VmSize":
			return true, parseUint(strings.TrimSuffix(value, " kB"), 1024, &s.vmSize)
		case "VmData":
			return true, parseUint(strings.TrimSuffix(value, " kB"), 1024, &s.vmData)
		}
		return false, nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s/status: %w", dir, err)
	}
	if found != 3 {
		return nil, errTaskGone
	}
	_, err = readLimits(limits, map[string]*uint64{"Max address space": &s.limitAS, "Max data size": &s.limitData})
	if err != nil {
		return nil, fmt.Errorf("%s/limits: %w", dir, err)
	}
	return &s, nil
}

// hasExited reports whether the process of pidfd has exited, without
// reaping it.
func hasExited(pidfd *os.File) (bool, error) {
	rc, err := pidfd.SyscallConn()
	if err != nil {
		return false, err
	}
	var exited bool
	var waitErr error
	err = rc.Control(func(fd uintptr) {
		var info unix.Siginfo
		waitErr = unix.Waitid(unix.P_PIDFD, int(fd), &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		exited = waitErr == nil && info.Signo != 0
		if errors.Is(waitErr, unix.EAGAIN) { // non-blocking pidfd: still running
			waitErr = nil
		}
	})
	if err != nil {
		return false, err
	}
	return exited, waitErr
}

// readFields calls field for each "Name:\tvalue" line of f, counting the
// fields it took.
func readFields(f *os.File, field func(name, value string) (bool, error)) (int, error) {
	b, err := readSmall(f)
	if err != nil {
		return 0, err
	}
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		took, err := field(name, strings.TrimSpace(value))
		if err != nil {
			return n, fmt.Errorf("%s: %w", name, err)
		}
		if took {
			n++
		}
	}
	return n, nil
}

// readLimits reads the soft limits named in want from a /proc/<pid>/limits
// file ("Max address space   1234   1234   bytes"); "unlimited" is 0.
func readLimits(f *os.File, want map[string]*uint64) (int, error) {
	b, err := readSmall(f)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		for name, dst := range want {
			rest, ok := strings.CutPrefix(line, name+" ")
			if !ok {
				continue
			}
			fields := strings.Fields(rest)
			if len(fields) == 0 {
				return n, fmt.Errorf("%s: no value", name)
			}
			if fields[0] == "unlimited" {
				*dst = 0
			} else if err := parseUint(fields[0], 1, dst); err != nil {
				return n, fmt.Errorf("%s: %w", name, err)
			}
			n++
		}
	}
	return n, nil
}

// readSmall reads a procfs file of at most a few KiB.
func readSmall(f *os.File) ([]byte, error) {
	b := make([]byte, 16<<10)
	n, err := f.ReadAt(b, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return b[:n], nil
}

func parseUint(s string, unit uint64, dst *uint64) error {
	v, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return err
	}
	*dst = v * unit
	return nil
}

// threadStackSize is the most a new thread's stack can ask for: glibc's
// default is RLIMIT_STACK as the renderer inherited it from the broker
// (read once at the renderer's start), 8 MiB here and on most systems.
// Room for less than that, and a little more for the guard page and
// thread-local storage, means the stack could not be mapped.
func threadStackSize() uint64 {
	const fallback = 8 << 20
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_STACK, &rl); err != nil || rl.Cur == unix.RLIM_INFINITY || rl.Cur < fallback {
		return fallback
	}
	return min(rl.Cur, 64<<20)
}

// threadFailureVerdict decides which limit a failed thread creation met,
// from snapshot s taken when the renderer said so, with the thread limit
// threads (0 for none) and hostRoot set when the kernel exempts the
// renderer from RLIMIT_NPROC. It returns "" when s shows neither limit
// reached.
func threadFailureVerdict(s *taskSnapshot, threads uint64, hostRoot bool, stack uint64) (ExitReason, string) {
	room := func(used, limit uint64) (uint64, bool) {
		if limit == 0 {
			return 0, false
		}
		if used >= limit {
			return 0, true
		}
		return limit - used, limit-used < stack+stack/8
	}
	if threads != 0 && !hostRoot && s.threads >= threads {
		return ExitThreadLimit, fmt.Sprintf("thread limit (RLIMIT_NPROC %d) reached: the kernel counted %d tasks when a thread could not be created", threads, s.threads)
	}
	if left, full := room(s.vmSize, s.limitAS); full {
		return ExitMemoryLimit, fmt.Sprintf("address space %d MiB of the %d MiB limit (RLIMIT_AS) mapped, %d MiB left: no room for a thread's %d MiB stack", s.vmSize>>20, s.limitAS>>20, left>>20, stack>>20)
	}
	if left, full := room(s.vmData, s.limitData); full {
		return ExitMemoryLimit, fmt.Sprintf("data %d MiB of the %d MiB limit (RLIMIT_DATA) mapped, %d MiB left: no room for a thread's %d MiB stack", s.vmData>>20, s.limitData>>20, left>>20, stack>>20)
	}
	return "", fmt.Sprintf("a thread could not be created with %d tasks (limit %d) and %d MiB of address space mapped (limit %d MiB)", s.threads, threads, s.vmSize>>20, s.limitAS>>20)
}
