// Package thumb decodes one untrusted image and renders a small RGBA
// thumbnail of it. It is the renderer-side half of the imageparser example and
// runs inside the sandbox, so it works on a byte slice only: no files, no
// network, no processes, no temporary storage. It depends on nothing but the
// standard library and golang.org/x/image.
//
// # Formats
//
// PNG, JPEG, GIF (first frame; all frames are counted), BMP, TIFF (first IFD)
// and WebP (lossy, lossless, with alpha; not animated). The format is chosen
// from the leading bytes of the content against a fixed allow-list — never
// from a file name, and never through the process-wide image.RegisterFormat
// table, so that a decoder linked in by some other package cannot widen the
// attack surface of the renderer.
//
// # Decompression bombs and memory
//
// Every entry point first checks the input length against Budget.MaxInputBytes
// and then reads only the header (the format's DecodeConfig) to learn the
// declared canvas. Width*Height is checked against Budget.MaxPixels (with an
// overflow-safe multiplication, and empty or negative sizes rejected) before
// any pixel buffer exists; for GIF the frames are counted by walking the block
// structure without decompressing anything, and more than Budget.MaxFrames is
// refused. Only then is the image decoded.
//
// Declared sizes can lie, so what matters is whether a decoder can allocate
// more than the declared canvas implies. What each decoder does (checked
// against golang.org/x/image v0.48.0 and Go's image packages):
//
//   - PNG: one IHDR; the image and the per-row buffers follow its size; chunk
//     data it does not use is skipped without being buffered. Interlaced
//     images add one row buffer per pass. At most 8 bytes/pixel (16-bit RGBA).
//   - JPEG: a second SOF marker is an error, so the SOF that DecodeConfig saw
//     is the one that sizes the image. Baseline: the YCbCr/Gray/CMYK planes
//     (<= 4 bytes/pixel). Progressive: plus one int32 coefficient per sample
//     (<= 16 bytes/pixel for 4 components). Truncated scan data fails after
//     that allocation, which the budget therefore bounds.
//   - GIF: every frame must lie inside the logical screen; only the first
//     frame is decoded (1 byte/pixel). A huge logical screen is refused by the
//     pixel budget even when the frames are tiny, because the thumbnail is
//     rendered at screen size.
//   - BMP: the header size is the image size; rows are read one at a time.
//   - TIFF: only the first IFD is decoded (later IFDs, however large they
//     claim to be, are never read), and DecodeConfig reads that same IFD.
//     Strip/tile buffers are capped at 8 bytes/pixel of the tile, tiles may
//     exceed the image by at most 16 pixels (or be <= 1024x1024), and
//     out-of-line IFD data is read in 10 MiB chunks, so a huge count with
//     little data behind it fails early.
//   - WebP: the VP8X canvas must match the VP8/VP8L frame size exactly, and
//     the canvas is what DecodeConfig reports. An uncompressed ALPH chunk
//     allocates width*height bytes before reading them — bounded by the budget
//     because the canvas was checked first. Animated files are refused as
//     unsupported before decoding.
//
// After decoding, the image's bounds must equal the declared canvas (for GIF:
// lie inside it), else the input is reported corrupt. The scaler then needs
// O(width) extra memory (see boxScale). The worst cases are a 16-bit
// uncompressed TIFF in one strip (image 8 bytes/pixel, plus the strip copied
// out of the input and grown in 10 MiB chunks, up to 16) and a progressive
// CMYK JPEG (about 20). Peak memory is therefore below about
// 24 bytes × MaxPixels + len(data) + a few MiB; set the renderer's address
// space limit accordingly (about 1.3 GB for DefaultBudget, plus the runtime).
//
// # CPU time
//
// The budget bounds memory, not time. Some inputs are legitimately small and
// slow: a progressive JPEG with thousands of tiny scans revisits every block
// per scan, a TIFF can have one strip per row with a fresh decompressor
// each. The broker must put a deadline on every renderer (and the sandbox a
// CPU rlimit) rather than expect this package to refuse such inputs.
//
// # Errors and panics
//
// Every failure wraps exactly one of ErrUnsupportedFormat, ErrCorrupt or
// ErrOverBudget (test with errors.Is), with a detail suitable for a log line.
// Decoders have panicked on hostile input in the past; Probe, Thumbnail and
// ThumbnailInto recover such panics and report ErrCorrupt. That recovery is a
// convenience that keeps one bad file from taking the renderer down with a
// stack trace; it is not the security boundary — the sandbox is. A runtime
// fatal error (out of memory, stack exhaustion) cannot be recovered and
// simply kills the renderer, which the broker must treat as a failure of
// that one input.
package thumb
