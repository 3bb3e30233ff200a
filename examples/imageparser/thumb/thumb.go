package thumb

import (
	"bytes"
	"fmt"
	"image"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"math/bits"

	"golang.org/x/image/bmp"
	"golang.org/x/image/tiff"
	"golang.org/x/image/webp"
)

// Format names reported in Info.Format. They match the names the decoders
// register with package image.
const (
	FormatPNG  = "png"
	FormatJPEG = "jpeg"
	FormatGIF  = "gif"
	FormatBMP  = "bmp"
	FormatTIFF = "tiff"
	FormatWebP = "webp"
)

// DefaultMaxSide is the longest side of a thumbnail when the caller passes
// maxSide <= 0.
const DefaultMaxSide = 256

// Info describes an image as declared by its header (and, for GIF, its block
// structure). Width and Height are the canvas (for GIF, the logical screen).
type Info struct {
	Format        string
	Width, Height int
	// Frames is the number of frames: counted for GIF, 1 otherwise.
	Frames int
}

// codec is one entry of the format allow-list.
type codec struct {
	name   string
	config func(io.Reader) (image.Config, error)
	decode func(io.Reader) (image.Image, error)
}

// sniff picks the decoder from the leading bytes, using the same signatures
// the decoders register with package image. It is a function rather than a
// table so that the allow-list is immutable.
func sniff(data []byte) (codec, bool) {
	has := func(prefix string) bool { return bytes.HasPrefix(data, []byte(prefix)) }
	switch {
	case has("\x89PNG\r\n\x1a\n"):
		return codec{FormatPNG, png.DecodeConfig, png.Decode}, true
	case has("\xff\xd8"):
		return codec{FormatJPEG, jpeg.DecodeConfig, jpeg.Decode}, true
	case has("GIF87a"), has("GIF89a"):
		return codec{FormatGIF, gif.DecodeConfig, gif.Decode}, true
	case has("BM") && len(data) >= 10 && string(data[6:10]) == "\x00\x00\x00\x00":
		return codec{FormatBMP, bmp.DecodeConfig, bmp.Decode}, true
	case has("II*\x00"), has("MM\x00*"):
		return codec{FormatTIFF, tiff.DecodeConfig, tiff.Decode}, true
	case has("RIFF") && len(data) >= 15 && string(data[8:15]) == "WEBPVP8":
		return codec{FormatWebP, webp.DecodeConfig, webp.Decode}, true
	}
	return codec{}, false
}

// Probe identifies data and checks it against the budget without decoding
// any pixels. A nil error means Thumbnail will at least attempt to decode;
// the pixel data may still turn out corrupt.
func Probe(data []byte, b Budget) (Info, error) {
	var info Info
	err := safely(func() (err error) {
		_, info, err = probe(data, b)
		return err
	})
	if err != nil {
		return Info{}, err
	}
	return info, nil
}

func probe(data []byte, b Budget) (codec, Info, error) {
	if err := b.checkInput(len(data)); err != nil {
		return codec{}, Info{}, err
	}
	if len(data) == 0 {
		return codec{}, Info{}, fmt.Errorf("%w: empty input", ErrCorrupt)
	}
	c, ok := sniff(data)
	if !ok {
		return codec{}, Info{}, fmt.Errorf("%w: unrecognised signature % x", ErrUnsupportedFormat, data[:min(len(data), 8)])
	}
	cfg, err := c.config(bytes.NewReader(data))
	if err != nil {
		return codec{}, Info{}, decodeError(c.name, err)
	}
	info := Info{Format: c.name, Width: cfg.Width, Height: cfg.Height, Frames: 1}
	if err := b.checkPixels(info.Width, info.Height); err != nil {
		return codec{}, Info{}, err
	}
	switch c.name {
	case FormatGIF:
		if info.Frames, err = countGIFFrames(data, b); err != nil {
			return codec{}, Info{}, err
		}
	case FormatWebP:
		if webpAnimated(data) {
			return codec{}, Info{}, fmt.Errorf("%w: animated webp", ErrUnsupportedFormat)
		}
	}
	if err := b.checkFrames(info.Frames); err != nil {
		return codec{}, Info{}, err
	}
	return c, info, nil
}

// webpAnimated reports whether data starts with an extended (VP8X) header
// whose animation flag is set. golang.org/x/image/webp does not decode
// animations: it would report the canvas in DecodeConfig and then fail.
func webpAnimated(data []byte) bool {
	const animationBit = 1 << 1
	return len(data) > 20 && string(data[12:16]) == "VP8X" && data[20]&animationBit != 0
}

