package sandboxed

import (
	"bytes"
	"context"
	"errors"
	"image"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/ipc"
	"github.com/sandkit/sandkit/renderer"

	"github.com/sandkit/sandkit/examples/docviewer/backend/sandboxed/worker"
	"github.com/sandkit/sandkit/examples/docviewer/docerr"
	"github.com/sandkit/sandkit/examples/docviewer/docipc"
	"github.com/sandkit/sandkit/examples/docviewer/doclimits"
	"github.com/sandkit/sandkit/examples/docviewer/docpb"
	"github.com/sandkit/sandkit/examples/docviewer/library"
)

// TestMain doubles as the renderer: the broker re-executes this test
// binary. Its renderer is the real worker, except for documents whose
// name says how to misbehave (see evilRender).
func TestMain(m *testing.M) {
	if renderer.Requested() {
		renderer.Main(registerTestRenderer)
	}
	os.Exit(m.Run())
}

// evilModes are the ways a compromised renderer answers a page request,
// keyed by the document's library id: the renderer knows only the id it is
// bound to. Each document is a copy of a valid PDF named "<mode>.pdf".
var evilModes = []string{"unsealed", "shortregion", "length", "beyond", "stride", "toolarge", "wrongdoc", "highdpi", "violation", "crash", "hang", "oom", "scribble"}

func evilMode(doc string) string {
	for _, m := range evilModes {
		if library.IDOf(m+".pdf") == doc {
			return m
		}
	}
	return ""
}

// testRegion is docipc.Region with a response kind the sending side does
// not check (ipc leaves SeccompListener to the receiver), so that a test
// renderer can send any descriptor as its region; the broker side keeps
// expecting ipc.SharedRegion.
var testRegion = ipc.NewMethod[*docpb.RegionRequest, *docpb.RegionResponse](ipc.MethodSpec{
	Name:             docipc.RegionName,
	MaxRequestBytes:  64,
	MaxResponseBytes: 64,
	ResponseFDs:      []ipc.FDKind{ipc.SeccompListener},
})

// scribbleByte is what the "scribble" renderer keeps writing over its
// region after every reply.
const scribbleByte = 0x5a

