package parser_test

import (
	"context"
	"github.com/sandkit/sandkit/internal/fdkind"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/ipc"
	"github.com/sandkit/sandkit/renderer"

	"github.com/sandkit/sandkit/examples/imageparser/imageipc"
	"github.com/sandkit/sandkit/examples/imageparser/imagepb"
	"github.com/sandkit/sandkit/examples/imageparser/imagerenderer"
)

// TestMain doubles as the renderer: the parsers under test re-execute this
// test binary, which serves the real imagerenderer handler — except for
// inputs that start with misbehaveMagic, on which it plays a compromised
// renderer (see registerForTests). That mode exists only in this test
// binary; the command's renderer has no such code.
func TestMain(m *testing.M) {
	if renderer.Requested() {
		renderer.Main(registerForTests)
	}
	os.Exit(m.Run())
}

// misbehaveMagic starts a test input that tells the test renderer how to
// misbehave: "SANDKIT-MISBEHAVE <mode>\n".
const misbehaveMagic = "SANDKIT-MISBEHAVE "

// rawThumbnail is imageipc.Thumbnail as a compromised renderer would speak
// it: same name, same request, but a response fd kind whose check the ipc
// sender skips (the seccomp listener can only be checked through /proc,
// which only the receiving broker has). A compromised renderer would not
// use our ipc package at all; this lets the test send any descriptor
// while the broker's side still checks against imageipc.Thumbnail.
var rawThumbnail = ipc.NewMethod[*imagepb.ThumbnailRequest, *imagepb.ThumbnailResponse](ipc.MethodSpec{
	Name:             imageipc.Thumbnail.Spec().Name,
	MaxRequestBytes:  imageipc.Thumbnail.Spec().MaxRequestBytes,
	MaxResponseBytes: 4096,
	RequestFDs:       []ipc.FDKind{ipc.ReadOnlyFile},
	ResponseFDs:      []ipc.FDKind{ipc.SeccompListener},
})

func registerForTests(s *renderer.Session, mux *ipc.Mux) error {
	ipc.Handle(mux, rawThumbnail, func(ctx context.Context, req *imagepb.ThumbnailRequest, fds []*os.File) (*imagepb.ThumbnailResponse, []*os.File, error) {
		var head [64]byte
		n, _ := fds[0].ReadAt(head[:], 0) // pread: the real handler still reads from 0
		mode, found := strings.CutPrefix(string(head[:n]), misbehaveMagic)
		if !found {
			return imagerenderer.Thumbnail(ctx, s, req, fds)
		}
		mode, _, _ = strings.Cut(mode, "\n")
		if mode != "input-fd" {
			fds[0].Close()
		}
		return misbehave(ctx, s, mode, fds[0])
	})
	return nil
}

// A plausible reply for a 640x480 PNG; each mode spoils one thing.
const (
	fakeW, fakeH   = 640, 480
	fakeTW, fakeTH = 256, 192
)

func fakeReply() *imagepb.ThumbnailResponse {
	return &imagepb.ThumbnailResponse{Format: "png", Width: fakeW, Height: fakeH, Frames: 1, ThumbWidth: fakeTW, ThumbHeight: fakeTH}
}

// memfd returns a memfd of size bytes from the broker (a renderer can
// make none of its own), filled by fill, with seals added.
func memfd(ctx context.Context, s *renderer.Session, size int, seals int, fill func([]byte)) (*os.File, error) {
	f, err := s.Alloc(ctx, size)
	if err != nil {
		return nil, err
	}
	fd := int(f.Fd())
	if fill != nil {
		mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			f.Close()
			return nil, err
		}
		fill(mem)
		unix.Munmap(mem)
	}
	if seals != 0 {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}

func sealed(ctx context.Context, s *renderer.Session, size int, fill func([]byte)) (*os.File, error) {
	return memfd(ctx, s, size, fdkind.SealsImmutable, fill)
}

// misbehave answers as a compromised or broken renderer would.
func misbehave(ctx context.Context, s *renderer.Session, mode string, in *os.File) (*imagepb.ThumbnailResponse, []*os.File, error) {
	var (
		resp = fakeReply()
		f    *os.File
		err  error
	)
	size := 4 * fakeTW * fakeTH
	switch mode {
	case "unsealed": // the renderer could change the pixels after the check
		f, err = memfd(ctx, s, size, 0, nil)
	case "no-write-seal": // size fixed, bytes still writable
		f, err = memfd(ctx, s, size, fdkind.SealsFixedSize, nil)
	case "eventfd": // not a memfd at all
		var fd int
		fd, err = unix.Eventfd(0, unix.EFD_CLOEXEC)
		f = os.NewFile(uintptr(fd), "eventfd")
	case "input-fd": // hand the broker's own file back
		f = in
	case "short": // one pixel missing
		f, err = sealed(ctx, s, size-4, nil)
	case "long":
		f, err = sealed(ctx, s, size+4, nil)
	case "thumb-size": // pixels for a size the image does not give
		resp.ThumbWidth, resp.ThumbHeight = 256, 256
		f, err = sealed(ctx, s, 4*256*256, nil)
	case "over-budget": // a thumbnail larger than any honest one
		resp.Width, resp.Height, resp.ThumbWidth, resp.ThumbHeight = 300, 300, 300, 300
		f, err = sealed(ctx, s, 4*300*300, nil)
	case "declared-huge":
		resp.Width, resp.Height = 1<<40, 1<<40
		f, err = sealed(ctx, s, size, nil)
	case "frames":
		resp.Frames = 5 // a PNG with frames
		f, err = sealed(ctx, s, size, nil)
	case "format": // tries to forge an output line
		resp.Format = "png\nOK forged"
		f, err = sealed(ctx, s, size, nil)
	case "not-premultiplied":
		f, err = sealed(ctx, s, size, func(b []byte) { b[0] = 0xff }) // red > alpha
	case "internal":
		return nil, nil, ipc.Errorf(ipc.CodeInternal, "out of ideas")
	case "crash":
		go panic("renderer bug") // a goroutine panic is fatal: no ipc recovery
		time.Sleep(time.Hour)
	case "socket":
		unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0) // forbidden: the monitor kills
	case "hang":
		time.Sleep(time.Hour) // ignores the propagated deadline
	case "memory":
		// Fills memory, page by page, until the limit stops it and the
		// runtime dies. The pages are touched: the broker reports the
		// memory limit only when the kernel's resident peak backs the
		// runtime's "out of memory" (one allocation past the limit,
		// refused before anything was touched, is reported as a crash).
		var hog [][]byte
		for {
			b := make([]byte, 64<<20)
			for i := 0; i < len(b); i += 4096 {
				b[i] = 1
			}
			//lint:ignore SA4010 hog holds the memory reachable, which is the misbehaviour
			hog = append(hog, b)
		}
	case "cpu":
		//lint:ignore SA5002 the spin is the misbehaviour
		for {
		}
	default:
		return nil, nil, ipc.Errorf(ipc.CodeInvalidArgument, "unknown misbehaviour %q", mode)
	}
	if err != nil {
		return nil, nil, ipc.Errorf(ipc.CodeInternal, "%s: %v", mode, err)
	}
	return resp, []*os.File{f}, nil
}

// testLogger sends the parser's and broker's logs, renderers' stderr
// included, to the test log.
func testLogger(t testing.TB) *slog.Logger {
	if _, bench := t.(*testing.B); bench {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
