package mupdf

import (
	"testing"

	fitz "github.com/gen2brain/go-fitz"
)

// TestVersion: the copied headers and the linked library agree (a context
// can be created), and they are the version go-fitz says it bundles.
func TestVersion(t *testing.T) {
	if Version != fitz.FzVersion {
		t.Fatalf("headers are MuPDF %s, go-fitz bundles %s: recopy include/ (see PROVENANCE.md)", Version, fitz.FzVersion)
	}
	_, err := Open([]byte("%PDF-1.4\n"), "application/pdf", 16<<20, 4<<20)
	if err == ErrContext {
		t.Fatal("MuPDF refused to create a context: header/library version mismatch?")
	}
}
