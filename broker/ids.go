package broker

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/policy"
)

// IDRange is a range of host ids, First to First+Count-1, each used both
// as a user id and as the group id of the same number.
type IDRange struct {
	First, Count uint32
}

// DefaultRendererIDs returns the range a broker running as root gives its
// renderers when neither Config.RendererIDs nor a "root" entry in
// /etc/subuid and /etc/subgid names one: 65,536 ids from 1,879,048,192
// (0x70000000), above the ranges systemd hands out to users, dynamic
// users and containers (up to 1,879,048,191) and below its "foreign"
// range (from 2,147,352,576).
func DefaultRendererIDs() IDRange { return IDRange{First: 0x70000000, Count: 1 << 16} }

// overflowID is the id the kernel shows for an id with no mapping in a
// user namespace ("nobody"); a renderer must never run as it.
const overflowID = 65534

func (r IDRange) String() string {
	if r.Count == 0 {
		return "no ids"
	}
	return fmt.Sprintf("%d-%d", r.First, uint64(r.First)+uint64(r.Count)-1)
}

func (r IDRange) check() error {
	last := uint64(r.First) + uint64(r.Count) - 1
	switch {
	case r.Count == 0:
		return errors.New("the range is empty")
	case r.First == 0:
		return errors.New("the range holds 0 (root)")
	case last >= 1<<32-1:
		return errors.New("the range reaches 4294967295, which means \"no id\" to the kernel")
	case uint64(r.First) <= overflowID && overflowID <= last:
		return fmt.Errorf("the range holds %d, the kernel's overflow id (nobody)", overflowID)
	}
	return nil
}

// rendererIDs returns the range to use: cfg's if set, else root's
// subordinate ids if /etc/subuid and /etc/subgid both give root the same
// range, else DefaultRendererIDs().
func rendererIDs(cfg IDRange) IDRange {
	if cfg.Count != 0 {
		return cfg
	}
	u, uerr := subordinateIDs("/etc/subuid", "root")
	g, gerr := subordinateIDs("/etc/subgid", "root")
	if uerr == nil && gerr == nil && u == g && u.check() == nil {
		return u
	}
	return DefaultRendererIDs()
}

// subordinateIDs returns user's first range in a subuid(5) or subgid(5)
// file.
func subordinateIDs(path, user string) (IDRange, error) {
	f, err := os.Open(path)
	if err != nil {
		return IDRange{}, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if !ok || name != user {
			continue
		}
		first, count, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		f, ferr := strconv.ParseUint(first, 10, 32)
		n, nerr := strconv.ParseUint(count, 10, 32)
		if ferr != nil || nerr != nil {
			continue
		}
		return IDRange{First: uint32(f), Count: uint32(n)}, nil
	}
	return IDRange{}, fmt.Errorf("%s: no entry for %s", path, user)
}

// idPool hands each live renderer a host id of its own from a range. It
// is guarded by Broker.mu.
type idPool struct {
	r    IDRange
	used map[uint32]bool
	next uint32 // offset to try first: ids are reused last
	// execReason, if not nil, is why renderers with these ids start
	// through os/exec (startExec) rather than in two vfork steps
	// (spawnVfork): an id of the range may not create their namespaces.
	// Set once, by newIDPool.
	execReason error
}

// newIDPool returns the pool of r for renderers of p. Without a cgroup
// directory (whose renderers start through os/exec anyway) and with a
// user namespace, it first tries the two-step spawn as the range's first
// id, up to the maps: a kernel that lets root create user namespaces but
// not an unprivileged id refuses it, and the pool's renderers then start
// through os/exec, as root creates their namespaces (execReason says why).
// That costs the page-table copy, not isolation.
func newIDPool(r IDRange, p *policy.Policy, cgroupDir string) *idPool {
	pool := &idPool{r: r, used: map[uint32]bool{}}
	if cgroupDir == "" && p.Namespaces.User {
		if err := probeHostIDSpawn(int(r.First), cloneFlags(p.Namespaces)); err != nil {
			pool.execReason = fmt.Errorf("an unprivileged renderer id cannot start itself in its namespaces: %w", err)
		}
	}
	return pool
}

// ErrNoRendererIDs is returned by Acquire when every id of
// Config.RendererIDs belongs to a live renderer.
var ErrNoRendererIDs = errors.New("broker: every renderer id is in use (Config.RendererIDs)")

func (p *idPool) alloc() (uint32, error) {
	for i := uint32(0); i < p.r.Count; i++ {
		off := (p.next + i) % p.r.Count
		id := p.r.First + off
		if !p.used[id] {
			p.used[id] = true
			p.next = (off + 1) % p.r.Count
			return id, nil
		}
	}
	return 0, fmt.Errorf("%w: %d ids in %v", ErrNoRendererIDs, p.r.Count, p.r)
}

func (p *idPool) release(id uint32) { delete(p.used, id) }

// openExecutable opens the renderer executable for renderers that run as
// an id of their own: they exec it through this descriptor (execveat, or
// /proc/self/fd/N through os/exec), so that only the file's own mode
// matters, not whether that id may search the directories above it (go
// test puts its binaries in a 0700 directory). The file must be executable by others.
func openExecutable(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("renderer executable: %w", &fs.PathError{Op: "open", Path: path, Err: err})
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("renderer executable %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Mode&0o001 == 0 {
		unix.Close(fd)
		return nil, fmt.Errorf("renderer executable %s has mode %#o: renderers of a root broker run as unprivileged ids of their own and need it executable by others (o+x, e.g. 0755)", path, st.Mode&0o7777)
	}
	return os.NewFile(uintptr(fd), path), nil
}
