// Command testrenderer is a dedicated renderer binary serving the methods
// of package testrenderer: what a program ships when its renderer is not
// its own executable re-executed. The benchmarks build it statically
// linked to measure a cold spawn of a small renderer (see
// docs/benchmarks.md); tests may point broker.Config.Path at it.
package main

import (
	"fmt"
	"os"

	"github.com/sandkit/sandkit/internal/testrenderer"
	"github.com/sandkit/sandkit/renderer"
)

func main() {
	if !renderer.Requested() {
		fmt.Fprintln(os.Stderr, "testrenderer: a sandkit renderer; only a broker starts it (broker.Config.Path)")
		os.Exit(2)
	}
	renderer.Main(testrenderer.Register)
}
