package render

import (
	"context"
	"errors"
	"image"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/examples/docviewer/docerr"
)

func readSample(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", name))
	require.NoError(t, err)
	return b
}

// inked counts pixels that are not white: a blank page is a failed render.
func inked(img *image.RGBA) int {
	n := 0
	for i := 0; i+3 < len(img.Pix); i += 4 {
		if img.Pix[i] < 250 || img.Pix[i+1] < 250 || img.Pix[i+2] < 250 {
			n++
		}
	}
	return n
}

func TestValidSamples(t *testing.T) {
	tests := []struct {
		file   string
		kind   string
		format string
		pages  int
	}{
		{"valid/multipage.pdf", "pdf", "PDF 1.7", 20},
		{"valid/book.epub", "epub", "EPUB", 0}, // reflowed: count depends on layout
		{"valid/shapes.xps", "xps", "XPS", 2},
		{"valid/comic.cbz", "cbz", "", 3},
		{"valid/drawing.svg", "svg", "", 1},
		{"valid/picture.png", "png", "Image", 1},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			d, err := Open(readSample(t, tt.file), DefaultLimits())
			require.NoError(t, err)
			defer d.Close()
			assert.Equal(t, tt.kind, d.Kind())
			if tt.format != "" {
				assert.Equal(t, tt.format, d.Format())
			}
			if tt.pages > 0 {
				assert.Equal(t, tt.pages, d.PageCount())
			} else {
				assert.Greater(t, d.PageCount(), 1)
			}
			b, err := d.PageBounds(0)
			require.NoError(t, err)
			assert.Greater(t, b.Width(), 0.0)
			img, res, err := d.Render(context.Background(), d.PageCount()-1, 100)
			require.NoError(t, err)
			assert.Equal(t, 100.0, res.DPI)
			assert.InDelta(t, b.Width()*100/72, float64(img.Bounds().Dx()), 1.5)
			assert.Greater(t, inked(img), 100, "page is blank")
			assert.Zero(t, res.Errors)
		})
	}
}

// cpuTime is the process's user+system CPU time: a bound on work done that
// holds on a loaded machine, where wall time does not.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestHostileSamples: each hostile document ends in a typed error, with
// little CPU (normally well under a second each; the bound is loose for
// -race and busy machines) and MuPDF's heap far below its cap. The sandbox
// adds rlimits on top.
func TestHostileSamples(t *testing.T) {
	tests := []struct {
		file string
		kind error // nil: renders (harmlessly)
		at   string
	}{
		{"hostile/truncated.pdf", ErrCorrupt, "open"},
		{"hostile/random.bin", ErrUnsupported, "open"},
		{"hostile/random.pdf", ErrCorrupt, "open"},
		{"hostile/cycle.pdf", ErrCorrupt, "render"},
		{"hostile/hugepage.pdf", ErrOverBudget, "render"},
		{"hostile/manypages.pdf", ErrOverBudget, "open"},
		{"hostile/negcount.pdf", ErrCorrupt, "open"},
		{"hostile/bomb.pdf", ErrOverBudget, "render"},
		{"hostile/imagebomb.pdf", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			start, cpu := time.Now(), cpuTime()
			d, err := Open(readSample(t, tt.file), DefaultLimits())
			if tt.at == "open" {
				require.Error(t, err)
				assert.ErrorIs(t, err, tt.kind)
				var de *docerr.Error
				assert.True(t, errors.As(err, &de), "not a *docerr.Error: %T", err)
				t.Logf("%v", err)
			} else {
				require.NoError(t, err)
				defer d.Close()
				_, _, err = d.Render(context.Background(), 0, 150)
				if tt.kind == nil {
					assert.NoError(t, err)
				} else {
					require.Error(t, err)
					assert.ErrorIs(t, err, tt.kind)
					t.Logf("%v", err)
				}
				assert.Less(t, d.Stats().HeapPeak, int64(64<<20), "MuPDF heap")
			}
			assert.Less(t, cpuTime()-cpu, 3*time.Second, "CPU")
			assert.Less(t, time.Since(start), 60*time.Second, "wall")
		})
	}
}

func TestPlanShrinksDPIToFitBudget(t *testing.T) {
	l := DefaultLimits()
	l.MinDPI = 10
	d, err := Open(readSample(t, "hostile/hugepage.pdf"), l)
	require.NoError(t, err)
	defer d.Close()

	p, err := d.Plan(0, 150)
	require.NoError(t, err)
	assert.Equal(t, 150.0, p.RequestedDPI)
	assert.Less(t, p.DPI, 29.0)
	assert.Greater(t, p.DPI, 28.0)
	assert.LessOrEqual(t, int64(p.Width)*int64(p.Height), l.MaxPixelsPerPage)

	// A page that fits keeps its DPI.
	d2, err := Open(readSample(t, "valid/multipage.pdf"), l)
	require.NoError(t, err)
	defer d2.Close()
	p2, err := d2.Plan(0, 150)
	require.NoError(t, err)
	assert.Equal(t, 150.0, p2.DPI)
	assert.Equal(t, 1275, p2.Width)
	assert.Equal(t, 1650, p2.Height)
}

