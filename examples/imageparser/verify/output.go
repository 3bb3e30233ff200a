package verify

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf8"
)

// maxStemBytes bounds the part of a thumbnail name taken from the input's
// name, so that names stay far below NAME_MAX (255 bytes) whatever the input.
const maxStemBytes = 64

// OutputName returns the thumbnail path for the index-th input inputPath:
// outDir/NNNN-stem.png. The stem is the input's base name without its
// extension, reduced to ASCII letters, digits, '.', '_' and '-' (anything
// else becomes '_'), without leading dots or dashes (no hidden files, no
// "..", nothing a shell tool could take for an option), at most 64 bytes, and
// "image" if nothing is left. No directory part of inputPath survives, so the
// result is always directly inside outDir. Distinct indexes give distinct
// names, which is what makes the names unique: pass each input's position.
// A negative index is formatted as its two's-complement uint64, which keeps
// names distinct without a leading '-'.
func OutputName(outDir, inputPath string, index int) string {
	base := inputPath
	if i := strings.LastIndexByte(base, '/'); i >= 0 {
		base = base[i+1:]
	}
	if i := strings.LastIndexByte(base, '.'); i > 0 {
		base = base[:i]
	}
	var b strings.Builder
	for _, r := range base {
		if b.Len() >= maxStemBytes {
			break
		}
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_':
			b.WriteRune(r)
		case r == '.' || r == '-':
			if b.Len() > 0 {
				b.WriteRune(r)
			}
		default:
			b.WriteByte('_')
		}
	}
	stem := b.String()
	if stem == "" {
		stem = "image"
	}
	return filepath.Join(outDir, fmt.Sprintf("%04d-%s.png", uint64(index), stem))
}

// OKLine formats the command's success line:
//
//	OK <file> <format> <W>x<H> frames=<n> -> <thumbnail path>
//
// Fields that are not a plain run of printable, non-space characters (a file
// name with a space, newline, control or invalid UTF-8 byte, or one starting
// with a double quote) are printed Go-quoted, so that neither an input file
// name nor a format string from a compromised renderer can forge or split
// output lines.
func OKLine(file, format string, width, height, frames int, thumbPath string) string {
	return fmt.Sprintf("OK %s %s %dx%d frames=%d -> %s", field(file), field(format), width, height, frames, field(thumbPath))
}

// maxReasonRunes bounds the length of a failure reason: error text may come
// from the renderer, which could otherwise flood the output.
const maxReasonRunes = 300

// FailLine formats the command's failure line:
//
//	FAIL <file>: <reason>
//
// file is printed as in OKLine. The reason is err's text with every
// non-printable character escaped (so it stays on one line) and cut to 300
// characters.
func FailLine(file string, err error) string {
	reason := "unknown error"
	if err != nil {
		reason = err.Error()
	}
	return "FAIL " + field(file) + ": " + escape(reason, maxReasonRunes)
}

// field returns s unchanged if it is a non-empty run of printable non-space
// runes not starting with '"', else strconv.Quote(s).
func field(s string) string {
	if s == "" || s[0] == '"' || !utf8.ValidString(s) {
		return strconv.Quote(s)
	}
	for _, r := range s {
		if r == ' ' || !strconv.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// escape replaces non-printable runes and invalid bytes of s by Go escapes
// and truncates to maxRunes runes, marking a cut with "...".
func escape(s string, maxRunes int) string {
	var b strings.Builder
	for n := 0; s != ""; n++ {
		if n == maxRunes {
			b.WriteString("...")
			break
		}
		r, size := utf8.DecodeRuneInString(s)
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[0])
		case strconv.IsPrint(r):
			b.WriteRune(r)
		default:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
		s = s[size:]
	}
	return b.String()
}
