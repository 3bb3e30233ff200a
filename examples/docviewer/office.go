package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/sandkit/sandkit/examples/docviewer/office"
)

// checkOffice refuses Office documents among names when LibreOffice is
// not installed, saying what to install, before any document is opened
// or a sandbox spawned.
func checkOffice(names []string) error {
	for _, name := range names {
		if office.Is(name) {
			if err := office.Available(); err != nil {
				return fmt.Errorf("%s: an Office document: %w", name, err)
			}
		}
	}
	return nil
}

// officePDF turns the Office document in into a PDF with LibreOffice,
// in a sandbox of its own, and writes it to a private temporary
// directory, which cleanup removes. That PDF is LibreOffice's output, as
// untrusted as the document: the caller renders it like any other PDF,
// in a MuPDF renderer, and only its pixels are kept. Anything but an
// Office document (by name) is returned as it is.
func officePDF(ctx context.Context, in string, log *slog.Logger) (pdf string, cleanup func(), err error) {
	cleanup = func() {}
	if !office.Is(in) {
		return in, cleanup, nil
	}
	if err := office.Available(); err != nil {
		return "", cleanup, fmt.Errorf("an Office document: %w", err)
	}
	doc, err := os.Open(in)
	if err != nil {
		return "", cleanup, err
	}
	defer doc.Close()
	if fi, err := doc.Stat(); err != nil || !fi.Mode().IsRegular() {
		return "", cleanup, fmt.Errorf("not a regular file")
	}
	conv, err := office.New(ctx, log, 1)
	if err != nil {
		return "", cleanup, err
	}
	defer conv.Close()
	res, err := conv.ToPDF(ctx, "convert", doc, filepath.Base(in))
	if res != nil {
		log.Debug("office conversion", "document", in, "took", res.Took, "layers", res.Layers.String(), "exit", res.Exit)
	}
	if err != nil {
		return "", cleanup, err
	}
	dir, err := os.MkdirTemp("", "docviewer-office-*") // 0700
	if err != nil {
		return "", cleanup, err
	}
	cleanup = func() { os.RemoveAll(dir) }
	pdf = filepath.Join(dir, strings.TrimSuffix(filepath.Base(in), filepath.Ext(in))+".pdf")
	if err := os.WriteFile(pdf, res.PDF, 0o600); err != nil {
		cleanup()
		return "", func() {}, err
	}
	return pdf, cleanup, nil
}
