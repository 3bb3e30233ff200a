package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/policy"

	"github.com/sandkit/sandkit/examples/docviewer/backend/sandboxed"
	"github.com/sandkit/sandkit/examples/docviewer/render"
)

// Learn mode over the viewer's sample documents (testdata/valid; with the
// hostile ones too the result is the same, docs/policy.md) learns
// a policy no larger than the hand-written sandboxed.Policy: the same
// limits and sysinfo, the one syscall the hand-written one adds (glibc's
// qsort asks it, under MuPDF). Check passes with it, one renderer per
// document and zero violations; without sysinfo, check names it.
func TestLearnedPolicyNoLargerThanHandWritten(t *testing.T) {
	docs, err := filepath.Glob("testdata/valid/*")
	require.NoError(t, err)
	if raceEnabled {
		// Its 20 pages take minutes to encode under the race detector;
		// book.epub and drawing.svg make sysinfo all the same, and
		// multipage.pdf is the document of the last check below.
		docs = slices.DeleteFunc(docs, func(d string) bool { return filepath.Base(d) == "multipage.pdf" })
	}
	require.NotEmpty(t, docs)
	dir := t.TempDir()
	learned := filepath.Join(dir, "learned.policy")
	ctx := context.Background()
	var stdout, stderr bytes.Buffer
	code := learnCommand(ctx, append([]string{"sandkit-learn", "-o", learned}, docs...), &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())
	text, err := os.ReadFile(learned)
	require.NoError(t, err)
	p, err := policy.Parse(text)
	require.NoError(t, err, string(text))
	hand := sandboxed.Policy(render.DefaultLimits())
	assert.Equal(t, []string{"sysinfo"}, p.Seccomp.Allow, string(text))
	assert.Subset(t, hand.Seccomp.Allow, p.Seccomp.Allow)
	assert.Regexp(t, `(?m)^  # sysinfo: \d+ calls?$`, string(text))
	withoutAllow := func(p *policy.Policy) *policy.Policy { c := p.Clone(); c.Seccomp.Allow = nil; return c }
	assert.Equal(t, withoutAllow(hand), withoutAllow(p), "the learned policy lost the viewer's own limits or layers")

	stderr.Reset()
	code = learnCommand(ctx, append([]string{"sandkit-check", "-policy", learned}, docs...), &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())
	assert.Contains(t, stderr.String(), fmt.Sprintf("check: %d renderers, 0 violations\n", len(docs)))

	// The same policy without sysinfo: the renderer that drew a page is
	// killed, and check names the syscall.
	without := filepath.Join(dir, "without.policy")
	require.NoError(t, os.WriteFile(without, regexp.MustCompile(`(?m)^\s*allow: "sysinfo"\n`).ReplaceAll(text, nil), 0o644))
	stderr.Reset()
	code = learnCommand(ctx, []string{"sandkit-check", "-policy", without, "testdata/valid/multipage.pdf"}, &stdout, &stderr)
	assert.Equal(t, 1, code, stderr.String())
	assert.Regexp(t, `(?m)^check: VIOLATION pid \d+: sysinfo \(disallowed by the seccomp policy\)$`, stderr.String())
	assert.Contains(t, stderr.String(), "check: 1 renderers, 1 violations\n")
}