func registerTestRenderer(s *renderer.Session, mux *ipc.Mux) error {
	w := worker.New(s)
	ipc.Handle(mux, docipc.Open, w.Open)
	ipc.Handle(mux, testRegion, func(ctx context.Context, req *docpb.RegionRequest, fds []*os.File) (*docpb.RegionResponse, []*os.File, error) {
		_, doc := s.Origin()
		resp, out, err := w.Region(ctx, req, fds)
		if err != nil {
			return resp, out, err
		}
		size := int(req.GetSize())
		switch evilMode(doc) {
		case "unsealed":
			// The right size, but nothing sealed: it could shrink
			// under the broker's mapping.
			// A memfd from the broker, never sealed further.
			out[0].Close()
			f, err := s.Alloc(ctx, size)
			if err != nil {
				return nil, nil, err
			}
			return resp, []*os.File{f}, nil
		case "shortregion":
			out[0].Close()
			r, err := s.NewRegion(ctx, size/2)
			if err != nil {
				return nil, nil, err
			}
			// ipc closes the descriptor once sent; the test renderer
			// leaks the mapping.
			return resp, []*os.File{r.File()}, nil
		case "scribble":
			// From now on, keep overwriting the region's first page
			// worth: while pages are drawn, announced, copied and after.
			var region []byte
			var mapErr error
			rc, err := out[0].SyscallConn()
			if err != nil {
				return nil, nil, err
			}
			rc.Control(func(fd uintptr) {
				region, mapErr = unix.Mmap(int(fd), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
			})
			if mapErr != nil {
				return nil, nil, mapErr
			}
			go func() {
				page := region[:4*1275*1650]
				for {
					for i := range page {
						page[i] = scribbleByte
					}
					time.Sleep(time.Millisecond)
					clear(page)
				}
			}()
		}
		return resp, out, nil
	})
	ipc.Handle(mux, docipc.Render, func(ctx context.Context, req *docpb.RenderRequest, fds []*os.File) (*docpb.RenderResponse, []*os.File, error) {
		_, doc := s.Origin()
		mode := evilMode(doc)
		switch mode {
		case "":
			return w.Render(ctx, req, fds)
		case "violation":
			// What exploit code would try first: a socket.
			unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
			return nil, nil, ipc.Errorf(ipc.CodeInternal, "survived")
		case "crash":
			panic("renderer bug")
		case "hang":
			<-make(chan struct{}) // ignores ctx: only the call timeout ends it
		case "oom":
			// Fills memory page by page until the limit stops it: the
			// broker reports the memory limit only when the kernel's
			// resident peak backs the runtime's "out of memory".
			var keep [][]byte
			for {
				b := make([]byte, 64<<20)
				for i := 0; i < len(b); i += 4096 {
					b[i] = 1
				}
				//lint:ignore SA4010 keep holds the memory reachable, which is the misbehaviour
				keep = append(keep, b)
			}
		}
		resp, out, err := w.Render(ctx, req, fds)
		if err != nil {
			return nil, nil, err
		}
		switch mode {
		case "length":
			resp.Length -= 4
		case "beyond":
			resp.Length = doclimits.Default().MaxPageBytes() + 4
		case "stride":
			resp.Stride += 4
			resp.Length = int64(resp.Stride * resp.Height)
		case "toolarge":
			resp.Width, resp.Height, resp.Stride, resp.Length = 40000, 1, 160000, 160000
		case "wrongdoc":
			resp.Document = library.IDOf("multipage.pdf")
		case "highdpi":
			resp.Dpi = req.GetDpi() * 2
		}
		return resp, out, nil
	})
	return nil
}

// testLogger sends the broker's logs, renderers' stderr included, to the
// test log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// folder is a directory holding copies of testdata samples (as "src" or
// "src=name").
func folder(t testing.TB, samples ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, s := range samples {
		src, name, ok := strings.Cut(s, "=")
		if !ok {
			name = filepath.Base(src)
		}
		data, err := os.ReadFile(filepath.Join("..", "..", "testdata", src))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), data, 0o644))
	}
	return dir
}

