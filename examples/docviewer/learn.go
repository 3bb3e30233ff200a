package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/learn"

	"github.com/sandkit/sandkit/examples/docviewer/backend/sandboxed"
	"github.com/sandkit/sandkit/examples/docviewer/convert"
	"github.com/sandkit/sandkit/examples/docviewer/library"
	"github.com/sandkit/sandkit/examples/docviewer/pdfout"
	"github.com/sandkit/sandkit/examples/docviewer/render"
)

// learnCommand serves `docviewer sandkit-learn|sandkit-check ... DOC...`
// (package learn; `sandkit learn -- docviewer DOC...` runs it): each
// document is converted exactly as `docviewer convert DOC OUT.pdf` does,
// in a renderer of its own, into a directory removed afterwards. The base
// of a learned policy is sandboxed.Policy with the default limits.
func learnCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	limits := render.DefaultLimits()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	return learn.Command(ctx, args, stdout, stderr, sandboxed.Policy(limits),
		func(ctx context.Context, configure func(*broker.Config), docs []string) error {
			out, err := os.MkdirTemp("", "docviewer-learn-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(out)
			var errs []error
			for i, doc := range docs {
				pdf := filepath.Join(out, fmt.Sprintf("%d.pdf", i))
				if err := convertSample(ctx, doc, pdf, limits, log, configure); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", doc, err))
				}
			}
			return errors.Join(errs...)
		})
}

// convertSample converts one document as convertOne does, with the
// broker configured by configure.
func convertSample(ctx context.Context, doc, out string, limits render.Limits, log *slog.Logger, configure func(*broker.Config)) error {
	lib, err := library.Single(doc)
	if err != nil {
		return err
	}
	be, err := sandboxed.New(ctx, sandboxed.Config{Library: lib, Limits: limits, Logger: log, Configure: configure})
	if err != nil {
		return err
	}
	defer be.Close()
	_, err = convert.ToPDF(ctx, be, lib.List()[0].ID, out, convert.DefaultDPI, pdfout.Options{}, nil)
	return err
}
