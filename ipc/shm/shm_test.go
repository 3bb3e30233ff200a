package shm_test

import (
	"errors"
	"github.com/sandkit/sandkit/internal/fdkind"
	"os"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/ipc"
	"github.com/sandkit/sandkit/ipc/shm"
)

func rawFD(t *testing.T, f *os.File) int {
	t.Helper()
	rc, err := f.SyscallConn()
	require.NoError(t, err)
	var fd int
	require.NoError(t, rc.Control(func(u uintptr) { fd = int(u) }))
	return fd
}

func TestSealedRoundTrip(t *testing.T) {
	w, err := shm.Create("test", 10000)
	require.NoError(t, err)
	copy(w.Bytes(), "hello sealed")
	f, err := w.Seal()
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, fdkind.CheckFile(f, fdkind.SealedMemfd))
	_, err = w.Seal()
	require.Error(t, err)
	require.NoError(t, w.Close())

	m, err := shm.Map(f, 10000)
	require.NoError(t, err)
	require.Equal(t, "hello sealed", string(m.Bytes()[:12]))
	require.NoError(t, m.Close())
	require.NoError(t, m.Close())

	_, err = shm.Map(f, 9999)
	require.Error(t, err)
	_, err = shm.Map(f, 10001)
	require.Error(t, err)
}

// The sender keeps its fd after sending; the seals must stop every way it
// could change the bytes or the size, with exactly EPERM.
func TestSenderCannotModifySealed(t *testing.T) {
	w, err := shm.Create("test", 8192)
	require.NoError(t, err)
	copy(w.Bytes(), "validated")
	f, err := w.Seal()
	require.NoError(t, err)
	defer f.Close()
	fd := rawFD(t, f)

	m, err := shm.Map(f, 8192) // the receiver's view
	require.NoError(t, err)
	defer m.Close()

	check := func(name string, err error) {
		t.Helper()
		require.ErrorIs(t, err, unix.EPERM, name)
	}
	_, err = unix.Write(fd, []byte("X"))
	check("write", err)
	_, err = unix.Pwrite(fd, []byte("X"), 0)
	check("pwrite", err)
	check("ftruncate shrink", unix.Ftruncate(fd, 10))
	check("ftruncate grow", unix.Ftruncate(fd, 1<<20))
	_, err = unix.Mmap(fd, 0, 8192, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	check("mmap PROT_WRITE MAP_SHARED", err)
	check("fallocate punch hole", unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, 4096))
	check("fallocate grow", unix.Fallocate(fd, 0, 0, 1<<20))
	_, err = unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_FUTURE_WRITE)
	check("F_ADD_SEALS after F_SEAL_SEAL", err)

	// A new read-write open of the same inode is refused writes too.
	rw, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(fd), os.O_RDWR, 0)
	require.NoError(t, err)
	defer rw.Close()
	_, err = rw.WriteAt([]byte("X"), 0)
	check("write through reopened fd", errors.Unwrap(err))

	require.Equal(t, "validated", string(m.Bytes()[:9]))
}

func TestRegion(t *testing.T) {
	r, err := shm.NewRegion("region", 1<<16)
	require.NoError(t, err)
	defer r.Close()
	require.NoError(t, fdkind.CheckFile(r.File(), fdkind.SharedRegion))
	require.Error(t, fdkind.CheckFile(r.File(), fdkind.SealedMemfd), "a region is not immutable")
	copy(r.Bytes()[100:], "first")

	rr, err := shm.OpenRegion(r.File(), 1<<16)
	require.NoError(t, err)
	defer rr.Close()
	require.Equal(t, 1<<16, rr.Size())
	dst := make([]byte, 5)
	require.NoError(t, rr.CopyOut(dst, 100))
	require.Equal(t, "first", string(dst))
	// The producer changes the region: the receiver's copy does not change.
	copy(r.Bytes()[100:], "later")
	require.Equal(t, "first", string(dst))
	require.NoError(t, rr.CopyOut(dst, 100))
	require.Equal(t, "later", string(dst))

	require.Error(t, rr.CopyOut(dst, -1))
	require.Error(t, rr.CopyOut(dst, 1<<16-4))
	require.Error(t, rr.CopyOut(make([]byte, 1<<17), 0))
	require.NoError(t, rr.CopyOut(nil, 1<<16))

	// The producer cannot resize the region under the receiver's mapping.
	fd := rawFD(t, r.File())
	require.ErrorIs(t, unix.Ftruncate(fd, 10), unix.EPERM)

	_, err = shm.OpenRegion(r.File(), 1<<15)
	require.Error(t, err)
}

