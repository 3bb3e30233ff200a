package ocr

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"strconv"
	"unicode"
	"unicode/utf8"

	"github.com/sandkit/sandkit/examples/docviewer/pdfout"
)

// Bounds on Tesseract's output, which is as hostile as the pixels it read:
// a Tesseract exploited by a crafted page writes whatever it likes.
const (
	// MaxOutput bounds the TSV of one page; the broker kills a
	// Tesseract that writes more. A dense page at 300 dpi is ~100 KB.
	MaxOutput = 4 << 20
	// MaxWords bounds the words of one page.
	MaxWords = 20000
	// MaxLines bounds the lines (level 4 rows) of one page.
	MaxLines = 20000
	// MaxWordBytes bounds one word's text.
	MaxWordBytes = 256
	// maxLineBytes bounds one TSV row: 11 numbers and a word.
	maxLineBytes = 11*12 + MaxWordBytes
	// maxCoord bounds a coordinate before clamping: larger numbers are
	// no page's.
	maxCoord = 1 << 24
)

// tsvHeader is the first row of `tesseract ... tsv` (Tesseract 4 and 5).
const tsvHeader = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext"

// ErrOutput is wrapped by every error ParseTSV returns: the output is
// not what Tesseract writes, so the page gets no text rather than a
// guess.
var ErrOutput = errors.New("ocr: malformed Tesseract output")

// Levels of a TSV row.
const (
	levelLine = 4
	levelWord = 5
)

type lineKey struct{ block, par, line int }

// ParseTSV parses Tesseract's TSV output for a page whose image has
// bounds page. It returns the words (level 5 rows with text), each with
// its box and its line's box clamped to page; words and lines that fall
// outside it are dropped.
//
// It refuses, wrapping ErrOutput: a missing or different header, a row
// longer than maxLineBytes or without 12 fields, a number that is not a
// decimal integer within ±maxCoord (confidence: a decimal number), text
// that is not valid UTF-8 or holds a character that is not printable
// (or a space), text longer than MaxWordBytes, more than MaxWords words
// or MaxLines lines, and output longer than MaxOutput.
func ParseTSV(out []byte, page image.Rectangle) ([]pdfout.Word, error) {
	if len(out) > MaxOutput {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrOutput, len(out), MaxOutput)
	}
	rows := bytes.Split(bytes.TrimSuffix(out, []byte("\n")), []byte("\n"))
	if len(out) == 0 || string(rows[0]) != tsvHeader {
		return nil, fmt.Errorf("%w: no TSV header", ErrOutput)
	}
	lines := map[lineKey]image.Rectangle{}
	type word struct {
		text string
		box  image.Rectangle
		key  lineKey
	}
	var words []word
	for i, row := range rows[1:] {
		n := i + 2
		if len(row) > maxLineBytes {
			return nil, fmt.Errorf("%w: row %d: %d bytes, at most %d", ErrOutput, n, len(row), maxLineBytes)
		}
		f := bytes.Split(row, []byte("\t"))
		if len(f) != 12 {
			return nil, fmt.Errorf("%w: row %d: %d fields, want 12", ErrOutput, n, len(f))
		}
		var v [10]int
		for j := range v {
			x, err := strconv.Atoi(string(f[j]))
			if err != nil || x < -maxCoord || x > maxCoord {
				return nil, fmt.Errorf("%w: row %d: field %d is not a number within ±%d", ErrOutput, n, j+1, maxCoord)
			}
			v[j] = x
		}
		if _, err := strconv.ParseFloat(string(f[10]), 64); err != nil {
			return nil, fmt.Errorf("%w: row %d: confidence is not a number", ErrOutput, n)
		}
		level, key := v[0], lineKey{v[2], v[3], v[4]}
		box := image.Rect(v[6], v[7], v[6]+v[8], v[7]+v[9])
		if v[8] < 0 || v[9] < 0 {
			box = image.Rectangle{} // a negative size is no box
		}
		box = box.Intersect(page)
		switch level {
		case levelLine:
			if len(lines) >= MaxLines {
				return nil, fmt.Errorf("%w: more than %d lines", ErrOutput, MaxLines)
			}
			lines[key] = box
		case levelWord:
			text, err := checkText(f[11])
			if err != nil {
				return nil, fmt.Errorf("%w: row %d: %w", ErrOutput, n, err)
			}
			if text == "" {
				continue
			}
			if len(words) >= MaxWords {
				return nil, fmt.Errorf("%w: more than %d words", ErrOutput, MaxWords)
			}
			if box.Empty() {
				continue
			}
			words = append(words, word{text, box, key})
		}
	}
	res := make([]pdfout.Word, len(words))
	for i, w := range words {
		res[i] = pdfout.Word{Text: w.text, Box: w.box, Line: lines[w.key]}
	}
	return res, nil
}

// checkText returns b as a word: valid UTF-8 of printable characters,
// at most MaxWordBytes long, spaces at its ends trimmed.
func checkText(b []byte) (string, error) {
	if len(b) > MaxWordBytes {
		return "", fmt.Errorf("text of %d bytes, at most %d", len(b), MaxWordBytes)
	}
	if !utf8.Valid(b) {
		return "", errors.New("text is not UTF-8")
	}
	s := string(b)
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return "", fmt.Errorf("text holds the unprintable %U", r)
		}
	}
	return string(bytes.TrimSpace(b)), nil
}
