package verify

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/png"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPixels(t *testing.T) {
	tests := []struct {
		name          string
		w, h, maxSide int
		n             int
		ok            bool
	}{
		{"exact", 256, 192, 256, 4 * 256 * 192, true},
		{"1x1", 1, 1, 256, 4, true},
		{"maxSide square", 256, 256, 256, 4 * 256 * 256, true},
		{"one byte short", 256, 192, 256, 4*256*192 - 1, false},
		{"one byte long", 256, 192, 256, 4*256*192 + 1, false},
		{"pixels for transposed size", 192, 256, 256, 4 * 256 * 192, true},
		{"3 bytes per pixel", 10, 10, 256, 300, false},
		{"empty buffer", 1, 1, 256, 0, false},
		{"zero width", 0, 10, 256, 0, false},
		{"zero height", 10, 0, 256, 0, false},
		{"negative width", -1, 10, 256, 40, false},
		{"negative both", -2, -2, 256, 16, false}, // product would be positive
		{"width over maxSide", 257, 1, 256, 4 * 257, false},
		{"height over maxSide", 1, 257, 256, 4 * 257, false},
		{"zero maxSide", 1, 1, 0, 4, false},
		{"negative maxSide", 1, 1, -1, 4, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			buf := make([]byte, tc.n)
			img, err := Pixels(tc.w, tc.h, buf, tc.maxSide)
			if !tc.ok {
				require.ErrorIs(t, err, ErrBadReply)
				assert.Nil(t, img)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, image.Rect(0, 0, tc.w, tc.h), img.Bounds())
			assert.Equal(t, 4*tc.w, img.Stride)
			assert.Equal(t, len(buf), cap(img.Pix), "capacity trimmed")
			if len(buf) > 0 {
				assert.Same(t, &buf[0], &img.Pix[0], "wraps, does not copy")
			}
		})
	}
}

func TestPixelsOverflow(t *testing.T) {
	// With a huge maxSide, 4*w*h wraps around 64 bits to small values; none
	// may match a small buffer.
	huge := math.MaxInt
	for _, wh := range [][2]int{
		{1 << 31, 1 << 31},   // 4*w*h = 2^64 -> 0
		{1 << 62, 4},         // w*h*4 = 2^66
		{1 << 32, 1<<30 + 0}, // 2^62*4 = 2^64
		{huge, huge},
		{huge, 1},
	} {
		for _, n := range []int{0, 4, 16} {
			_, err := Pixels(wh[0], wh[1], make([]byte, n), huge)
			assert.ErrorIs(t, err, ErrBadReply, "%v with %d bytes", wh, n)
		}
	}
}

func TestPixelsPremultiplied(t *testing.T) {
	buf := []byte{10, 20, 30, 40, 0, 0, 0, 0, 255, 255, 255, 255, 1, 0, 0, 0}
	_, err := Pixels(2, 2, buf, 8)
	require.ErrorIs(t, err, ErrBadReply)
	assert.EqualError(t, err, "bad reply from renderer: pixel (1,1) is not premultiplied RGBA")
	buf[12] = 0
	img, err := Pixels(2, 2, buf, 8)
	require.NoError(t, err)
	assert.Equal(t, color.RGBA{10, 20, 30, 40}, img.RGBAAt(0, 0))
}

func TestWritePNG(t *testing.T) {
	buf := make([]byte, 4*3*2)
	for i := range buf {
		buf[i] = 0x80
	}
	img, err := Pixels(3, 2, buf, 256)
	require.NoError(t, err)
	var out bytes.Buffer
	require.NoError(t, WritePNG(&out, img))
	back, err := png.Decode(&out)
	require.NoError(t, err)
	assert.Equal(t, image.Rect(0, 0, 3, 2), back.Bounds())
	r, g, b, a := back.At(2, 1).RGBA()
	assert.Equal(t, [4]uint32{0x8080, 0x8080, 0x8080, 0x8080}, [4]uint32{r, g, b, a})

	assert.Error(t, WritePNG(&out, nil))
	assert.ErrorIs(t, WritePNG(failWriter{}, img), errWrite)
}

var errWrite = errors.New("disk full")

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errWrite }

