// Package shm moves bulk data between the broker and a renderer through
// shared memory, such that the receiver can validate bytes and then use them
// knowing the sender cannot change them any more.
//
// There are three mechanisms, for three cost profiles:
//
// Sealed memfds (Create, Writer, Seal, Map, Mapping) are zero-copy and
// immutable: the producer writes straight into a fresh memfd mapping, unmaps
// it and seals it (F_SEAL_WRITE|F_SEAL_GROW|F_SEAL_SHRINK|F_SEAL_SEAL), then
// sends the fd. The receiver checks the kind (ipc.SealedMemfd), the seals and
// the exact size, and maps it read-only: the kernel guarantees that nobody
// can write, truncate or grow it again, so bytes validated in place stay
// valid. The price is fresh pages for every transfer: a memfd cannot be
// unsealed and reused, and first-touching new pages is expensive (about 6 ms
// for 8 MiB on the 2-core development VM, see docs/ipc.md). Use it for
// results that are kept, shared or are small.
//
// Shared regions (NewRegion, Region, OpenRegion, RegionReader) are reused
// across transfers: one memfd per connection, pre-faulted once, whose size
// is sealed (F_SEAL_GROW|F_SEAL_SHRINK|F_SEAL_SEAL, so the receiver's mapping
// can never SIGBUS on truncation) but whose bytes the producer keeps writing.
// Because the producer can change the bytes at any time, the receiver must
// fetch them exactly once: RegionReader.CopyOut copies a range into the
// receiver's own (reused) buffer, and the receiver validates and uses only
// that copy. That costs one memcpy instead of page allocation. Use it when
// the producer can build its result in place (a page rendered straight
// into the region).
//
// Streams (NewStream, StreamWriter, OpenStream, StreamReader) are a byte
// ring in a shared region: the producer writes its result into the ring
// while the receiver copies it out, once, chunk by chunk, and validates
// each copy as it arrives, the way the two ends of a socket overlap but
// without the kernel's two copies. The ring is small (1 MiB serves
// multi-megabyte results) and stays in the CPU's caches, and it bounds the
// shared memory a renderer needs whatever the size of its results. It is
// the fast path for large results that the producer holds in its own
// memory.
//
// In every case the receiver never validates bytes the producer can still
// change: there is no double fetch and no check-then-use window.
package shm

import (
	"errors"
	"fmt"
	"github.com/sandkit/sandkit/internal/fdkind"
	"github.com/sandkit/sandkit/ipc"
	"os"

	"golang.org/x/sys/unix"
)

// maxSize bounds buffer sizes (1 GiB): large enough for any result, small
// enough that a size read off the wire cannot make us map absurd amounts.
const maxSize = 1 << 30

func checkSize(size int) error {
	if size < 0 || size > maxSize {
		return fmt.Errorf("shm: invalid size %d", size)
	}
	return nil
}

func newMemfd(name string, size int) (*os.File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("shm: memfd_create: %w", err)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("shm: ftruncate: %w", err)
	}
	return os.NewFile(uintptr(fd), "memfd:"+name), nil
}

// withFD runs fn on f's descriptor without f.Fd() (which would change the
// blocking mode of pollable files), holding a reference so it stays valid.
func withFD(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// Writer is the producer's side of a sealed memfd being filled.
type Writer struct {
	f   *os.File
	mem []byte
}

// Create makes a memfd of exactly size bytes, mapped read-write, for the
// producer to fill through Bytes. A renderer cannot create memfds: it
// asks the broker for one (renderer.Session.Alloc) and uses CreateIn.
func Create(name string, size int) (*Writer, error) {
	if err := checkSize(size); err != nil {
		return nil, err
	}
	f, err := newMemfd(name, size)
	if err != nil {
		return nil, err
	}
	return writerFor(f, size)
}

// CreateIn is Create in a memfd someone else made: f must be an
// ipc.BlankMemfd of exactly size bytes. The Writer takes ownership of f,
// also when it fails.
func CreateIn(f *os.File, size int) (*Writer, error) {
	if err := checkBlank(f, size); err != nil {
		f.Close()
		return nil, fmt.Errorf("shm: CreateIn: %w", err)
	}
	return writerFor(f, size)
}

// checkBlank checks that f is an ipc.BlankMemfd of exactly size bytes.
func checkBlank(f *os.File, size int) error {
	if err := checkSize(size); err != nil {
		return err
	}
	if err := checkKind(f, fdkind.BlankMemfd); err != nil {
		return err
	}
	return withFD(f, func(fd int) error { return checkFileSize(fd, size) })
}

// writerFor maps f, a memfd of size bytes, read-write; it closes f on
// failure.
func writerFor(f *os.File, size int) (*Writer, error) {
	w := &Writer{f: f}
	var err error
	if size > 0 {
		err = withFD(f, func(fd int) error {
			w.mem, err = unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
			return err
		})
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("shm: mmap: %w", err)
		}
	}
	return w, nil
}

