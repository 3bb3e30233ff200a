package shm_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/ipc"
	"github.com/sandkit/sandkit/ipc/shm"
)

// Offsets of the stream's control words, as a peer that maps the memfd
// itself sees them (see the layout in stream.go); the ring follows the
// control page.
const (
	ctlWritten = 0
	ctlRead    = 64
)

var dataOffset = shm.StreamSize(0)

func newStreamPair(t *testing.T, capacity int) (*shm.StreamWriter, *shm.StreamReader) {
	t.Helper()
	w, err := shm.NewStream("test", capacity)
	require.NoError(t, err)
	t.Cleanup(func() { w.Close() })
	f, err := w.Share()
	require.NoError(t, err)
	defer f.Close()
	r, err := shm.OpenStream(f, capacity)
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	return w, r
}

// peerView maps a stream's whole memfd read-write, the way a hostile peer
// could, to corrupt the control words.
func peerView(t *testing.T, w *shm.StreamWriter, capacity int) []byte {
	t.Helper()
	mem, err := unix.Mmap(rawFD(t, w.File()), 0, dataOffset+capacity, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Munmap(mem) })
	return mem
}

func word(mem []byte, off int) *atomic.Uint64 {
	return (*atomic.Uint64)(unsafe.Pointer(&mem[off]))
}

func TestStreamDeliversBytesInOrder(t *testing.T) {
	for _, tc := range []struct {
		name      string
		capacity  int
		total     int
		maxWrite  int
		maxRead   int
		readAfter bool // write everything first (capacity permitting)
	}{
		{name: "one page, small pieces", capacity: 4096, total: 100_000, maxWrite: 700, maxRead: 300},
		{name: "one page, pieces larger than the ring", capacity: 4096, total: 100_000, maxWrite: 10_000, maxRead: 9_000},
		{name: "64 KiB ring", capacity: 64 << 10, total: 3 << 20, maxWrite: 200 << 10, maxRead: 50 << 10},
		{name: "1 MiB ring, 8 MiB", capacity: 1 << 20, total: 8 << 20, maxWrite: 1 << 20, maxRead: 256 << 10},
		{name: "written before read", capacity: 64 << 10, total: 64 << 10, maxWrite: 5000, maxRead: 4096, readAfter: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, r := newStreamPair(t, tc.capacity)
			src := make([]byte, tc.total)
			for i := range src {
				src[i] = byte(i*7 + i>>9)
			}
			rng := rand.New(rand.NewPCG(1, uint64(tc.capacity)))
			sizes := func(limit int) int { return 1 + rng.IntN(limit) }
			var pieces []int
			for left := tc.total; left > 0; {
				n := min(sizes(tc.maxWrite), left)
				pieces = append(pieces, n)
				left -= n
			}
			ctx := context.Background()
			written := make(chan error, 1)
			write := func() {
				off := 0
				for _, n := range pieces {
					if err := w.Write(ctx, src[off:off+n]); err != nil {
						written <- err
						return
					}
					off += n
				}
				written <- nil
			}
			if tc.readAfter {
				write()
			} else {
				go write()
			}
			dst := make([]byte, tc.total)
			for off := 0; off < tc.total; {
				n, err := r.Read(ctx, dst[off:min(off+sizes(tc.maxRead), tc.total)])
				require.NoError(t, err)
				require.Positive(t, n)
				off += n
			}
			require.NoError(t, <-written)
			require.True(t, bytes.Equal(src, dst), "bytes differ")
		})
	}
}

// Concurrent writes never interleave: each Write is one run of bytes in
// the stream, even when it is larger than the ring and has to wait.
func TestStreamWritesDoNotInterleave(t *testing.T) {
	const capacity, each, writers = 4096, 20_000, 4
	w, r := newStreamPair(t, capacity)
	ctx := context.Background()
	errs := make(chan error, writers)
	for i := range writers {
		go func() { errs <- w.Write(ctx, bytes.Repeat([]byte{byte('a' + i)}, each)) }()
	}
	dst := make([]byte, writers*each)
	require.NoError(t, r.ReadFull(ctx, dst))
	for range writers {
		require.NoError(t, <-errs)
	}
	seen := map[byte]bool{}
	for off := 0; off < len(dst); off += each {
		run := dst[off : off+each]
		require.Equal(t, bytes.Repeat(run[:1], each), run, "write at %d interleaved", off)
		require.False(t, seen[run[0]], "write %q delivered twice", run[0])
		seen[run[0]] = true
	}
}