func TestRejectsWrongKinds(t *testing.T) {
	fd, err := unix.MemfdCreate("unsealed", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	require.NoError(t, err)
	require.NoError(t, unix.Ftruncate(fd, 4096))
	f := os.NewFile(uintptr(fd), "unsealed")
	defer f.Close()
	_, err = shm.Map(f, 4096)
	require.ErrorIs(t, err, ipc.ErrProtocol)
	_, err = shm.OpenRegion(f, 4096)
	require.ErrorIs(t, err, ipc.ErrProtocol)
	_, err = shm.Create("neg", -1)
	require.Error(t, err)
}

func TestEmpty(t *testing.T) {
	w, err := shm.Create("empty", 0)
	require.NoError(t, err)
	require.Empty(t, w.Bytes())
	f, err := w.Seal()
	require.NoError(t, err)
	defer f.Close()
	m, err := shm.Map(f, 0)
	require.NoError(t, err)
	require.Empty(t, m.Bytes())
	require.NoError(t, m.Close())
}

// blank makes what a broker hands a renderer: a memfd of size bytes whose
// size is sealed and nothing else (ipc.BlankMemfd), plus extra seals.
func blank(t *testing.T, size int, extra int) *os.File {
	t.Helper()
	fd, err := unix.MemfdCreate("blank", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	require.NoError(t, err)
	require.NoError(t, unix.Ftruncate(fd, int64(size)))
	_, err = unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, fdkind.SealsBlank|extra)
	require.NoError(t, err)
	return os.NewFile(uintptr(fd), "blank")
}

// TestIn fills memfds made by someone else, as a renderer does with the
// broker's: each constructor checks the kind and the exact size, and the
// result is what the receiver expects (a sealed memfd, a region, a
// stream).
func TestIn(t *testing.T) {
	const size = 3 * 4096
	t.Run("CreateIn", func(t *testing.T) {
		w, err := shm.CreateIn(blank(t, size, 0), size)
		require.NoError(t, err)
		copy(w.Bytes(), "filled in place")
		f, err := w.Seal()
		require.NoError(t, err)
		defer f.Close()
		m, err := shm.Map(f, size)
		require.NoError(t, err)
		require.Equal(t, "filled in place", string(m.Bytes()[:15]))
		require.NoError(t, m.Close())
	})
	t.Run("NewRegionIn", func(t *testing.T) {
		r, err := shm.NewRegionIn(blank(t, size, 0), size)
		require.NoError(t, err)
		defer r.Close()
		rr, err := shm.OpenRegion(r.File(), size)
		require.NoError(t, err)
		require.NoError(t, rr.Close())
	})
	t.Run("NewStreamIn", func(t *testing.T) {
		capacity := 2 * os.Getpagesize()
		w, err := shm.NewStreamIn(blank(t, shm.StreamSize(capacity), 0), capacity)
		require.NoError(t, err)
		defer w.Close()
		r, err := shm.OpenStream(w.File(), capacity)
		require.NoError(t, err)
		require.NoError(t, r.Close())
	})
	for name, tc := range map[string]struct {
		extra, size int
	}{
		"wrong size":     {0, size - 1},
		"already sealed": {unix.F_SEAL_SEAL, size},
		"write sealed":   {unix.F_SEAL_WRITE, size},
		"negative size":  {0, -1},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := shm.CreateIn(blank(t, size, tc.extra), tc.size)
			require.Error(t, err)
			_, err = shm.NewRegionIn(blank(t, size, tc.extra), tc.size)
			require.Error(t, err)
		})
	}
}
