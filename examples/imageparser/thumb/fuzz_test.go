package thumb

import (
	"errors"
	"image"
	"strings"
	"testing"
)

// fuzzBudget is small so that each execution is fast and the allocation
// bound below is tight.
func fuzzBudget() Budget {
	return Budget{MaxPixels: 1 << 20, MaxFrames: 64, MaxInputBytes: 1 << 20}
}

// FuzzThumbnail checks that no input panics (a recovered decoder panic would
// show up as an ErrCorrupt whose text says so, which also fails here), that
// every error wraps a sentinel, that a result matches ThumbnailSize and is
// valid premultiplied RGBA, and that no input allocates more than its
// accepted canvas implies (see allocLimit). Seeds: testdata/fuzz/FuzzThumbnail,
// generated from ../testdata by internal/gencorpus.
func FuzzThumbnail(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		b := fuzzBudget()
		var (
			info Info
			img  *image.RGBA
			err  error
		)
		got := allocated(func() { info, img, err = Thumbnail(data, b, 48) })
		if limit := allocLimit(len(data), b.MaxPixels); got > limit {
			t.Fatalf("allocated %d bytes > %d for %d input bytes (info %+v, err %v)", got, limit, len(data), info, err)
		}
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupportedFormat) && !errors.Is(err, ErrOverBudget) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			if img != nil || info != (Info{}) {
				t.Fatalf("results alongside an error: %+v %v", info, img.Bounds())
			}
			var perr error
			if _, perr = Probe(data, b); perr != nil && perr.Error() != err.Error() {
				t.Fatalf("Probe and Thumbnail disagree: %v vs %v", perr, err)
			}
			if containsPanic(err) {
				t.Fatalf("decoder panicked: %v", err)
			}
			return
		}
		if int64(info.Width)*int64(info.Height) > b.MaxPixels || info.Frames < 1 || info.Frames > b.MaxFrames {
			t.Fatalf("accepted outside the budget: %+v", info)
		}
		w, h := ThumbnailSize(info, 48)
		if img.Bounds() != image.Rect(0, 0, w, h) || w < 1 || h < 1 || w > 48 || h > 48 {
			t.Fatalf("thumbnail %v for %+v, want %dx%d", img.Bounds(), info, w, h)
		}
		assertPremultiplied(t, img)
	})
}

func containsPanic(err error) bool {
	return strings.Contains(err.Error(), "decoder panicked")
}
