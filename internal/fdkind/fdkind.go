// Package fdkind checks what a file descriptor is, with fstat(2) and
// fcntl(2) only, for ipc.FDKind and for the sandkit packages that check or
// make descriptors of those kinds (ipc/shm, broker). Programs on sandkit
// name kinds with ipc.FDKind and make memfds with ipc/shm; the seal sets
// and the check itself are not part of their API.
package fdkind

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Kind is an ipc.FDKind, numbered alike; ipc.FDKind documents each kind.
type Kind int

const (
	SealedMemfd Kind = iota + 1
	ReadOnlyFile
	SeccompListener
	SharedRegion
	BlankMemfd

	maxKind = BlankMemfd
)

// Seal sets required by the memfd kinds.
const (
	// SealsImmutable: size and bytes can never change (SealedMemfd).
	SealsImmutable = unix.F_SEAL_WRITE | unix.F_SEAL_GROW | unix.F_SEAL_SHRINK | unix.F_SEAL_SEAL
	// SealsFixedSize: the size can never change, the bytes can
	// (SharedRegion).
	SealsFixedSize = unix.F_SEAL_GROW | unix.F_SEAL_SHRINK | unix.F_SEAL_SEAL
	// SealsBlank: the size can never change, and the receiver may still
	// seal it either way (BlankMemfd).
	SealsBlank = unix.F_SEAL_GROW | unix.F_SEAL_SHRINK
)

func (k Kind) String() string {
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

// Valid reports whether k is one of the kinds above.
func (k Kind) Valid() bool { return k >= 1 && k <= maxKind }

// CheckFile reports whether f is of kind k, and if not, why. It does not
// put f into blocking mode.
func CheckFile(f *os.File, k Kind) error {
	if f == nil {
		return fmt.Errorf("nil file, want %v", k)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("want %v: %w", k, err)
	}
	var cerr error
	if err := rc.Control(func(fd uintptr) { cerr = Check(int(fd), k) }); err != nil {
		return fmt.Errorf("want %v: %w", k, err)
	}
	return cerr
}

// Check is CheckFile on a raw descriptor.
func Check(fd int, k Kind) error {
	if !k.Valid() {
		return fmt.Errorf("fd %d: invalid kind %v", fd, k)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("fd %d: want %v: fstat: %w", fd, k, err)
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return fmt.Errorf("fd %d: want %v: F_GETFL: %w", fd, k, err)
	}
	if fl&unix.O_PATH != 0 {
		return fmt.Errorf("fd %d: want %v, got an O_PATH descriptor", fd, k)
	}
	acc := fl & unix.O_ACCMODE
	typ := st.Mode & unix.S_IFMT
	switch k {
	case SealedMemfd, SharedRegion:
		if typ != unix.S_IFREG {
			return fmt.Errorf("fd %d: want %v, got file type %#o", fd, k, typ)
		}
		if acc != unix.O_RDONLY && acc != unix.O_RDWR {
			return fmt.Errorf("fd %d: want %v, not readable", fd, k)
		}
		seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
		if err != nil {
			return fmt.Errorf("fd %d: want %v, not a memfd (F_GET_SEALS: %w)", fd, k, err)
		}
		need := SealsImmutable
		if k == SharedRegion {
			need = SealsFixedSize
		}
		if seals&need != need {
			return fmt.Errorf("fd %d: want %v, seals %#x lack %#x", fd, k, seals, need&^seals)
		}
	case BlankMemfd:
		if typ != unix.S_IFREG {
			return fmt.Errorf("fd %d: want %v, got file type %#o", fd, k, typ)
		}
		if acc != unix.O_RDWR {
			return fmt.Errorf("fd %d: want %v, access mode %#o", fd, k, acc)
		}
		seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
		if err != nil {
			return fmt.Errorf("fd %d: want %v, not a memfd (F_GET_SEALS: %w)", fd, k, err)
		}
		if seals&SealsBlank != SealsBlank || seals&(unix.F_SEAL_WRITE|unix.F_SEAL_SEAL) != 0 {
			return fmt.Errorf("fd %d: want %v, seals %#x", fd, k, seals)
		}
	case ReadOnlyFile:
		if typ != unix.S_IFREG {
			return fmt.Errorf("fd %d: want %v, got file type %#o", fd, k, typ)
		}
		if acc != unix.O_RDONLY {
			return fmt.Errorf("fd %d: want %v, access mode %#o", fd, k, acc)
		}
	case SeccompListener:
		// Anon inodes have no file type bits.
		if typ != 0 {
			return fmt.Errorf("fd %d: want %v, got file type %#o", fd, k, typ)
		}
		var buf [64]byte
		n, err := unix.Readlink("/proc/self/fd/"+strconv.Itoa(fd), buf[:])
		if err != nil {
			return fmt.Errorf("fd %d: want %v: readlink: %w", fd, k, err)
		}
		if string(buf[:n]) != "anon_inode:seccomp notify" {
			return fmt.Errorf("fd %d: want %v, got %q", fd, k, buf[:n])
		}
	}
	return nil
}
