package main

import (
	"context"
	"io"
	"os"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/learn"

	"github.com/sandkit/sandkit/examples/imageparser/parser"
	"github.com/sandkit/sandkit/examples/imageparser/thumb"
)

// learnCommand serves `imageparser sandkit-learn|sandkit-check ... FILE...`
// (package learn; `sandkit learn -- imageparser FILE...` runs it): the
// files are thumbnailed exactly as the command does, with the default
// budget and timeout, into a directory removed afterwards. The base of a
// learned policy is parser.Policy with those defaults.
func learnCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	budget, timeout := thumb.DefaultBudget(), parser.DefaultTimeout
	return learn.Command(ctx, args, stdout, stderr, parser.Policy(budget, timeout),
		func(ctx context.Context, configure func(*broker.Config), files []string) error {
			out, err := os.MkdirTemp("", "imageparser-learn-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(out)
			p, err := parser.New(ctx, parser.Options{OutDir: out, Budget: budget, Timeout: timeout, Configure: configure})
			if err != nil {
				return err
			}
			defer p.Close()
			// Files that fail (the hostile samples) are part of the run:
			// their error paths are learned too. Only a run that could
			// not go through the files at all is an error.
			_, err = p.Run(ctx, files, io.Discard, nil)
			return err
		})
}
