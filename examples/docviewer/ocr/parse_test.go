package ocr_test

import (
	"errors"
	"fmt"
	"image"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/examples/docviewer/ocr"
	"github.com/sandkit/sandkit/examples/docviewer/pdfout"
)

const header = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n"

// row is one TSV row: level, block/par/line/word numbers, box, text.
func row(level, line, word, left, top, w, h int, text string) string {
	return fmt.Sprintf("%d\t1\t1\t1\t%d\t%d\t%d\t%d\t%d\t%d\t95.5\t%s\n", level, line, word, left, top, w, h, text)
}

var page = image.Rect(0, 0, 1000, 1400)

// TestParseTSV: Tesseract's own output gives words with their line's box.
func TestParseTSV(t *testing.T) {
	out := header +
		"1\t1\t0\t0\t0\t0\t0\t0\t1000\t1400\t-1\t\n" +
		row(4, 1, 0, 100, 100, 300, 30, "") +
		row(5, 1, 1, 100, 105, 80, 20, "hello") +
		row(5, 1, 2, 200, 100, 200, 30, "world,") +
		row(4, 2, 0, 100, 200, 100, 30, "") +
		row(5, 2, 1, 100, 200, 100, 30, "Straße")
	words, err := ocr.ParseTSV([]byte(out), page)
	require.NoError(t, err)
	line1, line2 := image.Rect(100, 100, 400, 130), image.Rect(100, 200, 200, 230)
	assert.Equal(t, []pdfout.Word{
		{Text: "hello", Box: image.Rect(100, 105, 180, 125), Line: line1},
		{Text: "world,", Box: image.Rect(200, 100, 400, 130), Line: line1},
		{Text: "Straße", Box: image.Rect(100, 200, 200, 230), Line: line2},
	}, words)
}

// TestParseTSVClamps: boxes are clamped to the page; words outside it, or
// with no area, and empty words are dropped, not refused.
func TestParseTSVClamps(t *testing.T) {
	for _, tc := range []struct {
		name string
		row  string
		want []pdfout.Word
	}{
		{"negative origin", row(5, 9, 1, -50, -20, 100, 40, "a"),
			[]pdfout.Word{{Text: "a", Box: image.Rect(0, 0, 50, 20)}}},
		{"past the page", row(5, 9, 1, 900, 1300, 5000, 5000, "b"),
			[]pdfout.Word{{Text: "b", Box: image.Rect(900, 1300, 1000, 1400)}}},
		{"outside", row(5, 9, 1, 2000, 10, 10, 10, "c"), nil},
		{"negative size", row(5, 9, 1, 10, 10, -5, 10, "d"), nil},
		{"zero size", row(5, 9, 1, 10, 10, 0, 10, "e"), nil},
		{"empty text", row(5, 9, 1, 10, 10, 10, 10, ""), nil},
		{"spaces trimmed", row(5, 9, 1, 10, 10, 10, 10, "  f "),
			[]pdfout.Word{{Text: "f", Box: image.Rect(10, 10, 20, 20)}}},
		{"line outside", row(4, 9, 0, 5000, 5000, 10, 10, "") + row(5, 9, 1, 10, 10, 10, 10, "g"),
			[]pdfout.Word{{Text: "g", Box: image.Rect(10, 10, 20, 20)}}},
		{"unknown level ignored", row(7, 9, 1, 10, 10, 10, 10, "x"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			words, err := ocr.ParseTSV([]byte(header+tc.row), page)
			require.NoError(t, err)
			if tc.want == nil {
				assert.Empty(t, words)
				return
			}
			assert.Equal(t, tc.want, words)
		})
	}
}

// TestParseTSVRefuses: output Tesseract never writes is refused whole,
// each with the reason.
func TestParseTSVRefuses(t *testing.T) {
	many := func(level, n int) string {
		var b strings.Builder
		b.WriteString(header)
		for i := range n {
			b.WriteString(row(level, i, 1, 1, 1, 1, 1, "w"))
		}
		return b.String()
	}
	for _, tc := range []struct {
		name, out, reason string
	}{
		{"empty", "", "no TSV header"},
		{"other header", "level\tpage\n", "no TSV header"},
		{"hocr", "<?xml version=\"1.0\"?>\n", "no TSV header"},
		{"too few fields", header + "5\t1\t1\n", "row 2: 3 fields, want 12"},
		{"too many fields", header + strings.TrimSuffix(row(5, 1, 1, 1, 1, 1, 1, "a"), "\n") + "\textra\n", "row 2: 13 fields, want 12"},
		{"not a number", header + strings.Replace(row(5, 1, 1, 1, 1, 1, 1, "a"), "\t1\t1\t1\t1\t95", "\tx\t1\t1\t1\t95", 1), "field 7 is not a number"},
		{"huge coordinate", header + row(5, 1, 1, 1<<24+1, 1, 1, 1, "a"), "field 7 is not a number within ±16777216"},
		{"overflow", header + strings.Replace(row(5, 1, 1, 7, 1, 1, 1, "a"), "\t7\t", "\t99999999999999999999999\t", 1), "field 7 is not a number"},
		{"bad confidence", header + strings.Replace(row(5, 1, 1, 1, 1, 1, 1, "a"), "95.5", "high", 1), "confidence is not a number"},
		{"not UTF-8", header + row(5, 1, 1, 1, 1, 1, 1, "caf\xe9"), "text is not UTF-8"},
		{"control character", header + row(5, 1, 1, 1, 1, 1, 1, "a\x1b[2Jb"), "unprintable U+001B"},
		{"bidi override", header + row(5, 1, 1, 1, 1, 1, 1, "a\u202eb"), "unprintable U+202E"},
		{"NUL", header + row(5, 1, 1, 1, 1, 1, 1, "a\x00b"), "unprintable U+0000"},
		{"long word", header + row(5, 1, 1, 1, 1, 1, 1, strings.Repeat("w", ocr.MaxWordBytes+1)), "text of 257 bytes, at most 256"},
		{"long row", header + strings.Repeat("1", 400) + "\n", "row 2: 400 bytes"},
		{"too many words", many(5, ocr.MaxWords+1), fmt.Sprintf("more than %d words", ocr.MaxWords)},
		{"too many lines", many(4, ocr.MaxLines+1), fmt.Sprintf("more than %d lines", ocr.MaxLines)},
		{"too long", header + strings.Repeat(row(1, 1, 1, 1, 1, 1, 1, ""), ocr.MaxOutput/20), "bytes, at most 4194304"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			words, err := ocr.ParseTSV([]byte(tc.out), page)
			require.Error(t, err)
			assert.True(t, errors.Is(err, ocr.ErrOutput), "%v", err)
			assert.Contains(t, err.Error(), tc.reason)
			assert.Nil(t, words)
		})
	}
}

// TestParseTSVBound: exactly MaxWords words are accepted (the bound is
// not below what it says).
func TestParseTSVBound(t *testing.T) {
	var b strings.Builder
	b.WriteString(header)
	for i := range ocr.MaxWords {
		b.WriteString(row(5, i, 1, 1, 1, 1, 1, "w"))
	}
	words, err := ocr.ParseTSV([]byte(b.String()), page)
	require.NoError(t, err)
	assert.Len(t, words, ocr.MaxWords)
}