// ThumbnailSize returns the thumbnail size for an image of info's size: the
// longest side becomes maxSide (DefaultMaxSide if maxSide <= 0), the aspect
// ratio is kept (rounded to nearest), no side is below 1, and images that
// already fit are not enlarged. It returns 0, 0 for an empty or negative size.
func ThumbnailSize(info Info, maxSide int) (w, h int) {
	if maxSide <= 0 {
		maxSide = DefaultMaxSide
	}
	sw, sh := info.Width, info.Height
	if sw <= 0 || sh <= 0 {
		return 0, 0
	}
	if sw <= maxSide && sh <= maxSide {
		return sw, sh
	}
	// scaled returns round(n*maxSide/long) computed without overflow: n and
	// long are at most MaxInt and n <= long, so n*maxSide/long <= maxSide.
	scaled := func(n, long int) int {
		q := uint64(n) / uint64(long) * uint64(maxSide) // 0 unless n == long
		r := mulDivRound(uint64(n)%uint64(long), uint64(maxSide), uint64(long))
		return max(int(q+r), 1)
	}
	if sw >= sh {
		return maxSide, scaled(sh, sw)
	}
	return scaled(sw, sh), maxSide
}

// mulDivRound returns round(a*b/c) for a < c, using a 128-bit product.
func mulDivRound(a, b, c uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	// hi < c because a < c, so Div64 cannot panic.
	q, r := bits.Div64(hi, lo, c)
	// Round half up; r >= c-r is r >= c/2 without overflow.
	if r >= c-r {
		q++
	}
	return q
}

// Thumbnail decodes data and returns its Info and a thumbnail whose longest
// side is at most maxSide (see ThumbnailSize). Transparent areas stay
// transparent: the result is premultiplied RGBA like every image.RGBA.
func Thumbnail(data []byte, b Budget, maxSide int) (Info, *image.RGBA, error) {
	var (
		info Info
		img  *image.RGBA
	)
	err := safely(func() error {
		c, i, err := probe(data, b)
		if err != nil {
			return err
		}
		w, h := ThumbnailSize(i, maxSide)
		m := image.NewRGBA(image.Rect(0, 0, w, h))
		if err := render(m, c, i, data); err != nil {
			return err
		}
		info, img = i, m
		return nil
	})
	if err != nil {
		return Info{}, nil, err
	}
	return info, img, nil
}

// ThumbnailInto is Thumbnail writing the pixels into dst instead of a new
// image, so that a renderer can draw straight into shared memory. dst must
// be exactly 4*w*h bytes for the w, h that ThumbnailSize returns for the
// image's Info (get it from Probe first); otherwise ErrDstSize is returned
// and dst is untouched. The pixels are premultiplied RGBA, row after row,
// stride 4*w. If another error is returned, dst's content is unspecified.
func ThumbnailInto(dst []byte, data []byte, b Budget, maxSide int) (Info, int, int, error) {
	var (
		info Info
		w, h int
	)
	err := safely(func() error {
		c, i, err := probe(data, b)
		if err != nil {
			return err
		}
		tw, th := ThumbnailSize(i, maxSide)
		if hi, want := bits.Mul64(uint64(tw), 4*uint64(th)); hi != 0 || uint64(len(dst)) != want {
			return fmt.Errorf("%w: got %d bytes, want 4*%d*%d", ErrDstSize, len(dst), tw, th)
		}
		m := &image.RGBA{Pix: dst[:len(dst):len(dst)], Stride: 4 * tw, Rect: image.Rect(0, 0, tw, th)}
		if err := render(m, c, i, data); err != nil {
			return err
		}
		info, w, h = i, tw, th
		return nil
	})
	if err != nil {
		return Info{}, 0, 0, err
	}
	return info, w, h, nil
}

// render decodes data (already probed as info) and scales it into dst.
func render(dst *image.RGBA, c codec, info Info, data []byte) error {
	src, err := c.decode(bytes.NewReader(data))
	if err != nil {
		return decodeError(c.name, err)
	}
	// Insist that the decoder produced the canvas the header declared, so the
	// budget check above really was about the pixels we hold. GIF frames may
	// cover part of the logical screen; the rest is transparent.
	canvas := image.Rect(0, 0, info.Width, info.Height)
	sb := src.Bounds()
	if sb != canvas && (c.name != FormatGIF || !sb.In(canvas)) {
		return fmt.Errorf("%w: %s: decoded bounds %v differ from declared size %dx%d", ErrCorrupt, c.name, sb, info.Width, info.Height)
	}
	w, h := dst.Rect.Dx(), dst.Rect.Dy()
	boxScale(dst, w, h, src, info.Width, info.Height)
	return nil
}

// safely runs fn and turns a panic inside it (in practice: in a decoder)
// into ErrCorrupt. See the package documentation: recovering is a
// convenience, not the security boundary.
func safely(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: decoder panicked: %v", ErrCorrupt, r)
		}
	}()
	return fn()
}
