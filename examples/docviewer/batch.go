package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sandkit/sandkit/examples/docviewer/backend/sandboxed"
	"github.com/sandkit/sandkit/examples/docviewer/convert"
	"github.com/sandkit/sandkit/examples/docviewer/library"
	"github.com/sandkit/sandkit/examples/docviewer/pdfout"
)

// safeSuffix ends the default output name: NAME-safe.pdf, as Dangerzone
// names its outputs. Files already so named are skipped when walking a
// directory, so that converting a tree twice does not convert its outputs.
const safeSuffix = "-safe.pdf"

type batchConfig struct {
	args        []string
	recursive   bool
	outDir      string
	jobs        int
	dpi         float64
	opt         pdfout.Options
	unsandboxed bool
	rec         convert.Recognizer // OCR (-ocr); nil: none
}

// batchJob is one document to convert; err, if set, refuses it before any
// renderer sees it (e.g. a directory without -r).
type batchJob struct {
	in, out string
	err     error
}

type batchResult struct {
	batchJob
	pages int
	took  time.Duration
}

// planBatch lists the jobs for cfg. With -r and no -o, two or more
// arguments mean the last is the output directory (convert -r DIR OUT).
func planBatch(cfg *batchConfig) ([]batchJob, error) {
	inputs := cfg.args
	if cfg.recursive && cfg.outDir == "" && len(inputs) >= 2 {
		cfg.outDir, inputs = inputs[len(inputs)-1], inputs[:len(inputs)-1]
		if fi, err := os.Stat(cfg.outDir); err == nil && !fi.IsDir() {
			return nil, usageError{msg: fmt.Sprintf("%s: the output directory is a file", cfg.outDir)}
		}
	}
	var jobs []batchJob
	outs := map[string]string{} // output path -> input, to refuse collisions
	add := func(in, out string, err error) {
		if err == nil {
			if _, taken := outs[out]; taken {
				// a.pdf and a.epub: the second keeps its extension,
				// a.epub-safe.pdf, unique as names in a directory are.
				out = filepath.Join(filepath.Dir(out), filepath.Base(in)+safeSuffix)
			}
			if prev, ok := outs[out]; ok {
				err = fmt.Errorf("its output %s is also the output of %s", out, prev)
			} else {
				outs[out] = in
			}
		}
		jobs = append(jobs, batchJob{in: in, out: out, err: err})
	}
	for _, arg := range inputs {
		fi, err := os.Lstat(arg)
		if err != nil || !fi.IsDir() {
			// A file, or not there: library.Single gives the reason later.
			add(arg, outputFor(cfg.outDir, "", arg), nil)
			continue
		}
		if !cfg.recursive {
			add(arg, "", errors.New("a directory; give -r to convert the documents under it"))
			continue
		}
		root := arg
		walkErr := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				add(path, "", err)
				return nil
			}
			name := d.Name()
			if path != root && strings.HasPrefix(name, ".") {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil // hidden files are not documents
			}
			if d.IsDir() {
				if cfg.outDir != "" && same(path, cfg.outDir) {
					return filepath.SkipDir // our own output
				}
				return nil
			}
			if strings.HasSuffix(name, safeSuffix) {
				return nil // an output of an earlier run
			}
			rel, err := filepath.Rel(root, filepath.Dir(path))
			if err != nil {
				add(path, "", err)
				return nil
			}
			add(path, outputFor(cfg.outDir, rel, path), nil)
			return nil
		})
		if walkErr != nil {
			return nil, walkErr
		}
	}
	return jobs, nil
}

// outputFor is where in's safe PDF goes: NAME-safe.pdf beside it, or
// under outDir/rel when an output directory is given.
func outputFor(outDir, rel, in string) string {
	base := filepath.Base(in)
	name := strings.TrimSuffix(base, filepath.Ext(base)) + safeSuffix
	if outDir == "" {
		return filepath.Join(filepath.Dir(in), name)
	}
	return filepath.Join(outDir, rel, name)
}

