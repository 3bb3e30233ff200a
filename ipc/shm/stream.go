package shm

import (
	"context"
	"errors"
	"fmt"
	"github.com/sandkit/sandkit/internal/fdkind"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A stream is a byte ring in one shared region: a control page followed by
// capacity bytes of data. The producer copies bytes into the ring and
// publishes how many it has written; the receiver copies them out, once,
// and publishes how many it has taken, which frees that space for the
// producer. Producer and receiver run at the same time, like the two ends
// of a socket, but no byte goes through the kernel, and the ring is small
// enough to stay in the CPU's caches while both ends work on it. That is
// what makes it faster than a region the size of the whole result (see
// docs/ipc.md).
//
// The control page holds two cache lines, one written by each side (plus
// a wake counter that the other side's cancellation also bumps):
//
//	line 0, producer: written (uint64), readerWake (uint32), writerWaiting (uint32)
//	line 1, receiver: read (uint64), writerWake (uint32), readerWaiting (uint32)
//
// Every word in the page is writable by both processes, so neither side
// trusts what the other wrote: the receiver keeps its own count of bytes
// taken, reads the producer's count only to learn that bytes are there,
// and never uses it as an index or a length. A lying producer can make the
// receiver copy stale or torn bytes, which fail validation like any other
// bad data, or make it wait until its context ends; nothing more.
const (
	offWritten       = 0
	offReaderWake    = 8
	offWriterWaiting = 12
	offRead          = 64
	offWriterWake    = 72
	offReaderWaiting = 76
)

// streamSpin is how long a side polls the other's counter before it sleeps
// in futex(2). A 256 KiB publish takes the producer 10–20 µs on the
// development VM, and a futex sleep and wake costs several µs on each side
// (more when the sleeper's CPU has gone idle), so short waits are cheaper
// spent spinning. The spin yields the P, so other goroutines still run.
const streamSpin = 50 * time.Microsecond

// Operations of futex(2), from linux/futex.h. Both sides map the same
// memfd, so the futex words are shared, not FUTEX_PRIVATE_FLAG.
const (
	futexWait = 0
	futexWake = 1
)

// ErrStreamCorrupt is returned by StreamWriter.Write when the receiver's
// count of bytes taken is impossible (ahead of what was written, or behind
// by more than the capacity). The stream is unusable afterwards.
var ErrStreamCorrupt = errors.New("shm: stream control words corrupted")

// controlSize is the control page's size: one page, so that the ring
// starts at an offset mmap(2) accepts.
func controlSize() int { return os.Getpagesize() }

// checkCapacity accepts a whole number of pages, at least one.
func checkCapacity(capacity int) error {
	if capacity <= 0 || capacity%os.Getpagesize() != 0 || capacity > maxSize-controlSize() {
		return fmt.Errorf("shm: invalid stream capacity %d (want a positive multiple of %d, at most %d)",
			capacity, os.Getpagesize(), maxSize-controlSize())
	}
	return nil
}

// StreamSize is the size of the memfd behind a stream of the given
// capacity: the ring and its control page. A renderer that makes a
// stream needs a policy whose Limits.FileSize (RLIMIT_FSIZE, which bounds
// memfds) allows at least that much.
func StreamSize(capacity int) int { return controlSize() + capacity }

// streamWords points into a mapped control page.
type streamWords struct {
	written, read                *atomic.Uint64
	readerWake, writerWake       *atomic.Uint32
	readerWaiting, writerWaiting *atomic.Uint32
}

func newStreamWords(ctl []byte) streamWords {
	u64 := func(off int) *atomic.Uint64 { return (*atomic.Uint64)(unsafe.Pointer(&ctl[off])) }
	u32 := func(off int) *atomic.Uint32 { return (*atomic.Uint32)(unsafe.Pointer(&ctl[off])) }
	return streamWords{
		written:       u64(offWritten),
		read:          u64(offRead),
		readerWake:    u32(offReaderWake),
		writerWake:    u32(offWriterWake),
		readerWaiting: u32(offReaderWaiting),
		writerWaiting: u32(offWriterWaiting),
	}
}

// wake bumps a wake counter and wakes whoever sleeps on it. Bumping first
// means a sleeper that read the counter before the bump does not sleep.
func wake(w *atomic.Uint32) {
	w.Add(1)
	unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(w)), futexWake, 1, 0, 0, 0)
}

