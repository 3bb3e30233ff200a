package thumb

import (
	"bytes"
	"errors"
	"image"
	_ "image/gif" // registered only so the test can compare sniff with image.DecodeConfig
	_ "image/jpeg"
	_ "image/png"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	_ "golang.org/x/image/bmp"
	_ "golang.org/x/image/tiff"
	_ "golang.org/x/image/webp"
)

// corpusCase is the expected outcome of one file in ../testdata. Exactly one
// of err and info is set; tw, th is the expected thumbnail size at
// DefaultMaxSide.
type corpusCase struct {
	info   Info
	tw, th int
	err    error
}

func ok(format string, w, h, frames, tw, th int) corpusCase {
	return corpusCase{info: Info{Format: format, Width: w, Height: h, Frames: frames}, tw: tw, th: th}
}

func fails(err error) corpusCase { return corpusCase{err: err} }

// corpus must list every file in ../testdata (TestCorpusIsComplete checks);
// testdata/README.md says the same in prose.
var corpus = map[string]corpusCase{
	// Valid images.
	"png_640x480.png":               ok(FormatPNG, 640, 480, 1, 256, 192),
	"png_1x1.png":                   ok(FormatPNG, 1, 1, 1, 1, 1),
	"png_gray16_64x64.png":          ok(FormatPNG, 64, 64, 1, 64, 64),
	"png_disguised.jpg":             ok(FormatPNG, 120, 80, 1, 120, 80),
	"jpeg_640x480.jpg":              ok(FormatJPEG, 640, 480, 1, 256, 192),
	"jpeg_300x1000.jpg":             ok(FormatJPEG, 300, 1000, 1, 77, 256),
	"gif_anim_400x300_3frames.gif":  ok(FormatGIF, 400, 300, 3, 256, 192),
	"gif_partial_frame_200x100.gif": ok(FormatGIF, 200, 100, 1, 200, 100),
	"bmp_101x67_24bit.bmp":          ok(FormatBMP, 101, 67, 1, 101, 67),
	"bmp_200x150_8bit.bmp":          ok(FormatBMP, 200, 150, 1, 200, 150),
	"tiff_500x375_deflate.tif":      ok(FormatTIFF, 500, 375, 1, 256, 192),
	"tiff_multi_ifd_64x48.tif":      ok(FormatTIFF, 64, 48, 1, 64, 48),
	"webp_lossy_640x480.webp":       ok(FormatWebP, 640, 480, 1, 256, 192),
	"webp_lossless_300x1000.webp":   ok(FormatWebP, 300, 1000, 1, 77, 256),
	"webp_alpha_200x150.webp":       ok(FormatWebP, 200, 150, 1, 200, 150),

	// Hostile inputs.
	"empty.png":                      fails(ErrCorrupt),
	"random_4k.bin":                  fails(ErrUnsupportedFormat),
	"text_as.png":                    fails(ErrUnsupportedFormat),
	"png_truncated.png":              fails(ErrCorrupt),
	"png_truncated_header.png":       fails(ErrCorrupt),
	"png_bad_crc.png":                fails(ErrCorrupt),
	"png_header_100000x100000.png":   fails(ErrOverBudget),
	"png_bomb_20000x20000.png":       fails(ErrOverBudget),
	"png_lying_7000x7000.png":        fails(ErrCorrupt),
	"png_zero_width.png":             fails(ErrCorrupt),
	"jpeg_truncated.jpg":             fails(ErrCorrupt),
	"jpeg_header_65535x65535.jpg":    fails(ErrOverBudget),
	"gif_truncated.gif":              fails(ErrCorrupt),
	"gif_screen_65535x65535.gif":     fails(ErrOverBudget),
	"gif_2000_frames.gif":            fails(ErrOverBudget),
	"gif_bad_block.gif":              fails(ErrCorrupt),
	"bmp_header_50000x50000.bmp":     fails(ErrOverBudget),
	"bmp_0x0.bmp":                    fails(ErrCorrupt),
	"bmp_rle8.bmp":                   fails(ErrUnsupportedFormat),
	"tiff_1000000x1000000.tif":       fails(ErrOverBudget),
	"tiff_4294967295x4294967295.tif": fails(ErrCorrupt),
	"webp_canvas_16384x16384.webp":   fails(ErrOverBudget),
	"webp_animated.webp":             fails(ErrUnsupportedFormat),
}

var sentinels = []error{ErrUnsupportedFormat, ErrCorrupt, ErrOverBudget}

func readCorpus(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "testdata", name))
	require.NoError(t, err)
	return data
}

