// Command sandkit writes and checks renderer policies from sample inputs:
//
//	sandkit learn [-o FILE] -- PROGRAM SAMPLE...
//	sandkit check -policy FILE -- PROGRAM SAMPLE...
//
// learn runs the samples through PROGRAM's renderers in learn mode (every
// layer in force, but syscalls outside the allowlist are recorded and let
// through instead of killing) and prints the minimal policy that allows
// what they needed, in the policy text format, each syscall annotated with
// its count and argument shapes. check replays the samples under a policy,
// enforcing, and lists every renderer the violation monitor killed, by
// syscall; it exits 0 only with zero violations.
//
// Learn mode is not a sandbox: give it trusted samples only.
//
// PROGRAM is a Go renderer program: it is its own renderer, and only it
// knows how to drive its renderers over a sample, so sandkit runs it with
// the subcommand package learn serves (learn.Command), after checking
// that it does serve it. See docs/policy.md.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sandkit/sandkit/learn"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `usage:
  sandkit learn [-o FILE] -- PROGRAM SAMPLE...
  sandkit check -policy FILE -- PROGRAM SAMPLE...
`

// run is the command without process globals, for tests.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var sub string
	switch args[0] {
	case "learn":
		sub = learn.LearnCommand
	case "check":
		sub = learn.CheckCommand
	default:
		fmt.Fprint(stderr, usage)
		return 2
	}
	fs := flag.NewFlagSet("sandkit "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	var out, policyFile *string
	if sub == learn.LearnCommand {
		out = fs.String("o", "", "write the learned policy to this file instead of stdout")
	} else {
		policyFile = fs.String("policy", "", "the policy file to check the samples against (required)")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	rest := fs.Args()
	if len(rest) < 2 {
		fmt.Fprintf(stderr, "sandkit %s: need PROGRAM and at least one SAMPLE\n", args[0])
		fs.Usage()
		return 2
	}
	if policyFile != nil && *policyFile == "" {
		fmt.Fprintln(stderr, "sandkit check: -policy FILE is required")
		return 2
	}
	program, err := exec.LookPath(rest[0])
	if err != nil {
		fmt.Fprintln(stderr, "sandkit:", err)
		return 2
	}
	if err := probe(ctx, program, sub); err != nil {
		fmt.Fprintf(stderr, "sandkit: %s does not serve %s: %v\n"+
			"  a Go renderer program serves it by calling learn.Command when learn.Requested(os.Args) (docs/policy.md)\n", program, sub, err)
		return 2
	}
	pargs := []string{sub}
	if out != nil && *out != "" {
		pargs = append(pargs, "-o", *out)
	}
	if policyFile != nil {
		pargs = append(pargs, "-policy", *policyFile)
	}
	pargs = append(append(pargs, "--"), rest[1:]...)
	cmd := exec.CommandContext(ctx, program, pargs...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, stdout, stderr
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit) && exit.ExitCode() >= 0:
		return exit.ExitCode()
	}
	fmt.Fprintln(stderr, "sandkit:", err)
	return 2
}

// probe asks program for its protocol (learn.Protocol) before it is
// given any sample: a program that does not serve the subcommand might
// take the samples for its ordinary arguments and process them as it
// always does, learning and checking nothing, and say nothing of it.
func probe(ctx context.Context, program, sub string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var stdout bytes.Buffer
	cmd := exec.CommandContext(ctx, program, sub, "-protocol")
	cmd.Stdout = &limitedWriter{w: &stdout, n: 256}
	if err := cmd.Run(); err != nil {
		return err
	}
	if got := strings.TrimSpace(stdout.String()); got != learn.Protocol {
		return fmt.Errorf("it answered %q to -protocol, not %q", got, learn.Protocol)
	}
	return nil
}

// limitedWriter keeps the first n bytes written and drops the rest.
type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	keep := min(len(p), l.n)
	l.n -= keep
	if keep > 0 {
		if _, err := l.w.Write(p[:keep]); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}
