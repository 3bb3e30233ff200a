package learn

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/policy"
)

// The subcommands a program serves through Command. They are argv[1]
// words no ordinary invocation uses, so that `sandkit learn -- PROGRAM`
// can reach a program's samples without the program naming them.
const (
	LearnCommand = "sandkit-learn"
	CheckCommand = "sandkit-check"
)

// Protocol is what Command prints for -protocol: how cmd/sandkit
// recognizes a program that serves the subcommands before it hands the
// program any sample.
const Protocol = "sandkit-learn/1"

// Requested reports whether args (os.Args) ask the program for
// learning or checking (args[1] is LearnCommand or CheckCommand).
func Requested(args []string) bool {
	return len(args) > 1 && (args[1] == LearnCommand || args[1] == CheckCommand)
}

// SampleFunc runs the sample files named on the command line; see Samples.
type SampleFunc func(ctx context.Context, configure func(*broker.Config), files []string) error

// Command runs a program's LearnCommand or CheckCommand; args is
// os.Args[1:]. base is the program's own policy, whose limits and layers
// a learned policy keeps. It returns the exit status:
//
//	sandkit-learn [-o FILE] SAMPLE...   prints the learned policy (to FILE with -o);
//	                                   1 if the samples needed a syscall no policy can allow
//	sandkit-check -policy FILE SAMPLE... replays the samples under FILE;
//	                                   1 if any renderer was killed for a violation
//
// and 2 for a usage error, or when no renderer ran. Progress and verdicts
// go to stderr.
func Command(ctx context.Context, args []string, stdout, stderr io.Writer, base *policy.Policy, run SampleFunc) int {
	if len(args) == 0 || !slices.Contains([]string{LearnCommand, CheckCommand}, args[0]) {
		fmt.Fprintf(stderr, "usage: %s|%s [flags] SAMPLE...\n", LearnCommand, CheckCommand)
		return 2
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "write the learned policy to this file instead of stdout (learn)")
	policyFile := fs.String("policy", "", "the policy to check the samples against (check)")
	protocol := fs.Bool("protocol", false, "print the protocol version and exit (for sandkit)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if *protocol {
		fmt.Fprintln(stdout, Protocol)
		return 0
	}
	files := fs.Args()
	if len(files) == 0 {
		fmt.Fprintf(stderr, "%s: no SAMPLE given\n", args[0])
		return 2
	}
	samples := func(ctx context.Context, configure func(*broker.Config)) error {
		return run(ctx, configure, files)
	}
	if args[0] == CheckCommand {
		return check(ctx, stderr, *policyFile, samples)
	}
	return learnCmd(ctx, stdout, stderr, *out, base, samples)
}

func learnCmd(ctx context.Context, stdout, stderr io.Writer, out string, base *policy.Policy, samples Samples) int {
	fmt.Fprintln(stderr, "LEARN MODE: seccomp is not enforcing; use trusted samples only")
	res, err := Learn(ctx, base, samples)
	if err != nil {
		fmt.Fprintln(stderr, "learn:", err)
		return 2
	}
	fmt.Fprintln(stderr, "learn: layers:", res.Layers)
	if res.SamplesErr != nil {
		fmt.Fprintln(stderr, "learn: the samples reported:", res.SamplesErr)
	}
	if out == "" {
		_, err = stdout.Write(res.Text)
	} else {
		err = os.WriteFile(out, res.Text, 0o644)
	}
	if err != nil {
		fmt.Fprintln(stderr, "learn:", err)
		return 2
	}
	fmt.Fprintf(stderr, "learn: %d renderers; %d syscalls beyond the base allowlist, %d of them refused\n", res.Renderers, len(res.Uses), len(res.Refused))
	if res.Overflow > 0 || res.Withdrawn > 0 {
		// A withdrawn syscall is restarted and recorded when its
		// signal handler has SA_RESTART (all of Go's); one without it
		// got EINTR and may never have been retried.
		fmt.Fprintf(stderr, "learn: WARNING: %d calls past the bound on distinct syscalls and %d withdrawn by a signal before they were read were not named; "+
			"check the policy, and learn again if check fails\n", res.Overflow, res.Withdrawn)
	}
	if len(res.Refused) > 0 {
		for _, u := range res.Refused {
			fmt.Fprintf(stderr, "learn: REFUSED %s (%d calls): %v\n", u.Name, u.Count, policy.CanAllow(u.Name))
		}
		return 1
	}
	return 0
}

func check(ctx context.Context, stderr io.Writer, file string, samples Samples) int {
	if file == "" {
		fmt.Fprintf(stderr, "%s: -policy FILE is required\n", CheckCommand)
		return 2
	}
	text, err := readPolicy(file)
	if err != nil {
		fmt.Fprintln(stderr, "check:", err)
		return 2
	}
	p, err := policy.Parse(text)
	if err != nil {
		fmt.Fprintln(stderr, "check:", err)
		return 2
	}
	res, err := Check(ctx, p, samples)
	if err != nil {
		fmt.Fprintln(stderr, "check:", err)
		return 2
	}
	fmt.Fprintln(stderr, "check: layers:", res.Layers)
	if res.SamplesErr != nil {
		fmt.Fprintln(stderr, "check: the samples reported:", res.SamplesErr)
	}
	for _, v := range res.Violations {
		fmt.Fprintf(stderr, "check: VIOLATION pid %d: %s (%s)\n", v.PID, v.Syscall, v.Detail)
	}
	fmt.Fprintln(stderr, "check:", res.Summary())
	if len(res.Violations) > 0 {
		return 1
	}
	return 0
}

// readPolicy reads a policy file, refusing one over policy.MaxTextSize
// before reading it whole.
func readPolicy(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, policy.MaxTextSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > policy.MaxTextSize {
		return nil, errors.New(name + ": over the policy size limit")
	}
	return b, nil
}
