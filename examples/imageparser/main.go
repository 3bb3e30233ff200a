// Command imageparser writes thumbnails of untrusted image files, decoding
// each one in a sandboxed renderer of its own:
//
//	imageparser [-out DIR] [-max-pixels N] [-timeout D] [-warm N] FILE...
//
// It prints one line per file, in argument order:
//
//	OK <file> <format> <W>x<H> frames=<n> -> <thumbnail path>
//	FAIL <file>: <reason>
//
// and exits 0 only when every file succeeded (1 when some failed, 2 on a
// usage or setup error). The program is its own renderer: the broker
// re-executes it, and main hands over to renderer.Main first thing.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/learn"
	"github.com/sandkit/sandkit/renderer"

	"github.com/sandkit/sandkit/examples/imageparser/imagerenderer"
	"github.com/sandkit/sandkit/examples/imageparser/parser"
	"github.com/sandkit/sandkit/examples/imageparser/thumb"
)

func main() {
	if renderer.Requested() {
		renderer.Main(imagerenderer.Register) // does not return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var code int
	if learn.Requested(os.Args) {
		code = learnCommand(ctx, os.Args[1:], os.Stdout, os.Stderr)
	} else {
		code = run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	}
	stop()
	os.Exit(code)
}

// run is the command without process globals, for tests.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("imageparser", flag.ContinueOnError)
	fs.SetOutput(stderr)
	budget := thumb.DefaultBudget()
	out := fs.String("out", "thumbnails", "directory for the thumbnail PNGs")
	fs.Int64Var(&budget.MaxPixels, "max-pixels", budget.MaxPixels, "largest declared width×height decoded; the renderer's memory limit follows from it")
	timeout := fs.Duration("timeout", parser.DefaultTimeout, "time limit per file; the renderer is killed past it")
	warm := fs.Int("warm", 0, "renderers kept spawned and locked down ahead of need (each still serves one file, unless -reuse)")
	reuse := fs.Bool("reuse", false, "files of one directory share renderers, kept between files: faster, but a crafted file can reach the files of its own directory handled after it")
	verbose := fs.Bool("v", false, "log renderer lifecycle and broker details to stderr")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: imageparser [-out DIR] [-max-pixels N] [-timeout D] [-warm N] [-reuse] [-v] FILE...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var bad []string
	if budget.MaxPixels < 1 {
		bad = append(bad, fmt.Sprintf("-max-pixels %d: must be at least 1", budget.MaxPixels))
	}
	if *timeout <= 0 {
		bad = append(bad, fmt.Sprintf("-timeout %v: must be positive", *timeout))
	}
	if *warm < 0 {
		bad = append(bad, fmt.Sprintf("-warm %d: must not be negative", *warm))
	}
	if fs.NArg() == 0 {
		bad = append(bad, "no FILE given")
	}
	if len(bad) > 0 {
		for _, b := range bad {
			fmt.Fprintln(stderr, "imageparser:", b)
		}
		fs.Usage()
		return 2
	}
	level := slog.LevelError
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	p, err := parser.New(ctx, parser.Options{OutDir: *out, Budget: budget, Timeout: *timeout, WarmPool: *warm, ReuseByDirectory: *reuse, Logger: log})
	if err != nil {
		fmt.Fprintln(stderr, "imageparser:", err)
		return 2
	}
	defer p.Close()
	// Progress is for a person watching results go elsewhere: on a
	// terminal, while the result lines go to a file or a pipe.
	var progress io.Writer
	if isTerminal(stderr) && !isTerminal(stdout) {
		progress = stderr
	}
	failed, err := p.Run(ctx, fs.Args(), stdout, progress)
	if err != nil {
		fmt.Fprintln(stderr, "imageparser:", err)
		return 2
	}
	if failed > 0 {
		return 1
	}
	return 0
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