// convertBatch converts many documents, cfg.jobs at a time, each in its
// own sandbox (a broker and a renderer of its own), so that a hostile
// document costs only its own conversion. It prints one line per document
// (or a progress bar on a terminal) and a summary, and fails if any
// document was refused.
func convertBatch(ctx context.Context, cfg batchConfig, stderr io.Writer, log *slog.Logger) error {
	jobs, err := planBatch(&cfg)
	if err != nil {
		return err
	}
	start := time.Now()
	tty := isTerminal(stderr)
	// Each refusal is reported below with its reason; the backend's own
	// warnings about it would say it twice (and tear a progress bar).
	log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	var (
		mu      sync.Mutex
		results = make([]batchResult, len(jobs))
		done    int
		pages   int
		failed  int
	)
	report := func(i int, r batchResult) {
		mu.Lock()
		defer mu.Unlock()
		results[i] = r
		done++
		pages += r.pages
		if r.err != nil {
			failed++
		}
		if tty {
			const width = 30
			fill := width * done / len(jobs)
			fmt.Fprintf(stderr, "\r[%s%s] %d/%d documents, %d pages, %d refused", strings.Repeat("=", fill), strings.Repeat(" ", width-fill), done, len(jobs), pages, failed)
			if done == len(jobs) {
				fmt.Fprintln(stderr)
			}
			return
		}
		if r.err != nil {
			fmt.Fprintf(stderr, "refused %s: %v\n", r.in, r.err)
		} else {
			fmt.Fprintf(stderr, "converted %s -> %s (%d pages, %.1f s)\n", r.in, r.out, r.pages, r.took.Seconds())
		}
	}

	work := make(chan int)
	var wg sync.WaitGroup
	for range min(cfg.jobs, len(jobs)) {
		wg.Go(func() {
			for i := range work {
				report(i, runJob(ctx, jobs[i], cfg, log))
			}
		})
	}
	// Every job is handed out even after ctx ends: runJob then refuses it
	// at once, so the summary accounts for each document.
	for i := range jobs {
		work <- i
	}
	close(work)
	wg.Wait()

	took := time.Since(start)
	fmt.Fprintf(stderr, "converted %d of %d documents (%d pages) in %.1f s, %.1f pages/s; %d refused\n",
		len(jobs)-failed, len(jobs), pages, took.Seconds(), float64(pages)/took.Seconds(), failed)
	if failed == 0 {
		return nil
	}
	if tty { // the per-document lines were not printed
		for _, r := range results {
			if r.err != nil {
				fmt.Fprintf(stderr, "refused %s: %v\n", r.in, r.err)
			}
		}
	}
	return errBatchFailed
}

// errBatchFailed ends a batch in which some document was refused: each was
// already reported with its reason, so run prints nothing more.
var errBatchFailed = errors.New("some documents were refused")

func runJob(ctx context.Context, j batchJob, cfg batchConfig, log *slog.Logger) (r batchResult) {
	r.batchJob = j
	start := time.Now()
	defer func() { r.took = time.Since(start) }()
	if r.err != nil {
		return r
	}
	if err := ctx.Err(); err != nil {
		r.err = err
		return r
	}
	if same(j.in, j.out) {
		r.err = errors.New("its output would overwrite it")
		return r
	}
	src, cleanup, err := officePDF(ctx, j.in, log)
	if err != nil {
		r.err = fmt.Errorf("%w (nothing written)", err)
		return r
	}
	defer cleanup()
	lib, err := library.Single(src)
	if err != nil {
		r.err = err
		return r
	}
	if err := os.MkdirAll(filepath.Dir(j.out), 0o755); err != nil {
		r.err = err
		return r
	}
	be, closer, err := newBackend(ctx, lib, log, cfg.unsandboxed, sandboxed.Config{})
	if err != nil {
		r.err = err
		return r
	}
	defer closer.Close()
	r.pages, err = convert.ToPDFText(ctx, be, lib.List()[0].ID, j.out, cfg.dpi, cfg.opt, cfg.rec, nil)
	if err != nil {
		r.err = fmt.Errorf("%w (nothing written)", err)
	}
	return r
}
