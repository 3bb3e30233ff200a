package sandboxed

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sandkit/sandkit/examples/docviewer/library"
)

// BenchmarkOpenDocument: the cost of a document's first page count (a
// renderer bound and the document parsed) and of its first page at the
// web UI's 110 dpi, each document in a fresh renderer from a warm pool,
// as the viewer opens them.
func BenchmarkOpenDocument(b *testing.B) {
	for _, what := range []string{"pagecount", "firstpage"} {
		b.Run(what, func(b *testing.B) {
			var samples []string
			for i := range b.N {
				samples = append(samples, fmt.Sprintf("valid/multipage.pdf=doc%04d.pdf", i))
			}
			be := newBackend(b, func(c *Config) { c.WarmPool = 1; c.MaxRenderers = 2; c.IdleTimeout = 50 * time.Millisecond }, samples...)
			b.ResetTimer()
			for i := range b.N {
				id := library.IDOf(fmt.Sprintf("doc%04d.pdf", i))
				if _, err := be.PageCount(context.Background(), id); err != nil {
					b.Fatal(err)
				}
				if what == "firstpage" {
					p, err := be.RenderPage(context.Background(), id, 0, 110)
					if err != nil {
						b.Fatal(err)
					}
					p.Release()
				}
				b.StopTimer()
				// The next document takes a warm renderer, not this
				// one's slot: wait for this one to end and the pool to
				// refill.
				for len(be.b.Renderers()) > 1 || be.b.Pool().Ready < 1 {
					time.Sleep(5 * time.Millisecond)
				}
				b.StartTimer()
			}
		})
	}
}
