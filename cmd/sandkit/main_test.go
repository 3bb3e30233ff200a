package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/internal/testrenderer"
	"github.com/sandkit/sandkit/learn"
	"github.com/sandkit/sandkit/policy"
	"github.com/sandkit/sandkit/renderer"
)

// TestMain makes the test binary a Go renderer program that serves the
// learn protocol: each SAMPLE is a testrenderer action, run in a renderer
// of its own.
func TestMain(m *testing.M) {
	if renderer.Requested() {
		renderer.Main(testrenderer.Register)
	}
	if learn.Requested(os.Args) {
		os.Exit(learn.Command(context.Background(), os.Args[1:], os.Stdout, os.Stderr, policy.Strict(), actionSamples))
	}
	os.Exit(m.Run())
}

func actionSamples(ctx context.Context, configure func(*broker.Config), actions []string) error {
	cfg := broker.Config{Policy: policy.Strict()}
	configure(&cfg)
	b, err := broker.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer b.Close()
	var errs []error
	for i, action := range actions {
		r, err := b.Acquire(ctx, fmt.Sprintf("https://%d.example", i), "")
		if err != nil {
			return err
		}
		resp, _, err := broker.Call(ctx, r, testrenderer.Attempt, wrapperspb.String(action))
		if err == nil && resp.GetValue() != "ok" {
			err = errors.New(resp.GetValue())
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// sandkit learn runs the program's samples in learn mode and writes the
// policy that allows what they made; sandkit check passes under it and
// names the syscall under the policy without it.
func TestLearnThenCheck(t *testing.T) {
	ctx := context.Background()
	self, err := os.Executable()
	require.NoError(t, err)
	dir := t.TempDir()
	learned := filepath.Join(dir, "learned.policy")
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"learn", "-o", learned, "--", self, "sysinfo:4", "sysinfo"}, &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())
	assert.Contains(t, stderr.String(), "learn: 2 renderers; 1 syscalls beyond the base allowlist, 0 of them refused\n")
	assert.Regexp(t, `(?m)^learn: layers: .* -seccomp\(learning \(not enforcing\): disallowed syscalls are recorded and let through\) \+seccomp-monitor\(learning: `, stderr.String())
	text, err := os.ReadFile(learned)
	require.NoError(t, err)
	assert.Contains(t, string(text), "seccomp {\n  # sysinfo: 5 calls\n  #   5× sysinfo(ptr)\n  allow: \"sysinfo\"\n}\n")

	stderr.Reset()
	code = run(ctx, []string{"check", "-policy", learned, "--", self, "sysinfo:4", "sysinfo"}, &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())
	assert.Contains(t, stderr.String(), "check: 2 renderers, 0 violations\n")
	assert.Regexp(t, `(?m)^check: layers: .* \+seccomp\(\d+ rules\) \+seccomp-monitor\(wait killable once received\)$`, stderr.String())

	strict := filepath.Join(dir, "strict.policy")
	require.NoError(t, os.WriteFile(strict, nil, 0o644)) // an empty file is Strict
	stderr.Reset()
	code = run(ctx, []string{"check", "-policy", strict, "--", self, "sysinfo"}, &stdout, &stderr)
	require.Equal(t, 1, code, stderr.String())
	assert.Regexp(t, `(?m)^check: VIOLATION pid \d+: sysinfo \(disallowed by the seccomp policy\)$`, stderr.String())
	assert.Contains(t, stderr.String(), "check: 1 renderers, 1 violations\n")
}

// A syscall no policy can allow makes learn fail, naming it.
func TestLearnReportsRefused(t *testing.T) {
	self, err := os.Executable()
	require.NoError(t, err)
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"learn", "--", self, "ptrace"}, &stdout, &stderr)
	require.Equal(t, 1, code, stderr.String())
	assert.Contains(t, stderr.String(), "learn: REFUSED ptrace (1 calls): invalid policy: \"ptrace\" is escape surface and cannot be allowed\n")
	assert.Contains(t, stdout.String(), "# REFUSED: no policy can allow these; the samples got EPERM for them:\n#   ptrace: 1 call\n")
}

func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "usage:"},
		{[]string{"run", "x"}, "usage:"},
		{[]string{"learn", "--", "/bin/true"}, "need PROGRAM and at least one SAMPLE"},
		{[]string{"check", "--", "/bin/true", "x"}, "-policy FILE is required"},
		{[]string{"learn", "--", "/nonexistent/prog", "x"}, "no such file"},
		// A program that does not serve the protocol is never given the
		// samples.
		{[]string{"learn", "--", "/bin/true", "x"}, `/bin/true does not serve sandkit-learn: it answered "" to -protocol`},
	} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), tc.args, &stdout, &stderr)
		assert.Equal(t, 2, code, "%q", tc.args)
		assert.Contains(t, stderr.String(), tc.want, "%q", tc.args)
	}
}
