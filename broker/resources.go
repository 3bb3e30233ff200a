package broker

import (
	"context"
	"fmt"
	"github.com/sandkit/sandkit/internal/fdkind"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/internal/control/controlpb"
	"github.com/sandkit/sandkit/ipc"
)

// maxResourceName bounds a resource name a renderer may ask for.
const maxResourceName = 1024

// onOpen answers a renderer's request for a resource of its own origin. The
// request is hostile: it must name exactly the origin and document the
// renderer is bound to (anything else kills the renderer), and the name is
// resolved beneath the origin's directory descriptor by the kernel
// (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS),
// so "..", absolute names and symlinks cannot leave it, whatever happens to
// the directory meanwhile.
func (r *Renderer) onOpen(_ context.Context, req *controlpb.OpenRequest, _ []*os.File) (*controlpb.OpenResponse, []*os.File, error) {
	r.mu.Lock()
	k := r.key
	r.mu.Unlock()
	if k == nil {
		r.kill(ExitBadMessage, "open before bind")
		return nil, nil, ipc.Errorf(ipc.CodePermissionDenied, "not bound")
	}
	if req.GetOrigin() != k.origin || req.GetDocument() != k.document {
		r.kill(ExitBadMessage, fmt.Sprintf("open named origin %q document %q, renderer serves %q %q", req.GetOrigin(), req.GetDocument(), k.origin, k.document))
		return nil, nil, ipc.Errorf(ipc.CodePermissionDenied, "wrong origin")
	}
	name := req.GetName()
	if err := checkResourceName(name); err != nil {
		return nil, nil, ipc.Errorf(ipc.CodeInvalidArgument, "%v", err)
	}
	r.b.mu.Lock()
	dir := r.b.dirs[k.origin]
	dirfd := -1
	if dir != nil {
		// Duplicate under the lock: GrantDir or Close may close dir.
		dirfd, _ = dupFD(dir)
	}
	r.b.mu.Unlock()
	if dirfd < 0 {
		return nil, nil, ipc.Errorf(ipc.CodeNotFound, "origin %q has no resources", k.origin)
	}
	defer unix.Close(dirfd)
	f, size, err := openBeneath(dirfd, name)
	if err != nil {
		return nil, nil, ipc.Errorf(ipc.CodeNotFound, "%v", err)
	}
	return &controlpb.OpenResponse{Size: uint64(size)}, []*os.File{f}, nil
}

func checkResourceName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty resource name")
	case len(name) > maxResourceName:
		return fmt.Errorf("resource name longer than %d bytes", maxResourceName)
	case strings.ContainsRune(name, 0):
		return fmt.Errorf("resource name contains NUL")
	case path.IsAbs(name):
		return fmt.Errorf("resource name %q is absolute", name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return fmt.Errorf("resource name %q leaves its directory", name)
		}
	}
	return nil
}