func TestRenderIntoCallerBuffer(t *testing.T) {
	d, err := Open(readSample(t, "valid/multipage.pdf"), DefaultLimits())
	require.NoError(t, err)
	defer d.Close()
	p, err := d.Plan(2, 72)
	require.NoError(t, err)

	buf := make([]byte, p.Size()+16) // e.g. a memfd mapping rounded up
	buf[p.Size()] = 0xAB
	res, err := d.RenderInto(context.Background(), p, buf)
	require.NoError(t, err)
	assert.Equal(t, p, res.Plan)
	assert.Equal(t, byte(0xAB), buf[p.Size()], "wrote past the plan")
	img := &image.RGBA{Pix: buf[:p.Size()], Stride: p.Stride(), Rect: image.Rect(0, 0, p.Width, p.Height)}
	assert.Greater(t, inked(img), 1000)

	_, err = d.RenderInto(context.Background(), p, buf[:p.Size()-1])
	assert.ErrorIs(t, err, ErrInvalid)

	forged := p
	forged.Width *= 2
	forged.box.Max.X *= 2
	_, err = d.RenderInto(context.Background(), forged, make([]byte, forged.Size()))
	assert.ErrorIs(t, err, ErrInvalid)
}

func TestBadRequests(t *testing.T) {
	d, err := Open(readSample(t, "valid/multipage.pdf"), DefaultLimits())
	require.NoError(t, err)
	tests := []struct {
		name string
		page int
		dpi  float64
		want error
	}{
		{"page past end", 20, 72, docerr.ErrNotFound},
		{"negative page", -1, 72, docerr.ErrNotFound},
		{"dpi below floor", 0, 10, ErrInvalid},
		{"dpi too high", 0, 5000, ErrInvalid},
		{"dpi NaN", 0, nanDPI(), ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := d.Render(context.Background(), tt.page, tt.dpi)
			assert.ErrorIs(t, err, tt.want)
		})
	}
	require.NoError(t, d.Close())
	require.NoError(t, d.Close())
	_, _, err = d.Render(context.Background(), 0, 72)
	assert.ErrorIs(t, err, ErrInvalid)
}

func nanDPI() float64 { var z float64; return z / z }

func TestCancelledContext(t *testing.T) {
	d, err := Open(readSample(t, "valid/multipage.pdf"), DefaultLimits())
	require.NoError(t, err)
	defer d.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err = d.Render(ctx, 0, 72)
	assert.ErrorIs(t, err, context.Canceled)
	// The document stays usable.
	_, _, err = d.Render(context.Background(), 0, 72)
	assert.NoError(t, err)
}

func TestInputLimits(t *testing.T) {
	l := DefaultLimits()
	l.MaxInputBytes = 100
	_, err := Open(readSample(t, "valid/multipage.pdf"), l)
	assert.ErrorIs(t, err, ErrOverBudget)

	l = DefaultLimits()
	l.MaxPages = 5
	_, err = Open(readSample(t, "valid/multipage.pdf"), l)
	assert.ErrorIs(t, err, ErrOverBudget)

	l = DefaultLimits()
	l.MaxHeapBytes = 64 << 10 // too small for MuPDF's own context
	_, err = Open(readSample(t, "valid/multipage.pdf"), l)
	assert.ErrorIs(t, err, ErrInvalid)

	_, err = Open(nil, DefaultLimits())
	assert.ErrorIs(t, err, ErrUnsupported)

	_, err = Open([]byte("%PDF-1.4"), Limits{})
	assert.ErrorIs(t, err, ErrInvalid)
}

func TestHeapCapStopsRender(t *testing.T) {
	// imagebomb.pdf needs ~17 MiB of MuPDF heap to draw; give it 8.
	l := DefaultLimits()
	l.MaxHeapBytes = 8 << 20
	d, err := Open(readSample(t, "hostile/imagebomb.pdf"), l)
	require.NoError(t, err)
	defer d.Close()
	_, _, err = d.Render(context.Background(), 0, 72)
	assert.ErrorIs(t, err, ErrOverBudget)
	assert.LessOrEqual(t, d.Stats().HeapPeak, l.MaxHeapBytes)
	t.Logf("%v", err)
}

func TestSniff(t *testing.T) {
	tests := []struct {
		head string
		kind string
	}{
		{"%PDF-1.7\n", "pdf"},
		{"garbage then %PDF-1.4", "pdf"},
		{"\x89PNG\r\n\x1a\n....", "png"},
		{"\xff\xd8\xff\xe0", "jpeg"},
		{"GIF89a", "gif"},
		{"II*\x00", "tiff"},
		{"\xef\xbb\xbf<?xml version='1.0'?><svg xmlns='http://www.w3.org/2000/svg'/>", "svg"},
		{"<?xml version='1.0'?><FictionBook>", "fb2"},
		{"<html><body>hi</body></html>", ""},
		{"plain text", ""},
		{"PK\x03\x04", "cbz"},
		{"", ""},
	}
	for _, tt := range tests {
		kind, mime := Sniff([]byte(tt.head))
		assert.Equal(t, tt.kind, kind, "%q", tt.head)
		assert.Equal(t, tt.kind == "", mime == "", "%q", tt.head)
	}
}
