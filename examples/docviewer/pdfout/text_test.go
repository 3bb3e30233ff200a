package pdfout

import (
	"bytes"
	"fmt"
	"image"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// textWords are words as OCR gives them, on a 400x200 px page: two on one
// line, one with PDF string delimiters, one with a Latin-1 letter, one
// with a character WinAnsi lacks, one past the page's edge (clamped) and
// one outside it (dropped).
var textWords = []Word{
	{Text: "hello", Box: image.Rect(10, 20, 60, 40), Line: image.Rect(10, 20, 200, 44)},
	{Text: "world", Box: image.Rect(80, 22, 150, 44), Line: image.Rect(10, 20, 200, 44)},
	{Text: `(a\b)`, Box: image.Rect(10, 100, 90, 120)},
	{Text: "café", Box: image.Rect(100, 100, 160, 120)},
	{Text: "x→y", Box: image.Rect(200, 100, 260, 120)},
	{Text: "edge", Box: image.Rect(350, 150, 450, 170)},
	{Text: "gone", Box: image.Rect(500, 10, 550, 30)},
}

func textPDF(t *testing.T, img *image.RGBA, words []Word) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf)
	require.NoError(t, w.AddPageText(img, 72, words))
	require.NoError(t, w.AddPage(img, 72)) // a page without text after one with
	require.NoError(t, w.Close())
	return buf.Bytes()
}

// TestTextLayer: pdftotext finds each word of the layer where OCR saw it
// (1 px = 1 pt at 72 dpi; PDF's y axis points up, pdftotext's down),
// stretched to its box, with delimiters, Latin-1 and unknown characters
// carried as the writer says; words past the page are clamped or dropped.
func TestTextLayer(t *testing.T) {
	img := testImage(400, 200, 255)
	pdf := textPDF(t, img, textWords)
	dir := t.TempDir()
	in := filepath.Join(dir, "in.pdf")
	require.NoError(t, os.WriteFile(in, pdf, 0o644))
	poppler(t, "pdftotext", "-bbox", "-f", "1", "-l", "1", in, filepath.Join(dir, "out.html"))
	html, err := os.ReadFile(filepath.Join(dir, "out.html"))
	require.NoError(t, err)
	re := regexp.MustCompile(`<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">([^<]*)</word>`)
	type box struct{ x0, y0, x1, y1 float64 }
	got := map[string]box{}
	var order []string
	for _, m := range re.FindAllSubmatch(html, -1) {
		var v [4]float64
		for i := range v {
			v[i], _ = strconv.ParseFloat(string(m[i+1]), 64)
		}
		got[string(m[5])] = box{v[0], v[1], v[2], v[3]}
		order = append(order, string(m[5]))
	}
	assert.Equal(t, []string{"hello", "world", "(a\\b)", "café", "x?y", "edge"}, order)
	for _, tc := range []struct {
		text string
		want image.Rectangle
	}{
		{"hello", textWords[0].Box},
		{"world", textWords[1].Box},
		{`(a\b)`, textWords[2].Box},
		{"café", textWords[3].Box},
		{"x?y", textWords[4].Box},
		{"edge", image.Rect(350, 150, 400, 170)},
	} {
		b, ok := got[tc.text]
		if !assert.True(t, ok, "%q not found in %s", tc.text, html) {
			continue
		}
		// Horizontally exact to a point; vertically within the line.
		assert.InDelta(t, tc.want.Min.X, b.x0, 1, "%s x0", tc.text)
		assert.InDelta(t, tc.want.Max.X, b.x1, 1, "%s x1", tc.text)
		assert.Less(t, b.y0, float64(tc.want.Max.Y), "%s y0", tc.text)
		assert.Greater(t, b.y1, float64(tc.want.Min.Y), "%s y1", tc.text)
	}
}

// TestTextLayerInvisible: the text is not drawn: poppler renders the page
// with its text layer pixel for pixel as the page without.
func TestTextLayerInvisible(t *testing.T) {
	img := testImage(400, 200, 255)
	with := textPDF(t, img, textWords)
	without := writePDF(t, []*image.RGBA{img}, 72)
	render := func(pdf []byte) []byte {
		dir := t.TempDir()
		in := filepath.Join(dir, "in.pdf")
		require.NoError(t, os.WriteFile(in, pdf, 0o644))
		poppler(t, "pdftoppm", "-r", "144", "-f", "1", "-l", "1", "-singlefile", in, filepath.Join(dir, "p"))
		b, err := os.ReadFile(filepath.Join(dir, "p.ppm"))
		require.NoError(t, err)
		return b
	}
	assert.True(t, bytes.Equal(render(with), render(without)), "the text layer changed the pixels")
	assert.Contains(t, string(with), "/BaseFont /Courier")
}

// TestTextLayerBound: more words than any page holds is an error, and
// nothing of the page is written.
func TestTextLayerBound(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	words := make([]Word, maxTextWords+1)
	err := w.AddPageText(testImage(10, 10, 255), 72, words)
	assert.EqualError(t, err, fmt.Sprintf("pdfout: %d words on a page: at most %d", maxTextWords+1, maxTextWords))
	assert.Zero(t, buf.Len())
	// A bad page leaves the writer usable, as AddPage's checks do.
	assert.Error(t, w.AddPageText(testImage(10, 10, 255), 0, textWords))
	require.NoError(t, w.AddPageText(testImage(10, 10, 255), 72, textWords[:1]))
	require.NoError(t, w.Close())
	assert.Regexp(t, `^%PDF-1.4\n`, buf.String())
}

func TestWinAnsi(t *testing.T) {
	for in, want := range map[string]struct {
		s      string
		glyphs int
	}{
		"plain":              {"plain", 5},
		`a(b)c\d`:            {`a\(b\)c\\d`, 7},
		"Straße":             {`Stra\337e`, 6},
		"“quoted” ‘it’s’":    {`"quoted" 'it's'`, 15},
		"a–b—c":              {"a-b-c", 5},
		"ﬁne ﬂow":            {"fine flow", 9},
		"\x00\n\r\t\x1b":     {"?????", 5},
		"日本":                 {"??", 2},
		"\u202eevil":         {"?evil", 5},
		string([]byte{0xff}): {"?", 1},
	} {
		got, glyphs := winAnsi(in)
		assert.Equal(t, want.s, got, "%q", in)
		assert.Equal(t, want.glyphs, glyphs, "%q", in)
	}
}
