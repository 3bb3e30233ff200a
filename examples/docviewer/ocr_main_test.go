package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/examples/docviewer/internal/textpdf"
	"github.com/sandkit/sandkit/examples/docviewer/ocr"
)

// pdftotextWords returns the words poppler extracts from a PDF.
func pdftotextWords(t *testing.T, path string) []string {
	t.Helper()
	bin, err := exec.LookPath("pdftotext")
	if err != nil {
		t.Skip("pdftotext not installed (apt-get install poppler-utils); CI installs it")
	}
	out, err := exec.Command(bin, path, "-").Output()
	require.NoError(t, err)
	return strings.Fields(string(out))
}

// TestConvertOCR: convert -ocr eng of a generated two-page text PDF
// writes a safe PDF whose text pdftotext extracts: at least 95 % of the
// original's words (as a multiset). With -v each page's Tesseract is
// logged with its pid and every layer of its policy in force.
func TestConvertOCR(t *testing.T) {
	if _, err := ocr.Check(ocr.DefaultPath, "eng"); err != nil {
		t.Skipf("%v (CI: make deps installs it)", err)
	}
	dir := t.TempDir()
	in, out := filepath.Join(dir, "paper.pdf"), filepath.Join(dir, "safe.pdf")
	require.NoError(t, os.WriteFile(in, textpdf.Generate(2), 0o644))
	var stderr bytes.Buffer
	require.Equal(t, 0, run(context.Background(), []string{"convert", "-ocr", "eng", "-v", in, out}, &stderr), stderr.String())

	want, got := pdftotextWords(t, in), pdftotextWords(t, out)
	have := map[string]int{}
	for _, w := range got {
		have[w]++
	}
	var missing []string
	for _, w := range want {
		if have[w] == 0 {
			missing = append(missing, w)
		} else {
			have[w]--
		}
	}
	t.Logf("original %d words, safe PDF %d, missing %d: %q", len(want), len(got), len(missing), missing)
	require.Greater(t, len(want), 1000)
	assert.LessOrEqual(t, len(missing)*20, len(want), "missing %d of %d words", len(missing), len(want))

	tessdata, err := ocr.Check(ocr.DefaultPath, "eng")
	require.NoError(t, err)
	logged := regexp.MustCompile(`(?m)^.*msg=ocr .*page=(\d) pid=\d+ words=\d+ layers="([^"]*)"$`).FindAllStringSubmatch(stderr.String(), -1)
	require.Len(t, logged, 2, "one OCR run per page: %s", stderr.String())
	for i, m := range logged {
		assert.Equal(t, string(rune('1'+i)), m[1])
		for _, l := range ocr.Policy(tessdata).Requested() {
			assert.Regexp(t, `(^| )\+`+regexp.QuoteMeta(string(l))+`( |\(|$)`, m[2], "page %s: layer %s", m[1], l)
		}
		assert.NotContains(t, m[2], " -", "page %s: a layer is off", m[1])
	}
}

// TestConvertOCRChecked: -ocr with a language that is not installed, or
// that is no language name, is refused with what to install before the
// input is even looked at (a missing input would say "not found").
func TestConvertOCRChecked(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out.pdf")
	for _, tc := range []struct{ lang, want string }{
		{"qqq", "apt-get install tesseract-ocr"},
		{"../../tmp/x", "not a Tesseract language name"},
	} {
		var stderr bytes.Buffer
		code := run(context.Background(), []string{"convert", "-ocr", tc.lang, "testdata/no-such-file.pdf", out}, &stderr)
		assert.Equal(t, 2, code, stderr.String())
		assert.Contains(t, stderr.String(), "-ocr "+tc.lang+": ")
		assert.Contains(t, stderr.String(), tc.want)
		assert.NotContains(t, stderr.String(), "no-such-file")
		assert.NoFileExists(t, out)
	}
}
