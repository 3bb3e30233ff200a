package broker

import (
	"github.com/sandkit/sandkit/internal/fdkind"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/ipc"
)

func memfd(t *testing.T, seals int) *os.File {
	t.Helper()
	fd, err := unix.MemfdCreate("test", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	require.NoError(t, err)
	f := os.NewFile(uintptr(fd), "memfd")
	t.Cleanup(func() { f.Close() })
	_, err = f.Write([]byte("0123456789"))
	require.NoError(t, err)
	_, err = unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, seals)
	require.NoError(t, err)
	return f
}

func fileAt(t *testing.T, flag int) *os.File {
	t.Helper()
	path := filepath.Join(t.TempDir(), "f")
	require.NoError(t, os.WriteFile(path, []byte("0123456789"), 0o644))
	f, err := os.OpenFile(path, flag, 0)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return f
}

// TestReopenGivesAFreshDescription checks each regular-file kind: the
// copy is the same inode, with its own offset (starting at the
// original's) and the access mode the kind calls for; what does not fit
// its kind is passed on untouched for ipc.Call to refuse.
func TestReopenGivesAFreshDescription(t *testing.T) {
	for _, tt := range []struct {
		name     string
		file     func(*testing.T) *os.File
		kind     ipc.FDKind
		wantMode int // -1: passed on unchanged
	}{
		{"read-only file", func(t *testing.T) *os.File { return fileAt(t, os.O_RDONLY) }, ipc.ReadOnlyFile, unix.O_RDONLY},
		{"writable file as read-only", func(t *testing.T) *os.File { return fileAt(t, os.O_RDWR) }, ipc.ReadOnlyFile, -1},
		{"sealed memfd", func(t *testing.T) *os.File { return memfd(t, fdkind.SealsImmutable) }, ipc.SealedMemfd, unix.O_RDONLY},
		{"unsealed memfd as sealed", func(t *testing.T) *os.File { return memfd(t, 0) }, ipc.SealedMemfd, -1},
		{"shared region", func(t *testing.T) *os.File { return memfd(t, fdkind.SealsFixedSize) }, ipc.SharedRegion, unix.O_RDWR},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.file(t)
			_, err := f.Seek(3, io.SeekStart)
			require.NoError(t, err)
			out, own, err := reopenAll([]ipc.FDKind{tt.kind}, []*os.File{f}, procFDDir)
			require.NoError(t, err)
			defer closeOwn(own)
			if tt.wantMode < 0 {
				assert.Same(t, f, out[0])
				assert.Empty(t, own)
				return
			}
			require.Len(t, own, 1)
			require.Same(t, own[0], out[0])
			var a, b unix.Stat_t
			require.NoError(t, unix.Fstat(int(f.Fd()), &a))
			require.NoError(t, unix.Fstat(int(out[0].Fd()), &b))
			assert.Equal(t, [2]uint64{a.Dev, a.Ino}, [2]uint64{b.Dev, b.Ino})
			fl, err := unix.FcntlInt(out[0].Fd(), unix.F_GETFL, 0)
			require.NoError(t, err)
			assert.Equal(t, tt.wantMode, fl&unix.O_ACCMODE)
			off, err := out[0].Seek(0, io.SeekCurrent)
			require.NoError(t, err)
			assert.Equal(t, int64(3), off, "the copy starts where the original was")
			_, err = out[0].Seek(0, io.SeekEnd)
			require.NoError(t, err)
			off, err = f.Seek(0, io.SeekCurrent)
			require.NoError(t, err)
			assert.Equal(t, int64(3), off, "the original moved with the copy")
		})
	}
}

// TestReopenFailsClosed: without /proc there is no fresh description to
// hand over, and a link that leads to another file is refused; either
// way the call fails and nothing is handed over.
func TestReopenFailsClosed(t *testing.T) {
	f := fileAt(t, os.O_RDONLY)
	_, _, err := reopenAll([]ipc.FDKind{ipc.ReadOnlyFile}, []*os.File{f}, filepath.Join(t.TempDir(), "no-proc"))
	require.ErrorIs(t, err, unix.ENOENT)
	assert.ErrorContains(t, err, "is /proc mounted?")

	// A directory posing as /proc/self/fd whose entry for f's number is
	// another file.
	fake := t.TempDir()
	other := filepath.Join(fake, strconv.Itoa(int(f.Fd())))
	require.NoError(t, os.WriteFile(other, []byte("0123456789"), 0o644))
	out, own, err := reopenAll([]ipc.FDKind{ipc.ReadOnlyFile}, []*os.File{f}, fake)
	require.ErrorIs(t, err, ErrNotSameFile)
	assert.Nil(t, out)
	assert.Nil(t, own)
}
