// Package bulkbench is the 8 MiB transfer shared by ipc's BenchmarkBulk8MiB
// and the comparison benchmarks of internal/bench: the payload both
// producers hand over, and the receiver's loop that takes it in chunks and
// validates each chunk as it arrives, so that the two measure exactly the
// same thing.
package bulkbench

import (
	"encoding/binary"
	"fmt"
	"unsafe"
)

const (
	// Size is the size of one transfer.
	Size = 8 << 20
	// Chunk is the receiver's unit: it fetches and validates a chunk at
	// a time, while the chunk is still in its cache.
	Chunk = 256 << 10
)

// Template is the deterministic payload both processes know.
func Template() []byte {
	b := make([]byte, Size)
	x := uint64(0x9e3779b97f4a7c15)
	for i := 0; i < len(b); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(b[i:], x)
	}
	return b
}

// checksum is the receiver's validation: it reads every byte.
func checksum(b []byte) uint64 {
	w := unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/8)
	var s0, s1, s2, s3 uint64
	for i := 0; i+4 <= len(w); i += 4 {
		s0 += w[i]
		s1 ^= w[i+1]
		s2 += w[i+2]
		s3 ^= w[i+3]
	}
	return s0 ^ s1*3 ^ s2*5 ^ s3*7
}

// ChunkedSum is what the receiver computes over a whole transfer: the XOR
// of the checksums of its chunks.
func ChunkedSum(b []byte) uint64 {
	var sum uint64
	for off := 0; off+Chunk <= len(b); off += Chunk {
		sum ^= checksum(b[off : off+Chunk])
	}
	return sum
}

// Receive fills buf (Size bytes) chunk by chunk with fetch, which copies
// the transfer's bytes [off, off+len(p)) into p, validates each chunk as
// soon as it is fetched, and checks the result against want (ChunkedSum
// of Template).
func Receive(buf []byte, want uint64, fetch func(p []byte, off int) error) error {
	var sum uint64
	for off := 0; off < Size; off += Chunk {
		if err := fetch(buf[off:off+Chunk], off); err != nil {
			return err
		}
		sum ^= checksum(buf[off : off+Chunk])
	}
	if sum != want {
		return fmt.Errorf("checksum %#x, want %#x", sum, want)
	}
	return nil
}
