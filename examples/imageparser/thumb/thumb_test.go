package thumb

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/gif"
	"image/png"
	"io"
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	xdraw "golang.org/x/image/draw"
	"golang.org/x/image/tiff"
)

func TestThumbnailSize(t *testing.T) {
	const big = math.MaxInt
	tests := []struct {
		w, h, maxSide int
		tw, th        int
	}{
		{640, 480, 0, 256, 192},
		{640, 480, 256, 256, 192},
		{480, 640, 256, 192, 256},
		{300, 1000, 256, 77, 256}, // 76.8 rounds up
		{1000, 300, 256, 256, 77},
		{1, 1, 256, 1, 1},
		{256, 256, 256, 256, 256},
		{257, 257, 256, 256, 256},
		{257, 1, 256, 256, 1},
		{1, 100000, 256, 1, 256}, // at least one pixel
		{100000, 1, 256, 256, 1},
		{100, 50, 256, 100, 50}, // never upscaled
		{4000, 3000, 100, 100, 75},
		{3, 2, 1, 1, 1},
		{1000, 999, 10, 10, 10},
		{1000, 949, 10, 10, 9},
		{big, big, 256, 256, 256},
		{big, big - 1, 256, 256, 256},
		{big, 1, 256, 256, 1},
		{big, big / 2, big - 1, big - 1, big / 2}, // no overflow in n*maxSide
		{0, 10, 256, 0, 0},
		{10, -1, 256, 0, 0},
		{-5, -5, 256, 0, 0},
	}
	for _, tc := range tests {
		tw, th := ThumbnailSize(Info{Width: tc.w, Height: tc.h}, tc.maxSide)
		assert.Equal(t, [2]int{tc.tw, tc.th}, [2]int{tw, th}, "%dx%d max %d", tc.w, tc.h, tc.maxSide)
	}
}

func TestBudget(t *testing.T) {
	data := readCorpus(t, "png_640x480.png")

	t.Run("input bytes", func(t *testing.T) {
		b := DefaultBudget()
		b.MaxInputBytes = int64(len(data))
		_, err := Probe(data, b)
		require.NoError(t, err)
		b.MaxInputBytes--
		_, _, err = Thumbnail(data, b, 0)
		require.ErrorIs(t, err, ErrOverBudget)
		assert.Contains(t, err.Error(), fmt.Sprintf("input is %d bytes > %d", len(data), len(data)-1))
	})

	t.Run("pixels exact", func(t *testing.T) {
		b := DefaultBudget()
		b.MaxPixels = 640 * 480
		_, _, err := Thumbnail(data, b, 0)
		require.NoError(t, err)
		b.MaxPixels--
		_, _, err = Thumbnail(data, b, 0)
		require.ErrorIs(t, err, ErrOverBudget)
		assert.EqualError(t, err, "over budget: 640x480 = 307200 pixels > 307199")
	})

	t.Run("frames", func(t *testing.T) {
		anim := readCorpus(t, "gif_anim_400x300_3frames.gif")
		b := DefaultBudget()
		b.MaxFrames = 3
		info, err := Probe(anim, b)
		require.NoError(t, err)
		assert.Equal(t, 3, info.Frames)
		b.MaxFrames = 2
		_, err = Probe(anim, b)
		require.ErrorIs(t, err, ErrOverBudget)
		assert.EqualError(t, err, "over budget: more than 2 frames")
	})

	t.Run("zero budget refuses everything", func(t *testing.T) {
		_, err := Probe(data, Budget{})
		require.ErrorIs(t, err, ErrOverBudget)
		b := DefaultBudget()
		b.MaxFrames = 0
		_, err = Probe(data, b)
		require.ErrorIs(t, err, ErrOverBudget)
		b = DefaultBudget()
		b.MaxPixels = -1
		_, err = Probe(readCorpus(t, "png_1x1.png"), b)
		require.ErrorIs(t, err, ErrOverBudget)
	})

	t.Run("checkPixels", func(t *testing.T) {
		b := DefaultBudget()
		assert.NoError(t, b.checkPixels(1, 1))
		assert.NoError(t, b.checkPixels(50_000_000, 1))
		assert.ErrorIs(t, b.checkPixels(50_000_001, 1), ErrOverBudget)
		assert.ErrorIs(t, b.checkPixels(0, 5), ErrCorrupt)
		assert.ErrorIs(t, b.checkPixels(5, 0), ErrCorrupt)
		assert.ErrorIs(t, b.checkPixels(-1, -1), ErrCorrupt) // product would be positive
		assert.ErrorIs(t, b.checkPixels(math.MinInt, 2), ErrCorrupt)
		// Products that wrap around 64 bits must not pass.
		err := b.checkPixels(1<<32, 1<<32)
		require.ErrorIs(t, err, ErrOverBudget)
		assert.EqualError(t, err, "over budget: 4294967296x4294967296 pixels > 50000000")
		assert.ErrorIs(t, b.checkPixels(math.MaxInt, math.MaxInt), ErrOverBudget)
		b.MaxPixels = math.MaxInt64
		assert.ErrorIs(t, b.checkPixels(math.MaxInt, 2), ErrOverBudget)
		assert.NoError(t, b.checkPixels(math.MaxInt, 1))
	})
}