// Bytes returns the writable mapping. It is invalid after Seal or Close.
func (w *Writer) Bytes() []byte { return w.mem }

// Seal unmaps the writable mapping, seals the memfd against any further
// change (writes, resizing, more seal changes) and returns it, ready to be
// sent as an ipc.SealedMemfd. The caller owns the file. The Writer is
// unusable afterwards.
func (w *Writer) Seal() (*os.File, error) {
	if w.f == nil {
		return nil, errors.New("shm: Seal on a closed or sealed Writer")
	}
	f := w.f
	w.f = nil
	if w.mem != nil {
		// F_SEAL_WRITE is refused (EBUSY) while writable shared
		// mappings exist, so this must come first.
		err := unix.Munmap(w.mem)
		w.mem = nil
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("shm: munmap: %w", err)
		}
	}
	err := withFD(f, func(fd int) error {
		_, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, fdkind.SealsImmutable)
		return err
	})
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("shm: seal: %w", err)
	}
	return f, nil
}

// Close discards an unsealed Writer. It is a no-op after Seal.
func (w *Writer) Close() error {
	var err error
	if w.mem != nil {
		err = unix.Munmap(w.mem)
		w.mem = nil
	}
	if w.f != nil {
		if cerr := w.f.Close(); err == nil {
			err = cerr
		}
		w.f = nil
	}
	return err
}

// Mapping is a read-only view of a sealed memfd.
type Mapping struct {
	mem []byte
}

// checkFileSize reports whether the file behind fd is exactly want bytes.
func checkFileSize(fd int, want int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Size != int64(want) {
		return fmt.Errorf("size %d, want %d", st.Size, want)
	}
	return nil
}

// Map checks that f is an ipc.SealedMemfd of exactly size bytes and maps it
// read-only (PROT_READ, MAP_SHARED). The checks cannot be invalidated after
// the fact: seals can only ever be added, and the sealed size and bytes are
// fixed. Map does not take ownership of f; the mapping stays valid after f
// is closed.
func Map(f *os.File, size int) (*Mapping, error) {
	if err := checkSize(size); err != nil {
		return nil, err
	}
	if err := checkKind(f, fdkind.SealedMemfd); err != nil {
		return nil, fmt.Errorf("shm: Map: %w", err)
	}
	m := &Mapping{}
	err := withFD(f, func(fd int) error {
		err := checkFileSize(fd, size)
		if err != nil {
			return err
		}
		if size == 0 {
			return nil
		}
		m.mem, err = unix.Mmap(fd, 0, size, unix.PROT_READ, unix.MAP_SHARED)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("shm: Map: %w", err)
	}
	return m, nil
}

// Bytes returns the read-only mapping; writing to it faults. It is invalid
// after Close.
func (m *Mapping) Bytes() []byte { return m.mem }

// Close unmaps. It is idempotent.
func (m *Mapping) Close() error {
	if m.mem == nil {
		return nil
	}
	err := unix.Munmap(m.mem)
	m.mem = nil
	return err
}

// Region is the producer's side of a reusable shared region.
type Region struct {
	f   *os.File
	mem []byte
}

// NewRegion makes a memfd of exactly size bytes, seals its size
// (fdkind.SealsFixedSize) and maps it read-write, pre-faulting every page
// once (MAP_POPULATE) so that later transfers do not pay for page faults.
func NewRegion(name string, size int) (*Region, error) {
	if err := checkSize(size); err != nil {
		return nil, err
	}
	if size == 0 {
		return nil, errors.New("shm: empty region")
	}
	f, err := newMemfd(name, size)
	if err != nil {
		return nil, err
	}
	return regionFor(f, size)
}

// NewRegionIn is NewRegion in a memfd someone else made: f must be an
// ipc.BlankMemfd of exactly size bytes (renderer.Session.Alloc). The
// Region takes ownership of f, also when it fails.
func NewRegionIn(f *os.File, size int) (*Region, error) {
	if size == 0 {
		f.Close()
		return nil, errors.New("shm: empty region")
	}
	if err := checkBlank(f, size); err != nil {
		f.Close()
		return nil, fmt.Errorf("shm: NewRegionIn: %w", err)
	}
	return regionFor(f, size)
}

// regionFor seals f's size and maps it; it closes f on failure.
func regionFor(f *os.File, size int) (*Region, error) {
	r := &Region{f: f}
	err := withFD(f, func(fd int) error {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, fdkind.SealsFixedSize); err != nil {
			return fmt.Errorf("seal: %w", err)
		}
		var err error
		r.mem, err = unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		return err
	})
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("shm: region: %w", err)
	}
	return r, nil
}