// wakeIfWaiting wakes the other side only if it said it may sleep. The
// caller has just published its counter (a sequentially consistent store),
// and the sleeper sets waiting before it re-reads that counter, so one of
// the two always sees the other.
func wakeIfWaiting(waiting, w *atomic.Uint32) {
	if waiting.Load() != 0 {
		wake(w)
	}
}

// sleepUntil waits until ready reports true or ctx ends. It spins for
// streamSpin, then sleeps on the wake counter with waiting set. The
// context's end bumps the counter too, so cancellation never waits for
// the other side.
func sleepUntil(ctx context.Context, ready func() bool, waiting, w *atomic.Uint32) error {
	if ready() {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	deadline := time.Now().Add(streamSpin)
	for i := 1; ; i++ {
		if ready() {
			return nil
		}
		if i%64 == 0 {
			if time.Now().After(deadline) {
				break
			}
			runtime.Gosched()
		}
	}
	// The wake must be over before we return: the caller may unmap the
	// page right after.
	woken := make(chan struct{})
	stop := context.AfterFunc(ctx, func() { wake(w); close(woken) })
	defer func() {
		if !stop() {
			<-woken
		}
	}()
	for {
		seq := w.Load()
		waiting.Store(1)
		if ready() {
			waiting.Store(0)
			return nil
		}
		if err := ctx.Err(); err != nil {
			waiting.Store(0)
			return err
		}
		_, _, errno := unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(w)), futexWait, uintptr(seq), 0, 0, 0)
		waiting.Store(0)
		switch errno {
		case 0, unix.EAGAIN, unix.EINTR:
		default:
			return fmt.Errorf("shm: futex wait: %w", errno)
		}
	}
}

// StreamWriter is the producer's side of a stream.
type StreamWriter struct {
	mu      sync.Mutex // one Write at a time, so writes never interleave
	region  *Region
	words   streamWords
	data    []byte
	written uint64 // our own count; the shared word is only ever a copy
	publish int
}

// NewStream makes a stream whose ring holds capacity bytes (a positive
// multiple of the page size; 1 MiB suits multi-megabyte results). Its
// memfd, from File, is sent to the receiver as an ipc.SharedRegion and
// opened there with OpenStream and the same capacity.
func NewStream(name string, capacity int) (*StreamWriter, error) {
	if err := checkCapacity(capacity); err != nil {
		return nil, err
	}
	r, err := NewRegion(name, StreamSize(capacity))
	if err != nil {
		return nil, err
	}
	return streamFor(r, capacity), nil
}

// NewStreamIn is NewStream in a memfd someone else made: f must be an
// ipc.BlankMemfd of exactly StreamSize(capacity) bytes
// (renderer.Session.Alloc). The StreamWriter takes ownership of f, also
// when it fails.
func NewStreamIn(f *os.File, capacity int) (*StreamWriter, error) {
	if err := checkCapacity(capacity); err != nil {
		f.Close()
		return nil, err
	}
	r, err := NewRegionIn(f, StreamSize(capacity))
	if err != nil {
		return nil, err
	}
	return streamFor(r, capacity), nil
}

func streamFor(r *Region, capacity int) *StreamWriter {
	mem := r.Bytes()
	return &StreamWriter{
		region: r,
		words:  newStreamWords(mem[:controlSize()]),
		data:   mem[controlSize():],
		// Publishing a quarter of the ring at a time lets the receiver
		// copy out one quarter while the producer fills the next.
		publish: max(capacity/4, os.Getpagesize()),
	}
}

// File returns the stream's memfd. It stays owned by the StreamWriter.
func (w *StreamWriter) File() *os.File { return w.region.File() }

// Share returns a new descriptor for the stream's memfd, to send as an
// ipc.SharedRegion; the caller owns it (see Region.Share).
func (w *StreamWriter) Share() (*os.File, error) { return w.region.Share() }

// Write copies p into the stream, waiting for the receiver to free space
// as needed. It returns once every byte is published, or with the
// context's error (some of p may have been published by then).
func (w *StreamWriter) Write(ctx context.Context, p []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.data == nil {
		return errors.New("shm: Write on a closed StreamWriter")
	}
	capacity := uint64(len(w.data))
	for len(p) > 0 {
		used := w.written - w.words.read.Load()
		if used > capacity {
			return fmt.Errorf("%w: %d bytes written, receiver claims %d taken", ErrStreamCorrupt, w.written, w.words.read.Load())
		}
		if used == capacity {
			full := w.written - capacity
			err := sleepUntil(ctx, func() bool { return w.words.read.Load() != full }, w.words.writerWaiting, w.words.writerWake)
			if err != nil {
				return err
			}
			continue
		}
		at := int(w.written % capacity)
		n := min(int(capacity-used), len(p), w.publish, len(w.data)-at)
		copy(w.data[at:at+n], p[:n])
		p = p[n:]
		w.written += uint64(n)
		w.words.written.Store(w.written)
		wakeIfWaiting(w.words.readerWaiting, w.words.readerWake)
	}
	return nil
}

