package thumb_test

import (
	"errors"
	"fmt"
	"os"

	"github.com/sandkit/sandkit/examples/imageparser/thumb"
)

func ExampleThumbnail() {
	// In the renderer the bytes arrive over IPC; the file is read here only
	// to have something to decode.
	data, err := os.ReadFile("../testdata/png_disguised.jpg")
	if err != nil {
		panic(err)
	}
	info, img, err := thumb.Thumbnail(data, thumb.DefaultBudget(), 64)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s %dx%d frames=%d thumbnail %dx%d\n",
		info.Format, info.Width, info.Height, info.Frames, img.Bounds().Dx(), img.Bounds().Dy())

	// A decompression bomb is refused from its header, before decoding.
	bomb, err := os.ReadFile("../testdata/png_bomb_20000x20000.png")
	if err != nil {
		panic(err)
	}
	_, _, err = thumb.Thumbnail(bomb, thumb.DefaultBudget(), 64)
	fmt.Println(errors.Is(err, thumb.ErrOverBudget), err)
	// Output:
	// png 120x80 frames=1 thumbnail 64x43
	// true over budget: 20000x20000 = 400000000 pixels > 50000000
}

func ExampleThumbnailInto() {
	data, err := os.ReadFile("../testdata/gif_anim_400x300_3frames.gif")
	if err != nil {
		panic(err)
	}
	b := thumb.DefaultBudget()
	info, err := thumb.Probe(data, b)
	if err != nil {
		panic(err)
	}
	w, h := thumb.ThumbnailSize(info, 128)
	// In the renderer dst would be a mapping of a memfd of this size that is
	// sealed and handed to the broker afterwards.
	dst := make([]byte, 4*w*h)
	_, w, h, err = thumb.ThumbnailInto(dst, data, b, 128)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s %d frames -> %dx%d, %d bytes\n", info.Format, info.Frames, w, h, len(dst))
	// Output:
	// gif 3 frames -> 128x96, 49152 bytes
}
