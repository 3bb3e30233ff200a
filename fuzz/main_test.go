package fuzz

import (
	"os"
	"testing"

	"github.com/sandkit/sandkit/renderer"
)

// TestMain doubles as the renderer: the brokers of the broker targets
// re-execute this test binary. With the fake-ready flag it plays a
// renderer that has not locked down and sends a ready report the fuzzer
// wrote (see FuzzReadyReport); otherwise it locks itself down for real
// and serves the test and fuzz methods.
func TestMain(m *testing.M) {
	if renderer.Requested() {
		if path, ok := fakeReadyInput(os.Args[2:]); ok {
			os.Exit(fakeReadyRenderer(path))
		}
		renderer.Main(registerRenderer)
	}
	os.Exit(m.Run())
}
