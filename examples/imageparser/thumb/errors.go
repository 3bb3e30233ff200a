package thumb

import (
	"errors"
	"fmt"
	"image/jpeg"
	"image/png"
	"strings"

	"golang.org/x/image/bmp"
	"golang.org/x/image/tiff"
)

// Sentinel errors. Every error returned by this package wraps exactly one of
// the first three (ErrDstSize aside), so the broker can branch with errors.Is
// and print err.Error() as the reason.
var (
	// ErrUnsupportedFormat: the content is not one of the supported formats,
	// or uses a feature of one that the decoder does not implement (e.g. RLE
	// BMP, an unusual TIFF compression, animated WebP).
	ErrUnsupportedFormat = errors.New("unsupported image format")
	// ErrCorrupt: the content claims a supported format but is truncated,
	// malformed, empty, or made a decoder panic.
	ErrCorrupt = errors.New("corrupt image")
	// ErrOverBudget: the input is larger than Budget.MaxInputBytes, declares
	// more than Budget.MaxPixels pixels, or has more than Budget.MaxFrames
	// frames. Reported before any pixel memory is allocated.
	ErrOverBudget = errors.New("over budget")
	// ErrDstSize: ThumbnailInto was given a destination whose length is not
	// exactly 4*w*h for the size ThumbnailSize computes. This is a caller
	// bug, not a property of the input.
	ErrDstSize = errors.New("destination buffer has the wrong size")
)

// decodeError classifies an error from a format's DecodeConfig or Decode.
// The decoders signal "valid but not implemented" with their own types; all
// else (format errors, io.ErrUnexpectedEOF, ...) means the input is corrupt.
func decodeError(format string, err error) error {
	var (
		pngU  png.UnsupportedError
		jpegU jpeg.UnsupportedError
		tiffU tiff.UnsupportedError
	)
	sentinel := ErrCorrupt
	if errors.As(err, &pngU) || errors.As(err, &jpegU) || errors.As(err, &tiffU) || errors.Is(err, bmp.ErrUnsupported) {
		sentinel = ErrUnsupportedFormat
	}
	// Most decoder messages already start with "png: " etc.; avoid saying
	// the format twice.
	if strings.HasPrefix(err.Error(), format+":") {
		return fmt.Errorf("%w: %w", sentinel, err)
	}
	return fmt.Errorf("%w: %s: %w", sentinel, format, err)
}
