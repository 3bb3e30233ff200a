// Package parser is the broker side of the imageparser example: it opens
// each image, hands the descriptor to a freshly bound sandboxed renderer
// (package imagerenderer, in the same executable), checks everything the
// renderer answers as hostile, and writes the thumbnail PNG itself.
//
// One renderer serves one file and is closed after it: whatever an image
// does to its renderer — exploit a decoder, exhaust memory, spin — it
// cannot see or influence another image, and the next file starts from a
// clean process. A warm pool (Options.WarmPool) only moves the spawn and
// lockdown off the critical path; pooled renderers are unbound, and each is
// bound to exactly one file before it sees a byte of it. The one exception
// is opt-in: Options.ReuseByDirectory makes a directory one origin whose
// files share renderers.
package parser

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/ipc"
	"github.com/sandkit/sandkit/ipc/shm"
	"github.com/sandkit/sandkit/policy"

	"github.com/sandkit/sandkit/examples/imageparser/imageipc"
	"github.com/sandkit/sandkit/examples/imageparser/imagepb"
	"github.com/sandkit/sandkit/examples/imageparser/thumb"
	"github.com/sandkit/sandkit/examples/imageparser/verify"
)

// MaxSide is the longest side of every thumbnail.
const MaxSide = thumb.DefaultMaxSide

// DefaultTimeout bounds one file when Options.Timeout is zero. The 12 MP
// benchmark JPEG takes well under a second; 30 s leaves room for a 50 MP
// progressive JPEG on a slow, loaded machine.
const DefaultTimeout = 30 * time.Second

// runtimeHeadroom is the renderer's memory beyond what thumb's decoders
// need: the Go runtime, goroutine stacks, the ipc buffers and the GC's slack.
const runtimeHeadroom = 256 << 20

// Policy returns the renderer policy for budget and a per-file timeout:
// policy.Strict() plus exactly what decoding one image under that budget
// needs. Every exception:
//
//   - Limits.Memory (RLIMIT_DATA and RLIMIT_AS, 1 GiB in Strict) = 24 bytes ×
//     MaxPixels + 2 × MaxInputBytes + 256 MiB. thumb's documentation puts
//     the worst decoder (progressive CMYK JPEG, a 16-bit TIFF in one strip)
//     at about 24 bytes per declared pixel plus the input; the input is
//     counted twice for the read buffer and a decoder's copy of a strip,
//     and 256 MiB is the Go runtime's own. Anything past that is a decoder
//     allocating more than the budget implies, and the renderer dies
//     ("killed: memory limit") instead of the machine swapping. The
//     result memfd, a shared mapping at most 4 × MaxSide² bytes, fits in
//     the 256 MiB; the runtime's start-up reservations are not in it (the
//     renderer adds its address space at lockdown, 1.21 GiB, to
//     RLIMIT_AS). (Dropped in binaries built with -race, which cannot run under a
//     memory rlimit; tests only.)
//   - Limits.SharedMemory (0 in Strict) = 4 × MaxSide² bytes, the largest
//     thumbnail: the renderer asks the broker for its result memfd, and
//     the broker hands out no more than this over the renderer's life (a
//     renderer serves one file). Limits.FileSize stays 0: it writes no
//     file.
//   - Limits.CallTimeout = timeout: the wall-clock bound on one file; the
//     budget bounds memory, not time (thumb: some small inputs are slow).
//   - Limits.CPUTime (RLIMIT_CPU, 60 s in Strict) = 2 × timeout. A renderer
//     serves a single call, so the call timeout is the real bound and the
//     CPU limit only a backstop; the decoder and the GC's workers together
//     may burn about two CPU-seconds per second of a legitimate decode, so
//     a slow but honest file times out with the clearer reason instead.
//
// Nothing else: no read-only paths (the image arrives as a descriptor, the
// decoders load no tables or fonts), and no syscall beyond the base
// allowlist (reading the descriptor, asking the broker for shared memory,
// mmap and fcntl seals are all in it).
func Policy(budget thumb.Budget, timeout time.Duration) *policy.Policy {
	p := policy.Strict()
	// Clamped so that absurd budgets cannot overflow into a small limit.
	pixels := min(max(budget.MaxPixels, 0), 1<<40)
	input := min(max(budget.MaxInputBytes, 0), 1<<40)
	p.Limits.Memory = uint64(24*pixels + 2*input + runtimeHeadroom)
	p.Limits.SharedMemory = 4 * MaxSide * MaxSide
	p.Limits.CallTimeout = timeout
	p.Limits.CPUTime = 2 * timeout
	if raceDetector {
		p.Limits.Memory = 0 // see race.go: tests only
	}
	return p
}