func TestStreamWaitsEndWithTheContext(t *testing.T) {
	t.Run("reader, deadline", func(t *testing.T) {
		_, r := newStreamPair(t, 4096)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		n, err := r.Read(ctx, make([]byte, 10))
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Zero(t, n)
	})
	t.Run("reader, cancelled while asleep", func(t *testing.T) {
		_, r := newStreamPair(t, 4096)
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(20*time.Millisecond, cancel) // well past the spin: the reader sleeps in futex(2)
		require.ErrorIs(t, r.ReadFull(ctx, make([]byte, 10)), context.Canceled)
	})
	t.Run("reader, already cancelled", func(t *testing.T) {
		w, r := newStreamPair(t, 4096)
		require.NoError(t, w.Write(context.Background(), []byte("x")))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		// Bytes that are there are delivered without waiting; the
		// context only ends waits.
		n, err := r.Read(ctx, make([]byte, 10))
		require.NoError(t, err)
		require.Equal(t, 1, n)
		_, err = r.Read(ctx, make([]byte, 10))
		require.ErrorIs(t, err, context.Canceled)
	})
	t.Run("writer, ring full", func(t *testing.T) {
		w, r := newStreamPair(t, 4096)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		src := bytes.Repeat([]byte("0123456789abcdef"), 512) // 8 KiB
		require.ErrorIs(t, w.Write(ctx, src), context.DeadlineExceeded)
		// Exactly one ring's worth was published before the wait.
		got := make([]byte, 8192)
		n, err := r.Read(context.Background(), got)
		require.NoError(t, err)
		require.Equal(t, src[:4096], got[:n])
	})
}

// A cancelled wait returns only once the cancellation's wake is over, so
// unmapping the stream right after cannot fault under the wake.
func TestStreamCloseRightAfterCancelledWait(t *testing.T) {
	for i := range 200 {
		w, err := shm.NewStream("test", 4096)
		require.NoError(t, err)
		r, err := shm.OpenStream(w.File(), 4096)
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(time.Duration(i%8)*20*time.Microsecond, cancel)
		_, err = r.Read(ctx, make([]byte, 1))
		require.ErrorIs(t, err, context.Canceled)
		require.NoError(t, r.Close())
		require.NoError(t, w.Close())
	}
}

// The receiver never trusts the producer's count: whatever it claims, a
// Read copies at most len(p) bytes from inside the ring, at the
// receiver's own position.
func TestStreamReaderBoundsALyingProducer(t *testing.T) {
	const capacity = 8192
	for _, tc := range []struct {
		name    string
		written uint64
	}{
		{"far ahead", 1 << 62},
		{"just past a ring", capacity + 1},
		{"wrapped around zero", ^uint64(0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, r := newStreamPair(t, capacity)
			peer := peerView(t, w, capacity)
			for i := range capacity {
				peer[dataOffset+i] = byte(i % 251)
			}
			word(peer, ctlWritten).Store(tc.written)
			ctx := context.Background()
			// Two reads, the second across the end of the ring: the
			// receiver's position wraps by its own count.
			a := make([]byte, capacity-100)
			n, err := r.Read(ctx, a)
			require.NoError(t, err)
			require.Equal(t, len(a), n)
			b := make([]byte, 300)
			n, err = r.Read(ctx, b)
			require.NoError(t, err)
			require.LessOrEqual(t, n, len(b))
			for i, c := range append(a, b[:n]...) {
				require.Equal(t, byte(i%capacity%251), c, "byte %d", i)
			}
			// The receiver published its own count, not the producer's.
			require.Equal(t, uint64(len(a)+n), word(peer, ctlRead).Load())
		})
	}
}

