package broker

import (
	"context"
	"fmt"
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
