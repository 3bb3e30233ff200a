package parser_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/sandkit/sandkit/examples/imageparser/parser"
)

// A program that uses the parser is its own renderer: its main starts with
//
//	if renderer.Requested() {
//		renderer.Main(imagerenderer.Register)
//	}
//
// (this test binary does the same in TestMain).
func Example() {
	out, err := os.MkdirTemp("", "thumbs")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(out)
	ctx := context.Background()
	p, err := parser.New(ctx, parser.Options{OutDir: out})
	if err != nil {
		fmt.Println(err) // e.g. the kernel lacks a layer the policy needs
		return
	}
	defer p.Close()

	res, err := p.Thumbnail(ctx, 0, "../testdata/gif_anim_400x300_3frames.gif")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(res.Format, res.Width, res.Height, res.Frames, "->", res.ThumbWidth, res.ThumbHeight, filepath.Base(res.Thumb))

	// A decompression bomb is refused inside the sandbox, before the
	// renderer allocates a pixel.
	_, err = p.Thumbnail(ctx, 1, "../testdata/png_bomb_20000x20000.png")
	fmt.Println(errors.Is(err, parser.ErrOverBudget), err)
	// Output:
	// gif 400 300 3 -> 256 192 0000-gif_anim_400x300_3frames.png
	// true over budget: 20000x20000 = 400000000 pixels > 50000000
}

func ExampleParser_Run() {
	out, err := os.MkdirTemp("", "thumbs")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(out)
	ctx := context.Background()
	p, err := parser.New(ctx, parser.Options{OutDir: out, WarmPool: 1})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close()

	var lines strings.Builder
	files := []string{"../testdata/jpeg_640x480.jpg", "../testdata/text_as.png", "../testdata/webp_lossless_300x1000.webp"}
	failed, err := p.Run(ctx, files, &lines, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Print(strings.ReplaceAll(lines.String(), out, "OUT"))
	fmt.Println(failed, "failed")
	// Output:
	// OK ../testdata/jpeg_640x480.jpg jpeg 640x480 frames=1 -> OUT/0000-jpeg_640x480.png
	// FAIL ../testdata/text_as.png: unsupported format: unrecognised signature 74 68 69 73 20 69 73 20
	// OK ../testdata/webp_lossless_300x1000.webp webp 300x1000 frames=1 -> OUT/0002-webp_lossless_300x1000.png
	// 1 failed
}
