package thumb

import (
	"bytes"
	"image"
	"image/jpeg"
	"testing"

	"github.com/sandkit/sandkit/examples/imageparser/internal/benchdata"
)

func BenchmarkBoxScale(b *testing.B) {
	src, _ := jpeg.Decode(bytes.NewReader(benchdata.JPEG12MP()))
	b.ReportAllocs()
	for b.Loop() {
		dst := image.NewRGBA(image.Rect(0, 0, 256, 192))
		boxScale(dst, 256, 192, src, 4000, 3000)
	}
}
