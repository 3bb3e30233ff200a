package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/policy"

	"github.com/sandkit/sandkit/examples/imageparser/parser"
	"github.com/sandkit/sandkit/examples/imageparser/thumb"
)

// Learn mode over every file of testdata, hostile ones included, learns
// a policy no larger than the hand-written parser.Policy: the same
// limits, and no syscall the hand-written one does not allow (it allows
// none beyond the base list). Check then replays the files under it with
// one renderer per file and zero violations.
func TestLearnedPolicyNoLargerThanHandWritten(t *testing.T) {
	_, all := samples(t)
	learned := filepath.Join(t.TempDir(), "learned.policy")
	var stdout, stderr bytes.Buffer
	code := learnCommand(context.Background(), append([]string{"sandkit-learn", "-o", learned}, all...), &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())
	assert.Contains(t, stderr.String(), "LEARN MODE: seccomp is not enforcing")
	assert.Contains(t, stderr.String(), fmt.Sprintf("learn: %d renderers; ", len(all)))
	text, err := os.ReadFile(learned)
	require.NoError(t, err)
	p, err := policy.Parse(text)
	require.NoError(t, err, string(text))
	hand := parser.Policy(thumb.DefaultBudget(), parser.DefaultTimeout)
	assert.Subset(t, hand.Seccomp.Allow, p.Seccomp.Allow, "learned a syscall the hand-written policy does not allow")
	assert.LessOrEqual(t, len(p.SyscallRules()), len(hand.SyscallRules()))
	p.Seccomp.Allow, hand.Seccomp.Allow = nil, nil
	assert.Equal(t, hand, p, "the learned policy lost the program's own limits or layers")

	stderr.Reset()
	code = learnCommand(context.Background(), append([]string{"sandkit-check", "-policy", learned}, all...), &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())
	assert.Contains(t, stderr.String(), fmt.Sprintf("check: %d renderers, 0 violations\n", len(all)))
}
