package ipc

import (
	"github.com/sandkit/sandkit/internal/fdkind"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/internal/fdtest"
)

// Test fixtures shared by the internal tests: descriptors of every kind the
// checks must tell apart, and descriptor leak checks.

// openFDs returns this process's open descriptors and what each refers to.
func openFDs(t testing.TB) map[int]string {
	t.Helper()
	fds, err := fdtest.Open()
	if err != nil {
		t.Fatalf("list descriptors: %v", err)
	}
	return fds
}

// waitFDs waits (briefly) until no descriptor is open that was not open in
// base, and fails naming the ones that stay. Descriptors are closed
// synchronously by ipc, but a few paths (late replies, background cancel
// senders) finish after the call that triggered them returned. It never
// runs the collector: a descriptor that only a finalizer would close is a
// leak. Descriptors of base that closed meanwhile (earlier tests' files
// reaching their finalizers) are not this test's business.
func waitFDs(t testing.TB, base map[int]string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		added := fdtest.Added(base, openFDs(t))
		if len(added) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("descriptors left open: %v", added)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type fixture func(t testing.TB) int

// must(t)(fd, err) returns fd or fails the test.
func must(t testing.TB) func(int, error) int {
	return func(fd int, err error) int {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
}

func tempFile(t testing.TB, flags int) int {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	return must(t)(unix.Open(p, flags|unix.O_CLOEXEC, 0))
}

func memfdWithSeals(seals int) fixture {
	return func(t testing.TB) int {
		t.Helper()
		fd := must(t)(unix.MemfdCreate("fixture", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING))
		if err := unix.Ftruncate(fd, 4096); err != nil {
			t.Fatal(err)
		}
		if seals != 0 {
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
				t.Fatal(err)
			}
		}
		return fd
	}
}

var fixtures = map[string]fixture{
	"pipe": func(t testing.TB) int {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		unix.Close(p[1])
		return p[0]
	},
	"socket": func(t testing.TB) int {
		return must(t)(unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0))
	},
	"directory": func(t testing.TB) int {
		return must(t)(unix.Open(t.TempDir(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0))
	},
	"devnull":   func(t testing.TB) int { return must(t)(unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)) },
	"opath":     func(t testing.TB) int { return tempFile(t, unix.O_PATH) },
	"writable":  func(t testing.TB) int { return tempFile(t, unix.O_RDWR) },
	"writeonly": func(t testing.TB) int { return tempFile(t, unix.O_WRONLY) },
	"readonly":  func(t testing.TB) int { return tempFile(t, unix.O_RDONLY) },
	"eventfd":   func(t testing.TB) int { return must(t)(unix.Eventfd(0, unix.EFD_CLOEXEC)) },

	"memfd-unsealed":     memfdWithSeals(0),
	"memfd-no-write":     memfdWithSeals(unix.F_SEAL_GROW | unix.F_SEAL_SHRINK | unix.F_SEAL_SEAL),
	"memfd-no-grow":      memfdWithSeals(unix.F_SEAL_WRITE | unix.F_SEAL_SHRINK | unix.F_SEAL_SEAL),
	"memfd-no-shrink":    memfdWithSeals(unix.F_SEAL_WRITE | unix.F_SEAL_GROW | unix.F_SEAL_SEAL),
	"memfd-no-seal":      memfdWithSeals(unix.F_SEAL_WRITE | unix.F_SEAL_GROW | unix.F_SEAL_SHRINK),
	"memfd-sealed":       memfdWithSeals(fdkind.SealsImmutable),
	"memfd-blank":        memfdWithSeals(fdkind.SealsBlank),
	"memfd-blank-grow":   memfdWithSeals(unix.F_SEAL_SHRINK),
	"memfd-sealed-extra": memfdWithSeals(fdkind.SealsImmutable | unix.F_SEAL_FUTURE_WRITE),
	"memfd-opath": func(t testing.TB) int {
		fd := memfdWithSeals(fdkind.SealsImmutable)(t)
		defer unix.Close(fd)
		return must(t)(unix.Open("/proc/self/fd/"+itoa(fd), unix.O_PATH|unix.O_CLOEXEC, 0))
	},
	"memfd-readonly": func(t testing.TB) int {
		fd := memfdWithSeals(fdkind.SealsImmutable)(t)
		defer unix.Close(fd)
		return must(t)(unix.Open("/proc/self/fd/"+itoa(fd), unix.O_RDONLY|unix.O_CLOEXEC, 0))
	},
	"seccomp-listener": newSeccompListener,
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

// newSeccompListener installs an allow-everything seccomp filter with
// SECCOMP_FILTER_FLAG_NEW_LISTENER on a throwaway thread (locked and never
// unlocked, so the runtime discards the thread when the goroutine exits)
// and returns the listener fd.
func newSeccompListener(t testing.TB) int {
	t.Helper()
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			ch <- result{-1, err}
			return
		}
		prog := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW}}
		fprog := unix.SockFprog{Len: 1, Filter: &prog[0]}
		fd, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
			unix.SECCOMP_FILTER_FLAG_NEW_LISTENER, uintptr(unsafe.Pointer(&fprog)))
		if e != 0 {
			ch <- result{-1, e}
			return
		}
		unix.CloseOnExec(int(fd))
		ch <- result{int(fd), nil}
	}()
	r := <-ch
	if r.err != nil {
		t.Skipf("seccomp listener unavailable: %v", r.err)
	}
	return r.fd
}
