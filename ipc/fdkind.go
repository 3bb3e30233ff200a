package ipc

import (
	"fmt"
	"os"

	"github.com/sandkit/sandkit/internal/fdkind"
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
)

// The kinds are fdkind's, numbered alike (TestFDKindsMatch).
func (k FDKind) kind() fdkind.Kind { return fdkind.Kind(k) }

func (k FDKind) String() string { return k.kind().String() }

func (k FDKind) valid() bool { return k.kind().Valid() }

// checkFile reports whether f is of kind k: a *ProtocolError with
// ReasonFDKind if not. It does not put f into blocking mode.
func checkFile(f *os.File, k FDKind) error {
	if err := fdkind.CheckFile(f, k.kind()); err != nil {
		return violation(ReasonFDKind, "%v", err)
	}
	return nil
}

// checkFD reports whether the descriptor fd is of kind k.
func checkFD(fd int, k FDKind) *ProtocolError {
	if err := fdkind.Check(fd, k.kind()); err != nil {
		return violation(ReasonFDKind, "%v", err)
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