func TestOutputName(t *testing.T) {
	tests := []struct {
		in    string
		index int
		want  string
	}{
		{"photo.jpg", 0, "0000-photo.png"},
		{"/home/u/pics/photo.JPG", 7, "0007-photo.png"},
		{"../../etc/passwd", 1, "0001-passwd.png"},
		{"../../etc/passwd/..", 1, "0001-image.png"},
		{"..", 2, "0002-image.png"},
		{".", 2, "0002-image.png"},
		{"", 3, "0003-image.png"},
		{"/", 3, "0003-image.png"},
		{"dir/", 3, "0003-image.png"},
		{".hidden.png", 4, "0004-hidden.png"},
		{"...png", 4, "0004-image.png"},
		{"..png.png", 4, "0004-png.png"},
		{"-rf.png", 5, "0005-rf.png"},
		{"a b\nc\x00d.gif", 6, "0006-a_b_c_d.png"},
		{"evil\r\nOK fake.png", 6, "0006-evil__OK_fake.png"},
		{"back\\slash.png", 8, "0008-back_slash.png"},
		{"archive.tar.gz", 9, "0009-archive.tar.png"},
		{"ünïcode.webp", 10, "0010-_n_code.png"},
		{"\xff\xfe.bmp", 11, "0011-__.png"},
		{"x.png", 12345, "12345-x.png"},
		{"x.png", -1, "18446744073709551615-x.png"},
		{strings.Repeat("a", 300) + ".png", 0, "0000-" + strings.Repeat("a", 64) + ".png"},
	}
	for _, tc := range tests {
		got := OutputName("out", tc.in, tc.index)
		assert.Equal(t, filepath.Join("out", tc.want), got, "%q", tc.in)
		assert.Equal(t, "out", filepath.Dir(got), "%q stays inside outDir", tc.in)
		assert.LessOrEqual(t, len(filepath.Base(got)), 100)
	}
	assert.Equal(t, "/tmp/thumbs/0001-a.png", OutputName("/tmp/thumbs/", "a.png", 1))

	// Duplicate base names, and names that sanitise to the same stem, stay
	// distinct through the index.
	seen := map[string]bool{}
	for i, in := range []string{"a/x.png", "b/x.png", "x.jpg", "x?.png", "x!.png", "x.png"} {
		name := OutputName("out", in, i)
		assert.False(t, seen[name], "%s is not unique", name)
		seen[name] = true
	}
}

func TestLines(t *testing.T) {
	assert.Equal(t, "OK cat.png png 640x480 frames=1 -> out/0000-cat.png",
		OKLine("cat.png", "png", 640, 480, 1, "out/0000-cat.png"))
	assert.Equal(t, "OK anim.gif gif 400x300 frames=3 -> out/0001-anim.png",
		OKLine("anim.gif", "gif", 400, 300, 3, "out/0001-anim.png"))
	assert.Equal(t, "FAIL bomb.png: over budget: 20000x20000 = 400000000 pixels > 50000000",
		FailLine("bomb.png", errors.New("over budget: 20000x20000 = 400000000 pixels > 50000000")))

	// Names that could split or forge lines are quoted.
	assert.Equal(t, `OK "a b.png" png 1x1 frames=1 -> out/0000-a_b.png`,
		OKLine("a b.png", "png", 1, 1, 1, "out/0000-a_b.png"))
	assert.Equal(t, `FAIL "x\nOK y.png png 1x1 frames=1 -> /etc/passwd": unknown error`,
		FailLine("x\nOK y.png png 1x1 frames=1 -> /etc/passwd", nil))
	assert.Equal(t, `FAIL "\"q.png": e`, FailLine(`"q.png`, errors.New("e")))
	assert.Equal(t, `FAIL "": e`, FailLine("", errors.New("e")))
	assert.Equal(t, `FAIL "\xff.png": e`, FailLine("\xff.png", errors.New("e")))
	assert.Equal(t, `FAIL "\u202egnp.exe": e`, FailLine("\u202egnp.exe", errors.New("e")), "bidi override escaped")
	assert.Equal(t, `OK x.png "png\nFAIL" 1x1 frames=1 -> t.png`, OKLine("x.png", "png\nFAIL", 1, 1, 1, "t.png"))

	// Reasons (possibly renderer-supplied) stay on one line and are bounded.
	assert.Equal(t, `FAIL f: a\nb\x00c\xff\u202e`, FailLine("f", errors.New("a\nb\x00c\xff\u202e")))
	long := FailLine("f", errors.New(strings.Repeat("é", 1000)))
	assert.Equal(t, "FAIL f: "+strings.Repeat("é", 300)+"...", long)
	for _, l := range []string{long, FailLine("a\nb", errors.New("c\r\nd"))} {
		assert.NotContains(t, l, "\n")
		assert.NotContains(t, l, "\r")
	}
}

// FuzzPixels checks that Pixels accepts exactly the well-formed replies and
// that an accepted image never exposes bytes outside buf.
func FuzzPixels(f *testing.F) {
	f.Add(2, 2, 256, []byte{0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 9, 3, 2, 1, 4})
	f.Add(1<<31, 1<<31, math.MaxInt, []byte{})
	f.Add(-1, -1, 256, []byte{0, 0, 0, 0})
	f.Add(1, 1, 0, []byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, w, h, maxSide int, buf []byte) {
		img, err := Pixels(w, h, buf, maxSide)
		if err != nil {
			if !errors.Is(err, ErrBadReply) || img != nil {
				t.Fatalf("err %v img %v", err, img)
			}
			return
		}
		if w < 1 || h < 1 || w > maxSide || h > maxSide || len(buf) != 4*w*h || len(buf)/4/w != h {
			t.Fatalf("accepted %dx%d max %d with %d bytes", w, h, maxSide, len(buf))
		}
		if img.Bounds() != image.Rect(0, 0, w, h) || cap(img.Pix) != len(buf) || img.Stride != 4*w {
			t.Fatalf("bad image %v stride %d cap %d", img.Bounds(), img.Stride, cap(img.Pix))
		}
		// Touch the last pixel: must not panic.
		_ = img.RGBAAt(w-1, h-1)
	})
}