// newBackend serves copies of testdata samples (as "src" or "src=name").
func newBackend(t testing.TB, mod func(*Config), samples ...string) *Backend {
	t.Helper()
	lib, err := library.Open(folder(t, samples...))
	require.NoError(t, err)
	cfg := Config{Library: lib, Logger: testLogger(t)}
	if mod != nil {
		mod(&cfg)
	}
	b, err := New(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	return b
}

func TestPolicyExceptions(t *testing.T) {
	l := doclimits.Default()
	p := Policy(l)
	assert.NoError(t, p.Validate())
	assert.Equal(t, uint64(2*l.MaxPageBytes()), p.Limits.SharedMemory)
	assert.Zero(t, p.Limits.FileSize)
	assert.Equal(t, l.MaxRenderTime+callSlack, p.Limits.CallTimeout)
	assert.Equal(t, []string{"sysinfo"}, p.Seccomp.Allow)
	if !raceDetector {
		assert.Equal(t, uint64(1<<30+128<<20), p.Limits.Memory)
	}
}

// TestPolicyNeedsSysinfo shows why "sysinfo" is allowed: without it the
// first page MuPDF draws (glibc qsort) kills the renderer.
func TestPolicyNeedsSysinfo(t *testing.T) {
	b := newBackend(t, func(c *Config) {
		c.Policy = Policy(doclimits.Default())
		c.Policy.Seccomp.Allow = nil
	}, "valid/multipage.pdf")
	_, err := b.RenderPage(context.Background(), library.IDOf("multipage.pdf"), 0, 72)
	require.ErrorIs(t, err, docerr.ErrSandbox)
	assert.Contains(t, err.Error(), "killed: sandbox violation sysinfo(")
}

func TestRendersEverySampleFormat(t *testing.T) {
	samples := []string{"valid/multipage.pdf", "valid/book.epub", "valid/shapes.xps", "valid/comic.cbz", "valid/drawing.svg", "valid/picture.png"}
	b := newBackend(t, nil, samples...)
	for _, s := range samples {
		id := library.IDOf(filepath.Base(s))
		n, err := b.PageCount(context.Background(), id)
		require.NoError(t, err, s)
		require.Positive(t, n)
		p, err := b.RenderPage(context.Background(), id, n-1, 72)
		require.NoError(t, err, s)
		assert.Equal(t, float64(72), p.DPI)
		assert.NotEqual(t, os.Getpid(), p.PID)
		assert.False(t, p.Image.Bounds().Empty())
		assert.Equal(t, uint8(0xff), p.Image.Pix[3], "%s: opaque", s)
	}
	// Letter at 150 dpi, exactly.
	p, err := b.RenderPage(context.Background(), library.IDOf("multipage.pdf"), 0, 150)
	require.NoError(t, err)
	assert.Equal(t, image.Rect(0, 0, 1275, 1650), p.Image.Bounds())
	assert.Equal(t, 4*1275, p.Image.Stride)

	_, err = b.RenderPage(context.Background(), library.IDOf("multipage.pdf"), 20, 72)
	assert.ErrorIs(t, err, docerr.ErrNotFound)
	_, err = b.RenderPage(context.Background(), library.IDOf("multipage.pdf"), 0, 5000)
	assert.ErrorIs(t, err, docerr.ErrInvalid)
	_, err = b.PageCount(context.Background(), "0123456789abcdef")
	assert.ErrorIs(t, err, docerr.ErrNotFound)

	// Every renderer reports its document and every layer of the policy.
	st := b.Status(context.Background())
	require.Len(t, st, len(samples))
	for _, rs := range st {
		assert.NotEmpty(t, rs.Name)
		assert.Positive(t, rs.Pages, rs.Name)
		for _, l := range b.Policy().Requested() {
			assert.Contains(t, strings.Join(rs.Layers, "|"), string(l), rs.Name)
		}
		assert.NotContains(t, strings.Join(rs.Layers, "|"), "NOT ", rs.Name)
	}
}

// TestHostileSamples: each hostile sample ends in a clear error of its
// kind, for that document only, in bounded time; a valid document renders
// afterwards from the same backend.
func TestHostileSamples(t *testing.T) {
	tests := []struct {
		name string
		kind error
		msg  string
		page bool // the error comes on page 1, not at open
	}{
		{"truncated.pdf", docerr.ErrCorrupt, "", false},
		{"random.bin", docerr.ErrUnsupported, "not a format", false},
		{"random.pdf", docerr.ErrCorrupt, "no objects found", false},
		{"cycle.pdf", docerr.ErrCorrupt, "cycle in page tree", true},
		{"hugepage.pdf", docerr.ErrOverBudget, "below the 36 dpi floor", true},
		{"manypages.pdf", docerr.ErrOverBudget, "1000000 pages", false},
		{"negcount.pdf", docerr.ErrCorrupt, "", false},
		{"bomb.pdf", docerr.ErrOverBudget, "decodes to more than", true},
	}
	samples := []string{"valid/multipage.pdf", "hostile/imagebomb.pdf"}
	for _, tt := range tests {
		samples = append(samples, "hostile/"+tt.name)
	}
	b := newBackend(t, nil, samples...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			id := library.IDOf(tt.name)
			_, err := b.PageCount(context.Background(), id)
			if tt.page {
				require.NoError(t, err)
				_, err = b.RenderPage(context.Background(), id, 0, 150)
			}
			require.ErrorIs(t, err, tt.kind)
			assert.Contains(t, err.Error(), tt.name)
			assert.Contains(t, err.Error(), tt.msg)
			assert.Less(t, time.Since(start), 10*time.Second)
			// Asking again gives the same answer.
			_, err2 := b.RenderPage(context.Background(), id, 0, 150)
			assert.ErrorIs(t, err2, tt.kind)
		})
	}
	// imagebomb.pdf renders (MuPDF subsamples it).
	_, err := b.RenderPage(context.Background(), library.IDOf("imagebomb.pdf"), 0, 72)
	assert.NoError(t, err)
	_, err = b.RenderPage(context.Background(), library.IDOf("multipage.pdf"), 3, 72)
	assert.NoError(t, err)
	kinds := map[string]bool{}
	for _, e := range b.Events() {
		kinds[e.Name+": "+e.Kind] = true
	}
	assert.True(t, kinds["manypages.pdf: document over budget"], "%v", kinds)
	assert.True(t, kinds["bomb.pdf: document over budget"], "%v", kinds)
}