func TestStreamWriterRefusesAnImpossibleReceiverCount(t *testing.T) {
	const capacity = 4096
	w, _ := newStreamPair(t, capacity)
	peer := peerView(t, w, capacity)
	word(peer, ctlRead).Store(1 << 40) // "taken" more than was ever written
	err := w.Write(context.Background(), []byte("x"))
	require.ErrorIs(t, err, shm.ErrStreamCorrupt)
}

func TestOpenStreamChecksTheDescriptor(t *testing.T) {
	const capacity = 8192
	memfd := func(t *testing.T, seals int, size int) *os.File {
		fd, err := unix.MemfdCreate("t", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
		require.NoError(t, err)
		f := os.NewFile(uintptr(fd), "memfd")
		t.Cleanup(func() { f.Close() })
		require.NoError(t, unix.Ftruncate(fd, int64(size)))
		if seals != 0 {
			_, err = unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals)
			require.NoError(t, err)
		}
		return f
	}
	good := func(t *testing.T) *os.File {
		w, err := shm.NewStream("t", capacity)
		require.NoError(t, err)
		t.Cleanup(func() { w.Close() })
		return w.File()
	}
	for _, tc := range []struct {
		name     string
		file     func(t *testing.T) *os.File
		capacity int
		protocol bool   // an ipc.ErrProtocol (wrong fd kind)
		want     string // otherwise, in the message
	}{
		{name: "wrong capacity", file: good, capacity: 2 * capacity,
			want: fmt.Sprintf("size %d, want %d", shm.StreamSize(capacity), shm.StreamSize(2*capacity))},
		{name: "capacity not whole pages", file: good, capacity: capacity + 1, want: "invalid stream capacity"},
		{name: "zero capacity", file: good, capacity: 0, want: "invalid stream capacity"},
		{name: "read-only descriptor", capacity: capacity, want: "not opened read-write", file: func(t *testing.T) *os.File {
			f, err := os.Open("/proc/self/fd/" + strconv.Itoa(rawFD(t, good(t))))
			require.NoError(t, err)
			t.Cleanup(func() { f.Close() })
			return f
		}},
		{name: "size not sealed", capacity: capacity, protocol: true, file: func(t *testing.T) *os.File {
			return memfd(t, 0, shm.StreamSize(capacity))
		}},
		{name: "regular file", capacity: capacity, protocol: true, file: func(t *testing.T) *os.File {
			f, err := os.Create(t.TempDir() + "/f")
			require.NoError(t, err)
			t.Cleanup(func() { f.Close() })
			return f
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := shm.OpenStream(tc.file(t), tc.capacity)
			require.Error(t, err)
			require.Nil(t, r)
			if tc.protocol {
				require.ErrorIs(t, err, ipc.ErrProtocol)
			} else {
				require.ErrorContains(t, err, tc.want)
			}
		})
	}
}

func TestStreamClosed(t *testing.T) {
	w, r := newStreamPair(t, 4096)
	require.NoError(t, r.Close())
	require.NoError(t, r.Close())
	_, err := r.Read(context.Background(), make([]byte, 1))
	require.ErrorContains(t, err, "closed")
	require.NoError(t, w.Close())
	require.ErrorContains(t, w.Write(context.Background(), []byte("x")), "closed")
}

// ExampleNewStream moves a result from a producer to a receiver that
// validates its own copy. In a real program the two ends live in the
// renderer and the broker, and the descriptor travels as an
// ipc.SharedRegion.
func ExampleNewStream() {
	const capacity = 64 << 10
	w, err := shm.NewStream("result", capacity)
	if err != nil {
		panic(err)
	}
	defer w.Close()
	f, err := w.Share() // what the renderer sends
	if err != nil {
		panic(err)
	}
	r, err := shm.OpenStream(f, capacity) // what the broker does on receipt
	f.Close()
	if err != nil {
		panic(err)
	}
	defer r.Close()

	ctx := context.Background()
	result := bytes.Repeat([]byte("pixels"), 50_000) // larger than the ring
	go w.Write(ctx, result)

	got := make([]byte, len(result)) // the length the broker agreed to take
	if err := r.ReadFull(ctx, got); err != nil {
		panic(err)
	}
	fmt.Println(bytes.Equal(got, result))
	// Output: true
}
