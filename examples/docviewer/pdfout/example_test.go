package pdfout_test

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/draw"

	"github.com/sandkit/sandkit/examples/docviewer/pdfout"
)

// A Letter page rendered at 150 dpi (1275x1650 px) becomes a 612x792 pt page.
func ExampleWriter() {
	page := image.NewRGBA(image.Rect(0, 0, 1275, 1650))
	draw.Draw(page, page.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)

	var out bytes.Buffer
	w := pdfout.NewWriter(&out)
	if err := w.AddPage(page, 150); err != nil {
		fmt.Println(err)
		return
	}
	if err := w.Close(); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(bytes.Contains(out.Bytes(), []byte("/MediaBox [0 0 612 792]")))
	// Output: true
}