// TestPagesOnlyFromOwnRenderer renders two documents' pages interleaved
// and concurrently: every page of A comes from A's renderer, every page of
// B from B's, and those are two different processes.
func TestPagesOnlyFromOwnRenderer(t *testing.T) {
	b := newBackend(t, nil, "valid/multipage.pdf=a.pdf", "valid/multipage.pdf=b.pdf")
	a, bb := library.IDOf("a.pdf"), library.IDOf("b.pdf")
	var mu sync.Mutex
	pids := map[string]map[int]bool{a: {}, bb: {}}
	var wg sync.WaitGroup
	for page := range 20 {
		for _, doc := range []string{a, bb} {
			wg.Go(func() {
				p, err := b.RenderPage(context.Background(), doc, page, 50)
				if !assert.NoError(t, err) {
					return
				}
				mu.Lock()
				pids[doc][p.PID] = true
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	require.Len(t, pids[a], 1)
	require.Len(t, pids[bb], 1)
	st := map[string]int{}
	for _, rs := range b.Status(context.Background()) {
		st[rs.Doc] = rs.PID
	}
	assert.True(t, pids[a][st[a]], "A's pages come from A's renderer %d: %v", st[a], pids[a])
	assert.True(t, pids[bb][st[bb]], "B's pages come from B's renderer %d: %v", st[bb], pids[bb])
	assert.NotEqual(t, st[a], st[bb])
}

// TestMisbehavingRenderer: a renderer that answers with anything the
// broker's checks refuse, breaks the sandbox, crashes or hangs fails that
// document with docerr.ErrSandbox and a clear reason; the backend keeps
// serving the others.
func TestMisbehavingRenderer(t *testing.T) {
	tests := map[string]string{
		"unsealed":    "killed: bad message",
		"shortregion": "page 1: page region: shm: OpenRegion: size 8388608, want 16777216",
		"length":      "length 8414996 for 1275x1650 px, want 8415000",
		"beyond":      "length 134217732 for 1275x1650 px, want 8415000",
		"stride":      "stride 5104 for width 1275",
		"toolarge":    "out of bounds",
		"wrongdoc":    "renderer is bound to",
		"highdpi":     "drawn at 300 dpi, asked for 150",
		"violation":   "killed: sandbox violation socket",
		"crash":       "killed: crashed",
		"hang":        "killed: wall-clock timeout",
		"oom":         "killed: memory limit",
	}
	var samples []string
	for _, m := range evilModes {
		if _, ok := tests[m]; ok {
			samples = append(samples, "valid/multipage.pdf="+m+".pdf")
		}
	}
	samples = append(samples, "valid/multipage.pdf")
	b := newBackend(t, func(c *Config) {
		c.Policy = Policy(doclimits.Default())
		c.Policy.Limits.SharedMemory *= 2             // "unsealed" and "shortregion" ask for a second region
		c.Policy.Limits.CallTimeout = 2 * time.Second // for "hang"
		if !raceDetector {
			// "oom" touches its whole limit before it dies, which must
			// fit in the call timeout on a loaded machine; the sample
			// page needs far less. (384 MiB when a 128 MiB page region
			// took part of it; regions are now sized to the page.)
			c.Policy.Limits.Memory = 256 << 20
		}
		c.MaxRenderers = 4
	}, samples...)
	good := library.IDOf("multipage.pdf")
	var ran []string
	for _, mode := range evilModes {
		if _, ok := tests[mode]; !ok {
			continue // not an error: see TestScribblingRenderer
		}
		t.Run(mode, func(t *testing.T) {
			if mode == "oom" && raceDetector {
				t.Skip("no memory limit under the race detector")
			}
			ran = append(ran, mode)
			id := library.IDOf(mode + ".pdf")
			start := time.Now()
			_, err := b.RenderPage(context.Background(), id, 0, 150)
			require.Error(t, err)
			assert.ErrorIs(t, err, docerr.ErrSandbox)
			assert.Contains(t, err.Error(), mode+".pdf")
			assert.Contains(t, err.Error(), tests[mode])
			assert.Less(t, time.Since(start), 10*time.Second)
			// Asking again gives the same error at once, without a
			// renderer to kill.
			// (Bindings are counted, not events: the killed renderer's
			// exit event may land in between.)
			bound := boundCount(b)
			start = time.Now()
			_, err2 := b.RenderPage(context.Background(), id, 0, 150)
			assert.Equal(t, err.Error(), err2.Error())
			assert.Less(t, time.Since(start), time.Second)
			assert.Equal(t, bound, boundCount(b), "no renderer bound")
			// The others are unaffected.
			p, err := b.RenderPage(context.Background(), good, 1, 150)
			require.NoError(t, err)
			assert.Equal(t, 1275, p.Image.Bounds().Dx())
		})
	}
	reasons := map[string]string{}
	for _, e := range b.Events() {
		assert.Equal(t, docerr.ErrSandbox.Error(), e.Kind)
		reasons[e.Name] = e.Reason
	}
	for _, mode := range ran {
		assert.Contains(t, reasons[mode+".pdf"], tests[mode], "event for %s", mode)
		assert.True(t, strings.HasPrefix(reasons[mode+".pdf"], "killed: "), reasons[mode+".pdf"])
	}
}

// TestContextCancel: a caller that gives up gets its context's error, and
// the renderer lives on.
func TestContextCancel(t *testing.T) {
	b := newBackend(t, nil, "valid/multipage.pdf", "valid/multipage.pdf=other.pdf")
	// A caller that gives up while the document is being opened leaves
	// nothing behind that breaks the next one, whatever the timing.
	other := library.IDOf("other.pdf")
	for _, wait := range []time.Duration{time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond} {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		b.PageCount(ctx, other)
		cancel()
	}
	n, err := b.PageCount(context.Background(), other)
	require.NoError(t, err)
	assert.Equal(t, 20, n)

	id := library.IDOf("multipage.pdf")
	_, err = b.PageCount(context.Background(), id)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = b.RenderPage(ctx, id, 0, 150)
	assert.True(t, errors.Is(err, context.Canceled), "%v", err)
	_, err = b.RenderPage(context.Background(), id, 0, 150)
	assert.NoError(t, err)
}

// TestScribblingRenderer: a renderer that keeps writing over its region
// after (and while) the broker copies a page out changes nothing the
// broker has returned: pages are the broker's own copies, and each is
// fetched from the region once.
func TestScribblingRenderer(t *testing.T) {
	b := newBackend(t, nil, "valid/multipage.pdf=scribble.pdf")
	id := library.IDOf("scribble.pdf")
	var pages []*image.RGBA
	var snaps [][]byte
	for page := range 3 {
		p, err := b.RenderPage(context.Background(), id, page, 150)
		require.NoError(t, err)
		require.Equal(t, image.Rect(0, 0, 1275, 1650), p.Image.Bounds())
		pages = append(pages, p.Image)
		snaps = append(snaps, slices.Clone(p.Image.Pix))
	}
	time.Sleep(200 * time.Millisecond) // the scribbling goes on
	for i, img := range pages {
		assert.True(t, bytes.Equal(snaps[i], img.Pix), "page %d changed after it was returned", i+1)
	}
	// The renderer's region really is being overwritten: pages copy
	// some of the scribbles (the copy may be torn; it is still the
	// broker's own, and only ever read once).
	require.Eventually(t, func() bool {
		p, err := b.RenderPage(context.Background(), id, 0, 150)
		return err == nil && bytes.Contains(p.Image.Pix, bytes.Repeat([]byte{scribbleByte}, 64))
	}, 5*time.Second, 10*time.Millisecond)
	assert.Empty(t, b.Events(), "a scribbling renderer breaks no check")
}

// boundCount counts the renderers the broker has bound so far.
func boundCount(b *Backend) int {
	n := 0
	for _, e := range b.b.Events() {
		if e.Kind == broker.EventBound {
			n++
		}
	}
	return n
}