// Options configures a Parser. OutDir is required.
type Options struct {
	// OutDir receives the thumbnails (verify.OutputName); it is created
	// if missing.
	OutDir string
	// Budget bounds each input. Zero means thumb.DefaultBudget().
	Budget thumb.Budget
	// Timeout bounds one file, spawn excluded. Zero means DefaultTimeout.
	Timeout time.Duration
	// WarmPool keeps that many renderers spawned and locked down ahead of
	// need. Each is still bound to one file and closed after it, unless
	// ReuseByDirectory is set.
	WarmPool int
	// ReuseByDirectory makes the files of one directory one origin: they
	// share renderers, which stay alive between files (until
	// ReuseIdleTimeout), so a batch pays for a spawn once per directory
	// instead of once per file. It is weaker isolation, chosen
	// explicitly: a crafted file that takes over its renderer can see or
	// alter the files of its own directory that the same renderer handles
	// after it, and one that kills its renderer fails the files of its
	// directory in flight with it. Files of different directories never
	// share a renderer. A renderer whose reply fails a check is closed,
	// so the next file of its directory gets a fresh one.
	ReuseByDirectory bool
	// Concurrency bounds the files Run processes at once. Zero means 2:
	// decoding is CPU-bound, and each renderer may legitimately use its
	// whole memory limit, so more would only add memory, not speed, on the
	// small machines this runs on.
	Concurrency int
	// Policy overrides Policy(Budget, Timeout), for tests.
	Policy *policy.Policy
	// Path and Args select the renderer executable; empty Path means this
	// program, which must then start with
	//	if renderer.Requested() { renderer.Main(imagerenderer.Register) }
	Path string
	Args []string
	// Logger receives the parser's and the broker's logs, renderers'
	// stderr included. Nil discards them.
	Logger *slog.Logger
	// OnEvent, when set, sees every renderer's life (broker.Config.OnEvent):
	// spawned, bound to a file, ended and why. It must not block.
	OnEvent func(broker.Event)
	// Configure, when set, is applied to the broker's Config last, just
	// before the broker starts: how package learn runs the parser's
	// samples in learn mode or under a policy to check.
	Configure func(*broker.Config)
}

// Result describes one thumbnailed image. Every field has been checked
// against the budget and against the others.
type Result struct {
	Path                    string // the input, as given
	Format                  string // one of thumb's Format names
	Width, Height           int    // declared canvas
	Frames                  int
	Thumb                   string // the PNG written
	ThumbWidth, ThumbHeight int
}

// Line is the command's success line for r (verify.OKLine).
func (r Result) Line() string {
	return verify.OKLine(r.Path, r.Format, r.Width, r.Height, r.Frames, r.Thumb)
}

// Why a file failed. The renderer's typed failures wrap the first three,
// followed by the renderer's detail; a reply that fails a check wraps
// ErrBadReply; a renderer that died is a *KilledError.
var (
	ErrUnsupportedFormat = errors.New("unsupported format")
	ErrCorrupt           = errors.New("corrupt data")
	ErrOverBudget        = errors.New("over budget")
	ErrBadReply          = verify.ErrBadReply
	// ErrRenderer is any other failure the renderer reported.
	ErrRenderer = errors.New("renderer failed")
)

// KilledError reports that the renderer died while working on the file:
// the sandbox stopped it (violation, memory or CPU limit), it crashed, it
// timed out, or it broke the protocol (ExitBadMessage). Exit says why.
type KilledError struct {
	Exit *broker.ExitError
}

// Error is the reason as the command prints it: "timeout" or
// "killed: " + ExitError.Short(), e.g. "killed: sandbox violation socket".
func (e *KilledError) Error() string {
	if e.Exit.Reason == broker.ExitTimeout {
		return "timeout"
	}
	return "killed: " + e.Exit.Short()
}

func (e *KilledError) Unwrap() error { return e.Exit }

// Parser thumbnails files through sandboxed renderers. It is safe for
// concurrent use.
type Parser struct {
	out         string
	budget      thumb.Budget
	concurrency int
	b           *broker.Broker
	log         *slog.Logger
	// seq numbers the files this Parser has started: part of each
	// renderer's document key, so that no two files, not even the same
	// path given twice, can ever be served by the same renderer (unless
	// reuse is set).
	seq   atomic.Uint64
	reuse bool
}

// ReuseIdleTimeout ends a renderer kept for ReuseByDirectory after that
// long without a file.
const ReuseIdleTimeout = 10 * time.Second

