package learn_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/learn"
	"github.com/sandkit/sandkit/policy"
)

// Command refuses what it cannot do before any sample runs.
func TestCommandRefusesBeforeRunning(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.policy")
	huge := filepath.Join(dir, "huge.policy")
	if err := os.WriteFile(bad, []byte("seccomp { allow: \"ptrace\" }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(huge, []byte("#"+strings.Repeat("x", policy.MaxTextSize)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "usage: sandkit-learn|sandkit-check"},
		{[]string{"learn", "x"}, 2, "usage:"},
		{[]string{learn.LearnCommand}, 2, "no SAMPLE given"},
		{[]string{learn.CheckCommand, "x"}, 2, "-policy FILE is required"},
		{[]string{learn.CheckCommand, "-policy", filepath.Join(dir, "missing"), "x"}, 2, "no such file"},
		{[]string{learn.CheckCommand, "-policy", bad, "x"}, 2, `"ptrace" is escape surface`},
		{[]string{learn.CheckCommand, "-policy", huge, "x"}, 2, "over the policy size limit"},
	} {
		ran := false
		run := func(context.Context, func(*broker.Config), []string) error { ran = true; return nil }
		var stdout, stderr bytes.Buffer
		code := learn.Command(context.Background(), tc.args, &stdout, &stderr, policy.Strict(), run)
		assert.Equal(t, tc.code, code, "%q: %s", tc.args, stderr.String())
		assert.Contains(t, stderr.String(), tc.want, "%q", tc.args)
		assert.False(t, ran, "%q: the samples ran", tc.args)
	}
}

// The protocol answer is what cmd/sandkit looks for, and runs nothing.
func TestCommandProtocol(t *testing.T) {
	var stdout, stderr bytes.Buffer
	run := func(context.Context, func(*broker.Config), []string) error {
		t.Error("the samples ran")
		return nil
	}
	assert.Equal(t, 0, learn.Command(context.Background(), []string{learn.LearnCommand, "-protocol"}, &stdout, &stderr, policy.Strict(), run))
	assert.Equal(t, learn.Protocol+"\n", stdout.String())
}

// Samples that never start a renderer under the given configuration are
// an error, not a pass with nothing learned.
func TestCommandSamplesWithoutRenderers(t *testing.T) {
	run := func(context.Context, func(*broker.Config), []string) error { return nil }
	for _, args := range [][]string{{learn.LearnCommand, "x"}, {learn.CheckCommand, "-policy", os.DevNull, "x"}} {
		var stdout, stderr bytes.Buffer
		assert.Equal(t, 2, learn.Command(context.Background(), args, &stdout, &stderr, policy.Strict(), run), "%q", args)
		assert.Contains(t, stderr.String(), "the samples started no renderer", "%q", args)
		assert.Empty(t, stdout.String(), "%q", args)
	}
}
