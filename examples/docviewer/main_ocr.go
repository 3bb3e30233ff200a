package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/sandkit/sandkit/examples/docviewer/convert"
	"github.com/sandkit/sandkit/examples/docviewer/ocr"
)

// checkOCR refuses -ocr LANG, saying what to install, when Tesseract or
// the language's data is missing: before any document is opened.
func checkOCR(lang string) error {
	if lang == "" {
		return nil
	}
	if _, err := ocr.Check(ocr.DefaultPath, lang); err != nil {
		return usageError{msg: fmt.Sprintf("-ocr %s: %v", lang, err)}
	}
	return nil
}

// newRecognizer starts OCR in lang (checked by checkOCR): Tesseract, each
// page in a sandbox of its own. An empty lang is no OCR: nil, nothing to
// close.
func newRecognizer(ctx context.Context, lang string, jobs int, log *slog.Logger) (convert.Recognizer, io.Closer, error) {
	if lang == "" {
		return nil, io.NopCloser(nil), nil
	}
	e, err := ocr.New(ctx, ocr.Config{Lang: lang, MaxRunning: jobs, Logger: log})
	if err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("-ocr %s: %w", lang, err)
	}
	return e, e, nil
}
