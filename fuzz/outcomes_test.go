package fuzz

import (
	"strings"
	"testing"

	"github.com/sandkit/sandkit/broker"
)

// TestOpenOutcomes pins what FuzzBrokerMethods' harness sees for known
// Open requests, so that the fuzz target's permissive invariants (any
// answer but the secret) cannot pass vacuously: a granted file really is
// returned, every escape really is refused, and a forged origin really
// kills.
func TestOpenOutcomes(t *testing.T) {
	h := newBrokerHarness(t)
	tests := []struct {
		origin, name string
		want         string            // prefix of the answer
		kill         broker.ExitReason // or the renderer is killed
	}{
		{targetOrigin, "public.txt", "ok:public contents", ""},
		{targetOrigin, "sub/nested.txt", "ok:nested contents", ""},
		{targetOrigin, "sub/sibling", "error:", ""},
		{targetOrigin, "innerlink", "error:", ""},
		{targetOrigin, "link", "error:", ""},
		{targetOrigin, "abslink", "error:", ""},
		{targetOrigin, "proclink", "error:", ""},
		{targetOrigin, "dirlink/secret.txt", "error:", ""},
		{targetOrigin, "sub/up/secret.txt", "error:", ""},
		{targetOrigin, "../secret/secret.txt", "error:", ""},
		{targetOrigin, "sub/../../secret/secret.txt", "error:", ""},
		{targetOrigin, "fifo", "error:", ""},
		{targetOrigin, "selfloop", "error:", ""},
		{targetOrigin, "sub", "error:", ""},
		{targetOrigin, "/etc/passwd", "error:", ""},
		{targetOrigin, "", "error:", ""},
		{bystanderOrigin, "public.txt", "", broker.ExitBadMessage},
		{targetOrigin + "/", "public.txt", "", broker.ExitBadMessage},
	}
	for _, tt := range tests {
		t.Run(tt.origin+" "+tt.name, func(t *testing.T) {
			resp, err := h.call(t, sendOpen, tt.origin, "", tt.name, nil, nil)
			if tt.kill != "" {
				if got := exitReason(err); got != tt.kill {
					t.Fatalf("got %q, %v; want the renderer killed for %s", resp, err, tt.kill)
				}
			} else if err != nil || !strings.HasPrefix(resp, tt.want) {
				t.Fatalf("got %q, %v; want %q", resp, err, tt.want)
			}
			h.settleRenderers(t)
		})
	}
}
