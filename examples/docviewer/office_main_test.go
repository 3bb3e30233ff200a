package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/examples/docviewer/office"
)

// needOffice fails the test without LibreOffice, saying what to install,
// unless DOCVIEWER_SKIP_OFFICE=1 says to skip it.
func needOffice(t *testing.T) {
	t.Helper()
	if err := office.Available(); err != nil {
		if os.Getenv("DOCVIEWER_SKIP_OFFICE") == "1" {
			t.Skipf("%v (DOCVIEWER_SKIP_OFFICE=1)", err)
		}
		t.Fatalf("%v; or set DOCVIEWER_SKIP_OFFICE=1 to skip the Office tests", err)
	}
}

// officeLayers matches the log line of a LibreOffice conversion (-v).
var officeLayers = regexp.MustCompile(`msg="office conversion".* layers="([^"]*)"`)

// TestConvertOffice: docviewer convert turns a .docx, .odt, .xlsx and
// .pptx into safe, raster-only PDFs with the document's pages (LibreOffice
// in its sandbox, then MuPDF in its own on LibreOffice's PDF), and -v
// shows every layer of LibreOffice's sandbox in force.
func TestConvertOffice(t *testing.T) {
	needOffice(t)
	for _, tt := range []struct {
		in    string
		pages int
	}{
		{"text.docx", 3},
		{"text.odt", 3},
		{"sheet.xlsx", 2},
		{"slides.pptx", 4},
	} {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			out := filepath.Join(t.TempDir(), "out.pdf")
			var stderr bytes.Buffer
			code := run(context.Background(), []string{"convert", "-v", "-dpi", "36", filepath.Join("testdata", "office", tt.in), out}, &stderr)
			require.Equal(t, 0, code, stderr.String())
			assert.Equal(t, tt.pages, pdfinfoPages(t, out))
			m := officeLayers.FindStringSubmatch(stderr.String())
			require.NotNil(t, m, "no office conversion logged:\n%s", stderr.String())
			for _, l := range office.Policy().Requested() {
				assert.Contains(t, m[1], "+"+string(l), "layer %s not in force", l)
			}
			assert.NotRegexp(t, `(^| )-[a-z]`, m[1], "a layer not in force")
			// Raster only: the PDF has no fonts, so no text of the
			// document's survives as text.
			pdf, err := os.ReadFile(out)
			require.NoError(t, err)
			assert.NotContains(t, string(pdf), "/Font")
		})
	}
}

// TestConvertOfficeHostile: a truncated .docx fails with LibreOffice's
// reason, exit 1, and nothing written.
func TestConvertOfficeHostile(t *testing.T) {
	needOffice(t)
	doc, err := os.ReadFile("testdata/office/text.docx")
	require.NoError(t, err)
	dir := t.TempDir()
	in := filepath.Join(dir, "truncated.docx")
	require.NoError(t, os.WriteFile(in, doc[:len(doc)/2], 0o644))
	out := filepath.Join(dir, "out.pdf")
	var stderr bytes.Buffer
	assert.Equal(t, 1, run(context.Background(), []string{"convert", in, out}, &stderr))
	assert.Equal(t, 1, strings.Count(stderr.String(), "LibreOffice could not convert the document: it wrote no PDF"), stderr.String())
	assert.Contains(t, stderr.String(), "nothing written")
	_, err = os.Stat(out)
	assert.ErrorIs(t, err, os.ErrNotExist)
}
