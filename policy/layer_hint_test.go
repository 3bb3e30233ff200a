package policy

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestUnavailableErrorHintIsAccepted checks that the way out an
// UnavailableError suggests is one Validate accepts: allow_degraded for the
// layers it may list, turning the namespace off for the others.
func TestUnavailableErrorHintIsAccepted(t *testing.T) {
	for _, layer := range AllLayers() {
		t.Run(string(layer), func(t *testing.T) {
			msg := (&UnavailableError{Layer: layer, Err: errors.New("refused")}).Error()
			p := Strict()
			p.AllowDegraded = []Layer{layer}
			degradable := p.Validate() == nil
			if degradable {
				assert.Contains(t, msg, "list it in allow_degraded")
				return
			}
			assert.NotContains(t, msg, "allow_degraded")
			field := strings.TrimSuffix(string(layer), "-namespace")
			text := regexp.MustCompile(`namespaces \{[^}]*\}`).FindString(msg)
			assert.Contains(t, text, " "+field+": false ", msg)
			// The suggested text parses, and the policy it makes no
			// longer asks for the layer.
			parsed, err := Parse([]byte(text))
			if assert.NoError(t, err, text) {
				assert.NotContains(t, parsed.Requested(), layer)
			}
		})
	}
}