func TestThumbnailIntoDstSize(t *testing.T) {
	data := readCorpus(t, "jpeg_640x480.jpg")
	for _, n := range []int{0, 4*256*192 - 1, 4*256*192 + 1, 4 * 256 * 256} {
		dst := bytes.Repeat([]byte{0xAB}, n)
		_, w, h, err := ThumbnailInto(dst, data, DefaultBudget(), 256)
		require.ErrorIs(t, err, ErrDstSize, "len %d", n)
		assert.Zero(t, w+h)
		assert.Equal(t, bytes.Repeat([]byte{0xAB}, n), dst, "dst untouched on a size mismatch")
	}
	_, _, _, err := ThumbnailInto(nil, nil, DefaultBudget(), 256)
	assert.ErrorIs(t, err, ErrCorrupt, "input errors come before the size check")

	dst := make([]byte, 4*100*75)
	info, w, h, err := ThumbnailInto(dst, data, DefaultBudget(), 100)
	require.NoError(t, err)
	assert.Equal(t, [3]int{640, 100, 75}, [3]int{info.Width, w, h})
}

func TestSafelyRecoversPanics(t *testing.T) {
	err := safely(func() error { panic("boom") })
	require.ErrorIs(t, err, ErrCorrupt)
	assert.EqualError(t, err, "corrupt image: decoder panicked: boom")
	err = safely(func() error {
		var p *image.Paletted
		_ = p.Pix[0] // nil dereference: a runtime.Error
		return nil
	})
	assert.ErrorIs(t, err, ErrCorrupt)
	sentinel := errors.New("x")
	assert.Equal(t, sentinel, safely(func() error { return sentinel }))
}

func TestDecodeErrorClassification(t *testing.T) {
	assert.ErrorIs(t, decodeError("png", png.UnsupportedError("x")), ErrUnsupportedFormat)
	assert.ErrorIs(t, decodeError("tiff", tiff.UnsupportedError("x")), ErrUnsupportedFormat)
	err := decodeError("jpeg", io.ErrUnexpectedEOF)
	assert.ErrorIs(t, err, ErrCorrupt)
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF, "the decoder's error stays inspectable")
	assert.EqualError(t, err, "corrupt image: jpeg: unexpected EOF")
	assert.EqualError(t, decodeError("png", png.FormatError("bad")), "corrupt image: png: invalid format: bad")
}

func TestCountGIFFrames(t *testing.T) {
	b := DefaultBudget()
	hdr := func() []byte { // 1x1 screen, no global table
		return []byte("GIF89a\x01\x00\x01\x00\x00\x00\x00")
	}
	frame := []byte{0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0x80, 0, 0, 0, 1, 1, 1, 0x02, 0x02, 0x44, 0x01, 0x00}
	ext := []byte{0x21, 0xF9, 0x04, 0, 0, 0, 0, 0x00}

	n, err := countGIFFrames(append(append(append(hdr(), ext...), frame...), 0x3B), b)
	require.NoError(t, err)
	assert.Equal(t, 1, n)

	// No trailer after a complete frame: accepted, like browsers.
	n, err = countGIFFrames(append(append(hdr(), frame...), frame...), b)
	require.NoError(t, err)
	assert.Equal(t, 2, n)

	for name, data := range map[string][]byte{
		"short header":     hdr()[:12],
		"no frames":        append(hdr(), 0x3B),
		"only extension":   append(hdr(), ext...),
		"cut descriptor":   append(hdr(), frame[:5]...),
		"cut local table":  append(hdr(), frame[:12]...),
		"cut data":         append(hdr(), frame[:len(frame)-1]...),
		"cut extension":    append(hdr(), ext[:4]...),
		"global table cut": []byte("GIF89a\x01\x00\x01\x00\x87\x00\x00\x00\x00"),
		"unknown block":    append(append(hdr(), frame...), 0x00),
	} {
		_, err := countGIFFrames(data, b)
		assert.ErrorIs(t, err, ErrCorrupt, name)
	}

	// The walk stops at MaxFrames+1 without scanning the rest.
	many := hdr()
	for i := 0; i < 10; i++ {
		many = append(many, frame...)
	}
	b.MaxFrames = 3
	_, err = countGIFFrames(append(many, 0xFF), b) // garbage after frame 10 is never reached
	assert.ErrorIs(t, err, ErrOverBudget)

	// Agrees with image/gif.DecodeAll on a real animation.
	anim := readCorpus(t, "gif_anim_400x300_3frames.gif")
	g, err := gif.DecodeAll(bytes.NewReader(anim))
	require.NoError(t, err)
	n, err = countGIFFrames(anim, DefaultBudget())
	require.NoError(t, err)
	assert.Equal(t, len(g.Image), n)
}

