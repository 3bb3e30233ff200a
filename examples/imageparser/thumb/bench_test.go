package thumb

import (
	"testing"

	"github.com/sandkit/sandkit/examples/imageparser/internal/benchdata"
)

// BenchmarkThumbnailInProcess measures decode + thumbnail without any
// sandbox, as the baseline for the sandboxed variants that sit next to it.
// Inputs are generated (internal/benchdata), not committed.
func BenchmarkThumbnailInProcess(b *testing.B) {
	for _, bc := range []struct {
		name string
		gen  func() []byte
	}{
		{"jpeg12MP", benchdata.JPEG12MP},
		{"png1MP", benchdata.PNG1MP},
	} {
		b.Run(bc.name, func(b *testing.B) {
			data := bc.gen()
			budget := DefaultBudget()
			info, err := Probe(data, budget)
			if err != nil {
				b.Fatal(err)
			}
			w, h := ThumbnailSize(info, DefaultMaxSide)
			dst := make([]byte, 4*w*h)
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, _, _, err := ThumbnailInto(dst, data, budget, DefaultMaxSide); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(info.Width*info.Height)/1e6, "Mpixel")
		})
	}
}
