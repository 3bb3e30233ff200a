package fuzz

import (
	"github.com/sandkit/sandkit/internal/fdkind"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/ipc"
)

// fdPool is a fixed set of descriptors of the kinds a hostile peer can
// attach, all owned by the harness. Inputs choose among them by index;
// every send works on fresh duplicates, so nothing the harness does not
// own is ever passed or closed.
type fdPool struct {
	names []string
	fds   []int
	// fits[i][k] says whether descriptor i passes the check of kind k:
	// the oracle the protocol model uses for fd kind checks.
	fits [][ipc.SharedRegion + 1]bool
}

// allKinds lists every descriptor kind a method spec can require, so the
// oracle can answer for any of them.
func allKinds() []ipc.FDKind {
	return []ipc.FDKind{ipc.SealedMemfd, ipc.ReadOnlyFile, ipc.SeccompListener, ipc.SharedRegion}
}

func newFDPool(tb testing.TB) *fdPool {
	tb.Helper()
	must := func(fd int, err error) int {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
		return fd
	}
	memfd := func(seals int) int {
		fd := must(unix.MemfdCreate("fuzz", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING))
		if _, err := unix.Write(fd, []byte("memfd contents")); err != nil {
			tb.Fatal(err)
		}
		if seals != 0 {
			must(unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals))
		}
		return fd
	}
	dir := tb.TempDir()
	file := filepath.Join(dir, "ro")
	if err := os.WriteFile(file, []byte("read-only file"), 0o600); err != nil {
		tb.Fatal(err)
	}
	var pipe, sp [2]int
	if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC); err != nil {
		tb.Fatal(err)
	}
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	sealed := memfd(fdkind.SealsImmutable)
	p := &fdPool{}
	add := func(name string, fd int) {
		p.names = append(p.names, name)
		p.fds = append(p.fds, fd)
	}
	add("devnull", must(unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)))
	add("pipe-read", pipe[0])
	add("pipe-write", pipe[1])
	add("memfd-sealed", sealed)
	add("memfd-unsealed", memfd(0))
	add("memfd-fixed-size", memfd(fdkind.SealsFixedSize))
	add("socket", sp[0])
	add("socket-peer", sp[1])
	add("directory", must(unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)))
	add("file-readonly", must(unix.Open(file, unix.O_RDONLY|unix.O_CLOEXEC, 0)))
	add("file-writable", must(unix.Open(file, unix.O_RDWR|unix.O_CLOEXEC, 0)))
	add("file-opath", must(unix.Open(file, unix.O_PATH|unix.O_CLOEXEC, 0)))
	add("memfd-sealed-readonly", must(unix.Open("/proc/self/fd/"+strconv.Itoa(sealed), unix.O_RDONLY|unix.O_CLOEXEC, 0)))
	add("eventfd", must(unix.Eventfd(0, unix.EFD_CLOEXEC)))
	tb.Cleanup(func() {
		for _, fd := range p.fds {
			unix.Close(fd)
		}
	})
	p.fits = make([][ipc.SharedRegion + 1]bool, len(p.fds))
	for i, fd := range p.fds {
		dup := must(unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0))
		f := os.NewFile(uintptr(dup), p.names[i])
		for _, k := range allKinds() {
			p.fits[i][k] = fdkind.CheckFile(f, fdkind.Kind(k)) == nil
		}
		f.Close()
	}
	return p
}

// pick returns the pool indexes sel chooses: one byte each, modulo the
// pool size, at most max of them.
func (p *fdPool) pick(sel []byte, max int) []int {
	var idx []int
	for i, b := range sel {
		if i == max {
			break
		}
		idx = append(idx, int(b)%len(p.fds))
	}
	return idx
}

// dup returns fresh duplicates of the descriptors pick chooses, with their
// pool indexes. The caller closes them once sent.
func (p *fdPool) dup(tb testing.TB, sel []byte, max int) (fds, idx []int) {
	tb.Helper()
	idx = p.pick(sel, max)
	for _, j := range idx {
		fd, err := unix.FcntlInt(uintptr(p.fds[j]), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			closeAll(fds)
			tb.Fatal(err)
		}
		fds = append(fds, fd)
	}
	return fds, idx
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
