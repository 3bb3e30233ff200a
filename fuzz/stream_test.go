package fuzz

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/ipc/shm"
)

// FuzzStreamReader fuzzes the broker's side of an shm stream against a
// producer that owns the whole memfd: it writes any bytes into the ring
// and any values into every control word, the count of bytes it claims
// to have written included, between the broker's reads of any size. The
// oracle is a model of what the reader must do whatever the producer
// claims: copy exactly min(len(p), claimed-available) bytes, from the
// ring at the reader's own position, publish its own count, and wait
// (until its context ends) only when the claim says nothing is there.
func FuzzStreamReader(f *testing.F) {
	// Ops: 'w' count(8) | 'f' offset(2) byte | 'x' offset(1) value(4) | 'r' size(2)
	f.Add(uint8(0), []byte("w\x10\x00\x00\x00\x00\x00\x00\x00r\x08\x00r\x10\x00"))
	f.Add(uint8(1), []byte("w\xff\xff\xff\xff\xff\xff\xff\xffr\xff\x7f"))
	f.Add(uint8(2), []byte("f\x00\x10\x41w\x00\x20\x00\x00\x00\x00\x00\x00r\x00\x30x\x40\x01\x00\x00\x00r\x00\x10"))
	f.Add(uint8(3), []byte("r\x01\x00"))
	f.Fuzz(func(t *testing.T, pages uint8, script []byte) {
		capacity := (1 + int(pages%4)) * os.Getpagesize()
		w, err := shm.NewStream("fuzz", capacity)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		r, err := shm.OpenStream(w.File(), capacity)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		// The producer's own view of everything, through its own
		// descriptor.
		f, err := w.Share()
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		mem, err := unix.Mmap(int(f.Fd()), 0, shm.StreamSize(capacity), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Munmap(mem)
		ctl, ring := mem[:shm.StreamSize(0)], mem[shm.StreamSize(0):]
		written := (*atomic.Uint64)(unsafe.Pointer(&ctl[0]))
		taken := (*atomic.Uint64)(unsafe.Pointer(&ctl[64]))

		var pos uint64 // the model's reader position
		for len(script) > 0 {
			op := script[0]
			script = script[1:]
			arg := func(n int) []byte {
				b := make([]byte, n)
				copy(b, script)
				script = script[min(n, len(script)):]
				return b
			}
			switch op % 4 {
			case 0: // claim a count
				written.Store(binary.LittleEndian.Uint64(arg(8)))
			case 1: // fill the ring from an offset
				a := arg(3)
				off := int(binary.LittleEndian.Uint16(a)) % capacity
				for i := off; i < capacity; i++ {
					ring[i] = a[2] + byte(i)
				}
			case 2: // any 32-bit value into any aligned control word
				a := arg(5)
				off := int(a[0]) % 32 * 4
				(*atomic.Uint32)(unsafe.Pointer(&ctl[off])).Store(binary.LittleEndian.Uint32(a[1:]))
			case 3: // the broker reads
				size := int(binary.LittleEndian.Uint16(arg(2))) % (3 * capacity)
				before := append([]byte(nil), ring...)
				claimed := written.Load()
				ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
				p := make([]byte, size)
				n, err := r.Read(ctx, p)
				cancel()
				want := min(uint64(size), claimed-pos)
				switch {
				case size == 0:
					if n != 0 || err != nil {
						t.Fatalf("empty read: n=%d err=%v", n, err)
					}
				case want == 0:
					if n != 0 || !errors.Is(err, context.DeadlineExceeded) {
						t.Fatalf("nothing claimed: n=%d err=%v, want a wait until the deadline", n, err)
					}
				default:
					if err != nil || uint64(n) != want {
						t.Fatalf("read %d with %d claimed available: n=%d err=%v, want %d", size, claimed-pos, n, err, want)
					}
				}
				for i := range n {
					if at := (pos + uint64(i)) % uint64(capacity); p[i] != before[at] {
						t.Fatalf("byte %d: got %#x, ring[%d] is %#x", i, p[i], at, before[at])
					}
				}
				pos += uint64(n)
				if n > 0 && taken.Load() != pos {
					t.Fatalf("reader published %d taken, its position is %d", taken.Load(), pos)
				}
			}
		}
	})
}