func TestCorpusIsComplete(t *testing.T) {
	ents, err := os.ReadDir(filepath.Join("..", "testdata"))
	require.NoError(t, err)
	onDisk := map[string]bool{}
	for _, e := range ents {
		if e.Name() == "README.md" {
			continue
		}
		onDisk[e.Name()] = true
		assert.Contains(t, corpus, e.Name(), "corpus file without an expected outcome")
		st, err := e.Info()
		require.NoError(t, err)
		assert.Less(t, st.Size(), int64(200<<10), "%s: corpus files stay small", e.Name())
	}
	for name := range corpus {
		assert.True(t, onDisk[name], "%s is expected but missing from testdata (go run ./internal/gencorpus)", name)
	}
	readme, err := os.ReadFile(filepath.Join("..", "testdata", "README.md"))
	require.NoError(t, err)
	for name := range corpus {
		assert.Contains(t, string(readme), name, "testdata/README.md should describe every file")
	}
}

func TestCorpus(t *testing.T) {
	for name, want := range corpus {
		t.Run(name, func(t *testing.T) {
			data := readCorpus(t, name)
			b := DefaultBudget()

			pinfo, perr := Probe(data, b)
			info, img, err := Thumbnail(data, b, 0)

			if want.err != nil {
				require.Error(t, err)
				assert.ErrorIs(t, err, want.err, "got %v", err)
				assert.Nil(t, img)
				assert.Equal(t, Info{}, info)
				for _, s := range sentinels {
					if s != want.err {
						assert.NotErrorIs(t, err, s, "an error wraps exactly one sentinel")
					}
				}
				// Probe catches everything decidable from the header;
				// only corrupt pixel data is left to Thumbnail.
				if perr == nil {
					assert.ErrorIs(t, err, ErrCorrupt)
				} else {
					assert.Equal(t, perr.Error(), err.Error())
				}
				t.Logf("%v", err)
				return
			}

			require.NoError(t, err)
			require.NoError(t, perr)
			assert.Equal(t, want.info, info)
			assert.Equal(t, want.info, pinfo)
			require.NotNil(t, img)
			assert.Equal(t, image.Rect(0, 0, want.tw, want.th), img.Bounds())
			tw, th := ThumbnailSize(info, 0)
			assert.Equal(t, [2]int{want.tw, want.th}, [2]int{tw, th})
			assertPremultiplied(t, img)

			// The standard registry agrees on the format (content sniffing,
			// not file names: png_disguised.jpg is a PNG).
			_, regFormat, rerr := image.DecodeConfig(bytes.NewReader(data))
			require.NoError(t, rerr)
			assert.Equal(t, want.info.Format, regFormat)

			// ThumbnailInto renders the same pixels into a caller buffer.
			dst := make([]byte, 4*tw*th)
			iinfo, iw, ih, ierr := ThumbnailInto(dst, data, b, 0)
			require.NoError(t, ierr)
			assert.Equal(t, info, iinfo)
			assert.Equal(t, [2]int{tw, th}, [2]int{iw, ih})
			assert.True(t, bytes.Equal(img.Pix, dst), "ThumbnailInto and Thumbnail differ")
		})
	}
}

// TestCorpusAllocations is the test-only memory check: inputs refused by the
// budget must be refused before any pixel memory exists, and no input may
// make the decoders allocate more than its accepted canvas implies.
func TestCorpusAllocations(t *testing.T) {
	for name, want := range corpus {
		data := readCorpus(t, name)
		b := DefaultBudget()
		got := allocated(func() { _, _, _ = Thumbnail(data, b, 0) })
		limit := allocLimit(len(data), b.MaxPixels)
		if want.err != nil && errors.Is(want.err, ErrOverBudget) {
			limit = 256 << 10
		} else if want.err == nil {
			limit = allocLimit(len(data), int64(want.info.Width*want.info.Height))
		}
		assert.LessOrEqual(t, got, limit, "%s allocated %d bytes", name, got)
		t.Logf("%-32s %10d bytes allocated (limit %d)", name, got, limit)
	}
}

// allocLimit is a generous upper bound on the bytes a Thumbnail call may
// allocate in total: 24 bytes per accepted pixel (the worst decoders peak
// near that, see the package documentation), per-chunk decoder state proportional to the input, and a fixed
// allowance for tables and the thumbnail itself.
func allocLimit(inputLen int, pixels int64) uint64 {
	return 16<<20 + 1024*uint64(inputLen) + 24*uint64(pixels)
}

// allocated reports the bytes allocated while fn runs. The tests that use it
// do not run in parallel, so other goroutines add little noise.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func assertPremultiplied(t testing.TB, img *image.RGBA) {
	t.Helper()
	for i := 0; i+3 < len(img.Pix); i += 4 {
		p := img.Pix[i : i+4]
		if p[0] > p[3] || p[1] > p[3] || p[2] > p[3] {
			t.Fatalf("pixel %d is not premultiplied: %v", i/4, p)
		}
	}
}