// openBeneath opens name read-only beneath dirfd and checks it is a
// regular file.
func openBeneath(dirfd int, name string) (*os.File, int64, error) {
	how := unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOCTTY | unix.O_NONBLOCK,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	fd, err := unix.Openat2(dirfd, name, &how)
	if err != nil {
		return nil, 0, fmt.Errorf("open %q: %w", name, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, 0, fmt.Errorf("stat %q: %w", name, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, 0, fmt.Errorf("%q is not a regular file", name)
	}
	// O_NONBLOCK only kept a FIFO from blocking the open; clear it.
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, 0, err
	}
	return os.NewFile(uintptr(fd), name), st.Size, nil
}

// onAlloc hands the renderer a memfd of the size it asks for, within its
// shared-memory budget (Limits.SharedMemory). The renderer cannot make
// shared memory of its own (memfd_create is not in its allowlist): a
// memfd's pages are charged to no rlimit unless mapped, so one the renderer
// filled and kept open would escape its memory limit.
//
// Each allocation is charged in whole pages, at least one (what the kernel
// spends), and stays charged until the memfd comes back sealed against any
// change as an ipc.SealedMemfd in a reply to Call (see credit). A region,
// a stream or a memfd the renderer keeps is charged for the renderer's
// life. So the renderer holds at most the budget in memfds it has not
// given back, plus those it gave back and kept a descriptor of, at most
// Limits.OpenFiles of them, each no larger than the budget.
//
// The memfd's size is sealed (F_SEAL_GROW|F_SEAL_SHRINK) and nothing else,
// so the renderer can fill it and then seal it further: against writing
// for an ipc.SealedMemfd result, against more seals for an
// ipc.SharedRegion.
func (r *Renderer) onAlloc(_ context.Context, req *controlpb.AllocRequest, _ []*os.File) (*controlpb.AllocResponse, []*os.File, error) {
	size := req.GetSize()
	if size > maxAlloc {
		return nil, nil, ipc.Errorf(ipc.CodeInvalidArgument, "shared memory of %d bytes: at most %d at once", size, uint64(maxAlloc))
	}
	page := uint64(os.Getpagesize())
	charge := max((size+page-1)/page*page, page)
	budget := r.b.policy.Limits.SharedMemory
	r.mu.Lock()
	if charge > budget-min(r.shared, budget) {
		used := r.shared
		r.mu.Unlock()
		return nil, nil, ipc.Errorf(ipc.CodeResourceExhausted, "shared memory of %d bytes: %d of the renderer's %d bytes (Limits.SharedMemory) in use", size, used, budget)
	}
	r.shared += charge
	r.mu.Unlock()
	f, id, err := blankMemfd(int64(size))
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.shared -= charge // nothing reached the renderer
		return nil, nil, ipc.Errorf(ipc.CodeUnavailable, "shared memory of %d bytes: %v", size, err)
	}
	if r.allocs == nil {
		r.allocs = make(map[fileID]uint64)
	}
	r.allocs[id] = charge
	return &controlpb.AllocResponse{}, []*os.File{f}, nil
}

// credit gives back the charge of each memfd of ours that the renderer
// returned sealed (kinds[i] == ipc.SealedMemfd, which ipc has checked): it
// can change neither its bytes nor its size any more, and whatever the
// renderer still holds of it is the memory the caller now holds. Each
// memfd is credited once.
func (r *Renderer) credit(fds []*os.File, kinds []ipc.FDKind) {
	for i, f := range fds {
		if i >= len(kinds) || kinds[i] != ipc.SealedMemfd {
			continue
		}
		id, err := fileIDOf(f)
		if err != nil {
			continue
		}
		r.mu.Lock()
		if charge, ok := r.allocs[id]; ok {
			delete(r.allocs, id)
			r.shared -= charge
		}
		r.mu.Unlock()
	}
}

// maxAlloc bounds one allocation (1 GiB), whatever the budget.
const maxAlloc = 1 << 30

// fileID names a file by device and inode.
type fileID struct{ dev, ino uint64 }

func fileIDOf(f *os.File) (fileID, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return fileID{}, err
	}
	var st unix.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil {
		return fileID{}, err
	}
	if serr != nil {
		return fileID{}, serr
	}
	return fileID{dev: st.Dev, ino: st.Ino}, nil
}

// blankMemfd makes a memfd of size bytes, its size sealed.
func blankMemfd(size int64) (*os.File, fileID, error) {
	fd, err := unix.MemfdCreate("sandkit-shm", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fileID{}, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "memfd:sandkit-shm")
	if err := unix.Ftruncate(fd, size); err != nil {
		f.Close()
		return nil, fileID{}, fmt.Errorf("ftruncate: %w", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, fdkind.SealsBlank); err != nil {
		f.Close()
		return nil, fileID{}, fmt.Errorf("seal: %w", err)
	}
	id, err := fileIDOf(f)
	if err != nil {
		f.Close()
		return nil, fileID{}, fmt.Errorf("fstat: %w", err)
	}
	return f, id, nil
}