// New starts the broker (and its warm pool). It fails when OutDir cannot
// be created or when the kernel lacks an isolation layer the policy needs.
func New(ctx context.Context, o Options) (*Parser, error) {
	if o.OutDir == "" {
		return nil, errors.New("parser: Options.OutDir is required")
	}
	if o.Budget == (thumb.Budget{}) {
		o.Budget = thumb.DefaultBudget()
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 2
	}
	if o.WarmPool < 0 {
		return nil, fmt.Errorf("parser: negative warm pool %d", o.WarmPool)
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := o.Policy
	if p == nil {
		p = Policy(o.Budget, o.Timeout)
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("parser: output directory: %w", err)
	}
	if raceDetector {
		log.Warn("race detector build: renderers run without a memory limit")
	}
	cfg := broker.Config{
		Path:   o.Path,
		Args:   o.Args,
		Policy: p,
		// PerDocument with a unique document per file: a renderer is
		// bound to one file, never reused; with ReuseByDirectory the
		// document is empty and the directory is the origin (see key).
		Model: broker.PerDocument,
		// The Parser itself bounds its renderers to Concurrency bound
		// plus WarmPool pooled. MaxRenderers is set well above that
		// because the broker counts a renderer that is starting both as
		// live and as spawning, and at the limit it evicts the idlest
		// bound renderer — which can be one a Thumbnail has just
		// acquired and not yet called ("killed: idle timeout"). At twice
		// the real bound that path is never taken.
		MaxRenderers: 2 * (o.Concurrency + o.WarmPool),
		CallTimeout:  o.Timeout,
		IdleTimeout:  ReuseIdleTimeout,
		WarmPool:     o.WarmPool,
		Logger:       log,
		OnEvent:      o.OnEvent,
	}
	if o.Configure != nil {
		o.Configure(&cfg)
	}
	b, err := broker.New(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("parser: start sandbox: %w", err)
	}
	return &Parser{out: o.OutDir, budget: o.Budget, concurrency: o.Concurrency, b: b, log: log, reuse: o.ReuseByDirectory}, nil
}

// Close ends every renderer and the broker.
func (p *Parser) Close() error { return p.b.Close() }

// Thumbnail writes the thumbnail of the image at path to
// verify.OutputName(OutDir, path, index); index is the input's position
// and only names the output. A failure is one of the Err values above
// (wrapped, with a detail) or a *KilledError; its text is the reason the
// command prints.
//
// The renderer is bound to origin "file:" + the absolute path, document
// "#" + a per-Parser sequence number (with ReuseByDirectory: origin
// "dir:" + the absolute directory, and the renderer is kept). Each file is its own origin because
// images do not trust each other: a crafted file must not see another's
// pixels or leave state (a corrupted heap, a planted goroutine) for it.
// The sequence number makes every call a new document even for the same
// path, so Acquire always binds a fresh renderer, which is closed on
// return whatever happened. ReuseByDirectory gives that up within a
// directory, explicitly (see Options).
func (p *Parser) Thumbnail(ctx context.Context, index int, path string) (Result, error) {
	in, err := p.open(path)
	if err != nil {
		return Result{}, err
	}
	defer in.Close()
	origin, doc := p.key(path)
	r, err := p.b.Acquire(ctx, origin, doc)
	if err != nil {
		return Result{}, fmt.Errorf("start renderer: %w", err)
	}
	if !p.reuse {
		defer r.Close()
	}
	req := &imagepb.ThumbnailRequest{Budget: imageipc.BudgetToProto(p.budget), MaxSide: MaxSide}
	resp, fds, err := broker.Call(ctx, r, imageipc.Thumbnail, req, in)
	if err != nil {
		return Result{}, p.callError(err)
	}
	defer fds[0].Close() // ipc checked count and kind: a sealed memfd
	res, err := p.accept(resp, fds[0], index, path)
	if err != nil {
		// The renderer lied: whatever it is, it is not trusted further.
		p.log.Warn("rejected renderer reply", "file", path, "pid", r.PID(), "err", err)
		r.Close()
		return Result{}, err
	}
	return res, nil
}

// key is the origin and document a file's renderer is bound to: its own
// path and a fresh sequence number, or with reuse its directory alone.
func (p *Parser) key(path string) (origin, document string) {
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	if p.reuse {
		return "dir:" + filepath.Dir(abs), ""
	}
	return "file:" + abs, "#" + strconv.FormatUint(p.seq.Add(1), 10)
}

// open opens path read-only for the renderer. O_NONBLOCK keeps a FIFO from
// blocking the open; anything but a regular file is refused (the renderer
// only accepts ipc.ReadOnlyFile), and so is a file already over the input
// budget, without spending a renderer on it. The renderer still reads at
// most MaxInputBytes+1 bytes, in case the file grows.
//
// A symbolic link is refused (O_NOFOLLOW): a link planted among the
// inputs would otherwise hand the renderer, and the error messages that
// quote an input's first bytes, a file the link's owner chose.
func (p *Parser) open(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, syscall.ELOOP) {
		return nil, errors.New("a symbolic link; name the file itself")
	}
	if err != nil {
		return nil, err // *PathError: "open <path>: <reason>"
	}
	st, err := f.Stat()
	switch {
	case err != nil:
		err = fmt.Errorf("stat: %w", err)
	case !st.Mode().IsRegular():
		err = fmt.Errorf("not a regular file (%v)", st.Mode().Type())
	case st.Size() > p.budget.MaxInputBytes:
		err = fmt.Errorf("%w: input is %d bytes > %d", ErrOverBudget, st.Size(), p.budget.MaxInputBytes)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// callError maps a failed call to the reason for the file.
func (p *Parser) callError(err error) error {
	var (
		exit   *broker.ExitError
		status *ipc.StatusError
	)
	switch {
	case errors.As(err, &exit):
		return &KilledError{Exit: exit}
	case errors.As(err, &status):
		// The message is the renderer's text: keep it short; the
		// command escapes it (verify.FailLine).
		detail := status.Message
		if len(detail) > maxDetail {
			detail = detail[:maxDetail] + "..."
		}
		switch status.Code {
		case imageipc.CodeUnsupported:
			return fmt.Errorf("%w: %s", ErrUnsupportedFormat, detail)
		case imageipc.CodeCorrupt:
			return fmt.Errorf("%w: %s", ErrCorrupt, detail)
		case imageipc.CodeOverBudget:
			return fmt.Errorf("%w: %s", ErrOverBudget, detail)
		}
		return fmt.Errorf("%w: %s: %s", ErrRenderer, status.Code, detail)
	}
	return err // the caller's context ended, or the broker closed
}

// maxDetail bounds the renderer-supplied part of a failure reason.
const maxDetail = 200

// knownFormat reports whether f is a name thumb reports; anything else is
// a lie.
func knownFormat(f string) bool {
	switch f {
	case thumb.FormatPNG, thumb.FormatJPEG, thumb.FormatGIF, thumb.FormatBMP, thumb.FormatTIFF, thumb.FormatWebP:
		return true
	}
	return false
}

// accept checks the renderer's reply against the budget and against
// itself, checks and maps the pixels, and writes the PNG.
func (p *Parser) accept(resp *imagepb.ThumbnailResponse, memfd *os.File, index int, path string) (Result, error) {
	res := Result{Path: path, Format: resp.GetFormat(), Frames: int(resp.GetFrames())}
	if !knownFormat(res.Format) {
		return Result{}, fmt.Errorf("%w: unknown format %q", ErrBadReply, res.Format)
	}
	// Declared size within the budget, computed without overflow.
	w, h := resp.GetWidth(), resp.GetHeight()
	if hi, n := bits.Mul64(uint64(w), uint64(h)); w < 1 || h < 1 || hi != 0 || n > uint64(p.budget.MaxPixels) {
		return Result{}, fmt.Errorf("%w: declared size %dx%d outside the budget of %d pixels", ErrBadReply, w, h, p.budget.MaxPixels)
	}
	res.Width, res.Height = int(w), int(h)
	if res.Frames < 1 || res.Frames > p.budget.MaxFrames || (res.Frames > 1 && res.Format != thumb.FormatGIF) {
		return Result{}, fmt.Errorf("%w: %d frames for %s", ErrBadReply, res.Frames, res.Format)
	}
	// The thumbnail size follows from the declared size: the renderer has
	// no say in it, so a mismatch is a lie, not a rounding difference.
	tw, th := thumb.ThumbnailSize(thumb.Info{Width: res.Width, Height: res.Height}, MaxSide)
	if int(resp.GetThumbWidth()) != tw || int(resp.GetThumbHeight()) != th {
		return Result{}, fmt.Errorf("%w: thumbnail %dx%d for a %dx%d image, want %dx%d",
			ErrBadReply, resp.GetThumbWidth(), resp.GetThumbHeight(), w, h, tw, th)
	}
	res.ThumbWidth, res.ThumbHeight = tw, th
	// Exact size and immutability (seals), then a read-only mapping: the
	// bytes checked below are the bytes encoded.
	m, err := shm.Map(memfd, 4*tw*th)
	if err != nil {
		return Result{}, fmt.Errorf("%w: %w", ErrBadReply, err)
	}
	defer m.Close()
	img, err := verify.Pixels(tw, th, m.Bytes(), MaxSide)
	if err != nil {
		return Result{}, err
	}
	res.Thumb = verify.OutputName(p.out, path, index)
	if err := writeFile(res.Thumb, func(w io.Writer) error { return verify.WritePNG(w, img) }); err != nil {
		return Result{}, err
	}
	return res, nil
}

// writeFile writes name atomically: into a temporary file beside it, renamed
// into place only once complete, so that a failure never leaves a partial
// thumbnail behind.
func writeFile(name string, fill func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(name), ".thumb-*")
	if err != nil {
		return fmt.Errorf("write thumbnail: %w", err)
	}
	err = fill(tmp)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), name)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write thumbnail: %w", err)
	}
	return nil
}