// Bytes returns the writable mapping. It is invalid after Close.
func (r *Region) Bytes() []byte { return r.mem }

// File returns the region's memfd, to send as an ipc.SharedRegion. It stays
// owned by the Region.
func (r *Region) File() *os.File { return r.f }

// Share returns a new descriptor for the region's memfd (F_DUPFD_CLOEXEC),
// to send as an ipc.SharedRegion. The caller owns it: a handler that
// answers with it leaves the closing to ipc, and the Region keeps its own.
func (r *Region) Share() (*os.File, error) {
	var nfd int
	err := withFD(r.f, func(fd int) error {
		var err error
		nfd, err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("shm: Share: %w", err)
	}
	return os.NewFile(uintptr(nfd), r.f.Name()), nil
}

// Close unmaps and closes the region. Receivers keep their own mappings.
func (r *Region) Close() error {
	var err error
	if r.mem != nil {
		err = unix.Munmap(r.mem)
		r.mem = nil
	}
	if r.f != nil {
		if cerr := r.f.Close(); err == nil {
			err = cerr
		}
		r.f = nil
	}
	return err
}

// RegionReader is the receiver's read-only view of a peer's Region.
type RegionReader struct {
	mem []byte
}

// OpenRegion checks that f is an ipc.SharedRegion of exactly size bytes and
// maps it read-only, pre-faulted. It does not take ownership of f; the
// mapping stays valid after f is closed.
func OpenRegion(f *os.File, size int) (*RegionReader, error) {
	if err := checkSize(size); err != nil {
		return nil, err
	}
	if size == 0 {
		return nil, errors.New("shm: empty region")
	}
	if err := checkKind(f, fdkind.SharedRegion); err != nil {
		return nil, fmt.Errorf("shm: OpenRegion: %w", err)
	}
	r := &RegionReader{}
	err := withFD(f, func(fd int) error {
		err := checkFileSize(fd, size)
		if err != nil {
			return err
		}
		r.mem, err = unix.Mmap(fd, 0, size, unix.PROT_READ, unix.MAP_SHARED|unix.MAP_POPULATE)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("shm: OpenRegion: %w", err)
	}
	return r, nil
}

// Size returns the region's size.
func (r *RegionReader) Size() int { return len(r.mem) }

// CopyOut copies region bytes [off, off+len(dst)) into dst, once. The
// producer may be changing the region concurrently, so dst may hold a torn
// mix of old and new bytes: validate dst, use only dst, and never read the
// region again for the same data. A memory fault while copying (which the
// size seals should make impossible) is returned as an error instead of
// crashing the receiver.
func (r *RegionReader) CopyOut(dst []byte, off int) error {
	if off < 0 || off > len(r.mem) || len(dst) > len(r.mem)-off {
		return fmt.Errorf("shm: CopyOut [%d, %d+%d) outside region of %d bytes", off, off, len(dst), len(r.mem))
	}
	return copyOut(dst, r.mem[off:off+len(dst)])
}

// Close unmaps. It is idempotent.
func (r *RegionReader) Close() error {
	if r.mem == nil {
		return nil
	}
	err := unix.Munmap(r.mem)
	r.mem = nil
	return err
}

// checkKind reports whether f is of kind k: an *ipc.ProtocolError with
// ipc.ReasonFDKind if not, as for a descriptor ipc received.
func checkKind(f *os.File, k fdkind.Kind) error {
	if err := fdkind.CheckFile(f, k); err != nil {
		return &ipc.ProtocolError{Reason: ipc.ReasonFDKind, Detail: err.Error()}
	}
	return nil
}