// Close unmaps and closes the stream. The receiver keeps its mappings.
// A Write in progress finishes first: end its context to stop it.
func (w *StreamWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.data = nil
	return w.region.Close()
}

// StreamReader is the receiver's side of a stream.
type StreamReader struct {
	mu        sync.Mutex // one Read at a time: taken is ours alone
	ctl, data []byte
	words     streamWords
	taken     uint64 // our own count; never read back from shared memory
}

// OpenStream checks that f is an ipc.SharedRegion of exactly a control
// page plus capacity bytes, opened read-write (the receiver publishes how
// much it has taken), and maps it: the control page read-write, the ring
// read-only and pre-faulted. It does not take ownership of f.
func OpenStream(f *os.File, capacity int) (*StreamReader, error) {
	if err := checkCapacity(capacity); err != nil {
		return nil, err
	}
	if err := checkKind(f, fdkind.SharedRegion); err != nil {
		return nil, fmt.Errorf("shm: OpenStream: %w", err)
	}
	r := &StreamReader{}
	err := withFD(f, func(fd int) error {
		fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
		if err != nil {
			return err
		}
		if fl&unix.O_ACCMODE != unix.O_RDWR {
			return errors.New("memfd not opened read-write")
		}
		if err := checkFileSize(fd, StreamSize(capacity)); err != nil {
			return err
		}
		r.ctl, err = unix.Mmap(fd, 0, controlSize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		if err != nil {
			return err
		}
		r.data, err = unix.Mmap(fd, int64(controlSize()), capacity, unix.PROT_READ, unix.MAP_SHARED|unix.MAP_POPULATE)
		return err
	})
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("shm: OpenStream: %w", err)
	}
	r.words = newStreamWords(r.ctl)
	return r, nil
}

// Read copies at least one and at most len(p) bytes out of the stream
// into p, waiting until the producer has published some, and returns how
// many it copied. Each byte is fetched from shared memory exactly once:
// validate and use only p. The producer may have written p's bytes
// concurrently or lied about them, so they may be garbage; they can never
// change after Read returns. ctx must end when the producer is gone or
// stops being trusted to finish (a dead producer never publishes).
func (r *StreamReader) Read(ctx context.Context, p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.data == nil {
		return 0, errors.New("shm: Read on a closed StreamReader")
	}
	if len(p) == 0 {
		return 0, nil
	}
	// The producer's count only says whether there is something to
	// copy. Where from is our own count; how much is bounded by p and
	// by the end of the ring, whatever the producer claims.
	capacity := uint64(len(r.data))
	available := func() uint64 { return r.words.written.Load() - r.taken }
	if available() == 0 {
		err := sleepUntil(ctx, func() bool { return available() != 0 }, r.words.readerWaiting, r.words.readerWake)
		if err != nil {
			return 0, err
		}
	}
	n := 0
	for n < len(p) {
		at := int(r.taken % capacity)
		k := int(min(available(), uint64(len(p)-n), uint64(len(r.data)-at)))
		if k == 0 {
			break
		}
		if err := copyOut(p[n:n+k], r.data[at:at+k]); err != nil {
			return n, err
		}
		n += k
		r.taken += uint64(k)
		r.words.read.Store(r.taken)
		wakeIfWaiting(r.words.writerWaiting, r.words.writerWake)
	}
	return n, nil
}

// ReadFull fills p from the stream, waiting as needed; see Read.
func (r *StreamReader) ReadFull(ctx context.Context, p []byte) error {
	for len(p) > 0 {
		n, err := r.Read(ctx, p)
		if err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// copyOut copies from shared memory, turning a memory fault (which the
// size seals should make impossible) into an error.
func copyOut(dst, src []byte) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("shm: fault copying from shared memory: %v", p)
		}
	}()
	copy(dst, src)
	return nil
}

// Close unmaps. It is idempotent. A Read in progress finishes first: end
// its context to stop it.
func (r *StreamReader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var err error
	for _, m := range []*[]byte{&r.ctl, &r.data} {
		if *m != nil {
			if uerr := unix.Munmap(*m); err == nil {
				err = uerr
			}
			*m = nil
		}
	}
	return err
}
