package broker

import (
	"errors"
	"fmt"
	"github.com/sandkit/sandkit/internal/fdkind"
	"io"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/sandkit/sandkit/ipc"
)

// procFDDir is where the broker finds its own descriptors by number to
// open them again. /proc/self and /proc/thread-self name the same table:
// the Go runtime never unshares it between threads.
const procFDDir = "/proc/self/fd"

// ErrNotSameFile is wrapped by the error of a call whose descriptor,
// opened again for the renderer, turned out to be another file.
var ErrNotSameFile = errors.New("reopened descriptor is not the same file")

// ownDescriptions returns fds as they go to a renderer: every descriptor
// of a regular-file kind (ipc.ReadOnlyFile, ipc.SealedMemfd,
// ipc.SharedRegion) is replaced by a fresh open of the same file, so the
// renderer never shares the caller's open file description. A shared
// description would let the renderer move the caller's file offset with
// lseek and change its status flags (O_NONBLOCK, O_APPEND) with F_SETFL.
// own lists the descriptors it opened; the caller closes them once the
// call has returned. A descriptor that does not fit its kind is passed
// on unchanged, for ipc.Call to refuse as it always has (nothing is sent).
func ownDescriptions[Req, Resp proto.Message](m *ipc.Method[Req, Resp], fds []*os.File) (out, own []*os.File, err error) {
	if len(fds) == 0 {
		return fds, nil, nil
	}
	spec := m.Spec()
	if len(fds) != len(spec.RequestFDs) {
		return fds, nil, nil // ipc.Call reports ErrSpec
	}
	out, own, err = reopenAll(spec.RequestFDs, fds, procFDDir)
	if err != nil {
		return nil, nil, fmt.Errorf("broker: %s: %w", spec.Name, err)
	}
	return out, own, nil
}

func reopenAll(kinds []ipc.FDKind, fds []*os.File, fdDir string) (out, own []*os.File, err error) {
	out = make([]*os.File, len(fds))
	for i, f := range fds {
		out[i] = f
		switch kinds[i] {
		case ipc.ReadOnlyFile, ipc.SealedMemfd, ipc.SharedRegion:
		default:
			continue
		}
		if fdkind.CheckFile(f, fdkind.Kind(kinds[i])) != nil {
			continue
		}
		fresh, err := reopen(f, kinds[i], fdDir)
		if err != nil {
			closeOwn(own)
			return nil, nil, fmt.Errorf("request fd %d (%v): %w", i, kinds[i], err)
		}
		out[i] = fresh
		own = append(own, fresh)
	}
	return out, own, nil
}

// reopen opens the file f refers to again, through its magic link in
// fdDir: the only way to a new open file description of an arbitrary
// regular file (openat2 has no "reopen this descriptor"; the link is what
// it would resolve to). The link resolves to f's own file, not to a path
// that could have been swapped meanwhile; that the result has f's device
// and inode is checked all the same, so a mount over /proc cannot
// substitute another file. The new description is read-only, except for
// a shared region the caller holds writable (the renderer may be meant to
// write into it), and starts at f's current offset, as a shared one would
// have; no status flag of f's is copied.
func reopen(f *os.File, k ipc.FDKind, fdDir string) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	fresh := -1
	var rerr error
	if err := rc.Control(func(fd uintptr) { fresh, rerr = reopenFD(int(fd), k, fdDir) }); err != nil {
		return nil, err
	}
	if rerr != nil {
		return nil, rerr
	}
	return os.NewFile(uintptr(fresh), f.Name()), nil
}

func reopenFD(fd int, k ipc.FDKind, fdDir string) (int, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return -1, fmt.Errorf("fstat: %w", err)
	}
	mode := unix.O_RDONLY
	if k == ipc.SharedRegion {
		fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
		if err != nil {
			return -1, fmt.Errorf("F_GETFL: %w", err)
		}
		mode = fl & unix.O_ACCMODE
	}
	off, err := unix.Seek(fd, 0, io.SeekCurrent)
	if err != nil {
		return -1, fmt.Errorf("lseek: %w", err)
	}
	link := fdDir + "/" + strconv.Itoa(fd)
	fresh, err := unix.Open(link, mode|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return -1, fmt.Errorf("a renderer gets a fresh open of each file, through %s, which is unavailable (is /proc mounted?): %w", link, err)
		}
		return -1, fmt.Errorf("open %s for a fresh file description: %w", link, err)
	}
	var got unix.Stat_t
	if err := unix.Fstat(fresh, &got); err != nil {
		unix.Close(fresh)
		return -1, fmt.Errorf("fstat %s: %w", link, err)
	}
	if got.Dev != st.Dev || got.Ino != st.Ino {
		unix.Close(fresh)
		return -1, fmt.Errorf("%w: %s is device %d inode %d, the descriptor device %d inode %d",
			ErrNotSameFile, link, got.Dev, got.Ino, st.Dev, st.Ino)
	}
	if off != 0 {
		if _, err := unix.Seek(fresh, off, io.SeekStart); err != nil {
			unix.Close(fresh)
			return -1, fmt.Errorf("lseek %s: %w", link, err)
		}
	}
	return fresh, nil
}

// closeOwn closes the descriptors ownDescriptions opened.
func closeOwn(own []*os.File) {
	for _, f := range own {
		f.Close()
	}
}