func TestPartialGIFFrameIsTransparentOutside(t *testing.T) {
	_, img, err := Thumbnail(readCorpus(t, "gif_partial_frame_200x100.gif"), DefaultBudget(), 0)
	require.NoError(t, err)
	assert.Equal(t, color.RGBA{0xff, 0, 0, 0xff}, img.RGBAAt(10, 20), "frame's top-left")
	assert.Equal(t, color.RGBA{0xff, 0, 0, 0xff}, img.RGBAAt(59, 59), "frame's bottom-right")
	for _, p := range []image.Point{{0, 0}, {9, 20}, {60, 59}, {10, 60}, {199, 99}} {
		assert.Equal(t, color.RGBA{}, img.RGBAAt(p.X, p.Y), "%v is outside the frame", p)
	}
}

func TestBoxScale(t *testing.T) {
	t.Run("identity is exact", func(t *testing.T) {
		src := image.NewNRGBA(image.Rect(0, 0, 37, 23))
		for i := range src.Pix {
			src.Pix[i] = uint8(i * 31)
		}
		want := image.NewRGBA(src.Bounds())
		draw.Draw(want, want.Bounds(), src, image.Point{}, draw.Src)
		got := image.NewRGBA(src.Bounds())
		boxScale(got, 37, 23, src, 37, 23)
		assert.Equal(t, want.Pix, got.Pix)
	})

	t.Run("uniform colour survives any factor", func(t *testing.T) {
		c := color.RGBA{200, 100, 50, 255}
		for _, sz := range [][4]int{{1000, 7, 3, 1}, {7, 1000, 1, 3}, {301, 299, 256, 254}, {5, 5, 1, 1}, {999, 1, 256, 1}} {
			src := image.NewRGBA(image.Rect(0, 0, sz[0], sz[1]))
			draw.Draw(src, src.Bounds(), image.NewUniform(c), image.Point{}, draw.Src)
			dst := image.NewRGBA(image.Rect(0, 0, sz[2], sz[3]))
			boxScale(dst, sz[2], sz[3], src, sz[0], sz[1])
			for i := 0; i < len(dst.Pix); i += 4 {
				require.Equal(t, []uint8{200, 100, 50, 255}, dst.Pix[i:i+4], "%v", sz)
			}
		}
	})

	t.Run("area average", func(t *testing.T) {
		// 3x1 -> 2x1: dst 0 = (p0 + p1/2)/1.5, dst 1 = (p1/2 + p2)/1.5.
		src := image.NewGray(image.Rect(0, 0, 3, 1))
		copy(src.Pix, []uint8{0, 90, 180})
		dst := image.NewRGBA(image.Rect(0, 0, 2, 1))
		boxScale(dst, 2, 1, src, 3, 1)
		assert.Equal(t, []uint8{30, 30, 30, 255, 150, 150, 150, 255}, dst.Pix)

		// Checkerboard 4x4 -> 2x2 -> mid grey; 4x4 -> 1x1 too.
		cb := image.NewGray(image.Rect(0, 0, 4, 4))
		for i := range cb.Pix {
			cb.Pix[i] = uint8(255 * ((i%4 + i/4) % 2))
		}
		dst = image.NewRGBA(image.Rect(0, 0, 2, 2))
		boxScale(dst, 2, 2, cb, 4, 4)
		for i := 0; i < len(dst.Pix); i += 4 {
			assert.Equal(t, []uint8{128, 128, 128, 255}, dst.Pix[i:i+4])
		}
	})

	t.Run("close to CatmullRom on smooth content", func(t *testing.T) {
		src := image.NewRGBA(image.Rect(0, 0, 900, 700))
		for y := 0; y < 700; y++ {
			for x := 0; x < 900; x++ {
				src.SetRGBA(x, y, color.RGBA{uint8(x * 255 / 900), uint8(y * 255 / 700), uint8((x + y) / 7), 255})
			}
		}
		got := image.NewRGBA(image.Rect(0, 0, 256, 199))
		boxScale(got, 256, 199, src, 900, 700)
		ref := image.NewRGBA(got.Bounds())
		xdraw.CatmullRom.Scale(ref, ref.Bounds(), src, src.Bounds(), xdraw.Src, nil)
		var sum, worst int
		for i := range got.Pix {
			d := int(got.Pix[i]) - int(ref.Pix[i])
			d = max(d, -d)
			sum += d
			worst = max(worst, d)
		}
		assert.LessOrEqual(t, worst, 3)
		assert.Less(t, float64(sum)/float64(len(got.Pix)), 1.0)
	})

	t.Run("palette indexes past the palette are transparent", func(t *testing.T) {
		src := image.NewPaletted(image.Rect(0, 0, 2, 1), color.Palette{color.White, nil})
		src.Pix = []uint8{1, 200} // nil entry, out of range: no panic
		dst := image.NewRGBA(image.Rect(0, 0, 2, 1))
		boxScale(dst, 2, 1, src, 2, 1)
		assert.Equal(t, make([]uint8, 8), dst.Pix)
	})
}
