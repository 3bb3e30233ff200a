package ipc

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// FDKind is the kind of file descriptor a method's spec requires at one
// position. Every received fd is checked against its kind before anyone sees
// it; an fd of the wrong kind is a protocol violation (ReasonFDKind).
//
// SealedMemfd, SharedRegion and ReadOnlyFile are checked with fstat(2) and
// fcntl(2) only, because the renderer that receives them runs under seccomp
// with no filesystem: no /proc, no readlink. SeccompListener also reads the
// /proc/self/fd link; only the broker receives that kind.
type FDKind int

const (
	// SealedMemfd is a memfd (S_IFREG, seals supported), readable, whose
	// seals include F_SEAL_WRITE, F_SEAL_GROW, F_SEAL_SHRINK and
	// F_SEAL_SEAL: its size and bytes can never change again, so the
	// receiver may validate and use the bytes in place.
	SealedMemfd FDKind = iota + 1
	// ReadOnlyFile is a regular file opened O_RDONLY (not O_PATH). The
	// receiver cannot write through it; the contents may still change
	// through other descriptors, so validate-then-use needs a copy or a
	// SealedMemfd.
	ReadOnlyFile
	// SeccompListener is a seccomp user-notification listener (an anon
	// inode named "seccomp notify").
	SeccompListener
	// SharedRegion is a readable memfd whose seals include F_SEAL_GROW,
	// F_SEAL_SHRINK and F_SEAL_SEAL but not necessarily F_SEAL_WRITE: its
	// size is fixed (so mapping it cannot SIGBUS on truncation) but the
	// sender may keep writing to it. Readers must copy out exactly once
	// before validating; see package shm.
	SharedRegion
	// BlankMemfd is a readable and writable memfd whose seals include
	// F_SEAL_GROW and F_SEAL_SHRINK but neither F_SEAL_WRITE nor
	// F_SEAL_SEAL: a buffer of fixed size that the receiver fills and
	// then seals as it needs (a SealedMemfd or a SharedRegion). It is
	// what the broker hands a renderer that asks for shared memory.
	BlankMemfd

	maxFDKind = BlankMemfd
)

// Seal sets required by the memfd kinds.
const (
	SealsImmutable = unix.F_SEAL_WRITE | unix.F_SEAL_GROW | unix.F_SEAL_SHRINK | unix.F_SEAL_SEAL
	SealsFixedSize = unix.F_SEAL_GROW | unix.F_SEAL_SHRINK | unix.F_SEAL_SEAL
	SealsBlank     = unix.F_SEAL_GROW | unix.F_SEAL_SHRINK
)

func (k FDKind) String() string {
	switch k {
	case SealedMemfd:
		return "sealed memfd"
	case ReadOnlyFile:
		return "read-only file"
	case SeccompListener:
		return "seccomp listener"
	case SharedRegion:
		return "shared region"
	case BlankMemfd:
		return "blank memfd"
	}
	return "FDKind(" + strconv.Itoa(int(k)) + ")"
}

func (k FDKind) valid() bool { return k >= 1 && k <= maxFDKind }

// CheckFD reports whether f is of kind k. It returns a *ProtocolError with
// ReasonFDKind if not. It does not put f into blocking mode.
func CheckFD(f *os.File, k FDKind) error {
	if f == nil {
		return violation(ReasonFDKind, "nil file, want %v", k)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return violation(ReasonFDKind, "want %v: %v", k, err)
	}
	var perr *ProtocolError
	if err := rc.Control(func(fd uintptr) { perr = checkFD(int(fd), k) }); err != nil {
		return violation(ReasonFDKind, "want %v: %v", k, err)
	}
	if perr != nil {
		return perr
	}
	return nil
}

// checkFD is CheckFD on a raw descriptor.
func checkFD(fd int, k FDKind) *ProtocolError {
	if !k.valid() {
		return violation(ReasonFDKind, "fd %d: invalid kind %v", fd, k)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return violation(ReasonFDKind, "fd %d: want %v: fstat: %v", fd, k, err)
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return violation(ReasonFDKind, "fd %d: want %v: F_GETFL: %v", fd, k, err)
	}
	if fl&unix.O_PATH != 0 {
		return violation(ReasonFDKind, "fd %d: want %v, got an O_PATH descriptor", fd, k)
	}
	acc := fl & unix.O_ACCMODE
	typ := st.Mode & unix.S_IFMT
	switch k {
	case SealedMemfd, SharedRegion:
		if typ != unix.S_IFREG {
			return violation(ReasonFDKind, "fd %d: want %v, got file type %#o", fd, k, typ)
		}
		if acc != unix.O_RDONLY && acc != unix.O_RDWR {
			return violation(ReasonFDKind, "fd %d: want %v, not readable", fd, k)
		}
		seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
		if err != nil {
			return violation(ReasonFDKind, "fd %d: want %v, not a memfd (F_GET_SEALS: %v)", fd, k, err)
		}
		need := SealsImmutable
		if k == SharedRegion {
			need = SealsFixedSize
		}
		if seals&need != need {
			return violation(ReasonFDKind, "fd %d: want %v, seals %#x lack %#x", fd, k, seals, need&^seals)
		}
	case BlankMemfd:
		if typ != unix.S_IFREG {
			return violation(ReasonFDKind, "fd %d: want %v, got file type %#o", fd, k, typ)
		}
		if acc != unix.O_RDWR {
			return violation(ReasonFDKind, "fd %d: want %v, access mode %#o", fd, k, acc)
		}
		seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
		if err != nil {
			return violation(ReasonFDKind, "fd %d: want %v, not a memfd (F_GET_SEALS: %v)", fd, k, err)
		}
		if seals&SealsBlank != SealsBlank || seals&(unix.F_SEAL_WRITE|unix.F_SEAL_SEAL) != 0 {
			return violation(ReasonFDKind, "fd %d: want %v, seals %#x", fd, k, seals)
		}
	case ReadOnlyFile:
		if typ != unix.S_IFREG {
			return violation(ReasonFDKind, "fd %d: want %v, got file type %#o", fd, k, typ)
		}
		if acc != unix.O_RDONLY {
			return violation(ReasonFDKind, "fd %d: want %v, access mode %#o", fd, k, acc)
		}
	case SeccompListener:
		// Anon inodes have no file type bits.
		if typ != 0 {
			return violation(ReasonFDKind, "fd %d: want %v, got file type %#o", fd, k, typ)
		}
		var buf [64]byte
		n, err := unix.Readlink("/proc/self/fd/"+strconv.Itoa(fd), buf[:])
		if err != nil {
			return violation(ReasonFDKind, "fd %d: want %v: readlink: %v", fd, k, err)
		}
		if string(buf[:n]) != "anon_inode:seccomp notify" {
			return violation(ReasonFDKind, "fd %d: want %v, got %q", fd, k, buf[:n])
		}
	}
	return nil
}

// mustValidKinds panics on an invalid kind (programmer error at declaration).
func mustValidKinds(what string, ks []FDKind) {
	for i, k := range ks {
		if !k.valid() {
			panic(fmt.Sprintf("ipc: %s[%d]: invalid FDKind %d", what, i, int(k)))
		}
	}
}
