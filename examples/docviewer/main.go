// Command docviewer is a sandboxed document viewer: untrusted documents are
// turned into pixels by a throwaway renderer, and only pixels come back.
//
//	docviewer serve [-addr 127.0.0.1:8080] [-allowed-hosts H,...] [-dpi 110] [-uploads] [-ocr LANG] [-unsandboxed-dangerous] DIR
//	docviewer convert [-dpi 150] [-quality N] [-small | -lossless] [-ocr LANG] [-v] [-unsandboxed-dangerous] IN OUT.pdf
//	docviewer convert [flags] [-j N] [-r] [-o OUTDIR] IN... [OUTDIR]
//
// serve is a web UI for the documents of DIR; convert writes a safe,
// raster-only PDF of IN. Both render every document in a sandboxed
// renderer process of its own: this same executable, re-executed, which
// locks itself down (see backend/sandboxed.Policy) before it reads the
// document. -unsandboxed-dangerous renders in-process instead, for
// debugging MuPDF on trusted documents only.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/learn"
	"github.com/sandkit/sandkit/renderer"

	"github.com/sandkit/sandkit/examples/docviewer/backend"
	"github.com/sandkit/sandkit/examples/docviewer/backend/inprocess"
	"github.com/sandkit/sandkit/examples/docviewer/backend/sandboxed"
	"github.com/sandkit/sandkit/examples/docviewer/backend/sandboxed/worker"
	"github.com/sandkit/sandkit/examples/docviewer/convert"
	"github.com/sandkit/sandkit/examples/docviewer/library"
	"github.com/sandkit/sandkit/examples/docviewer/office"
	"github.com/sandkit/sandkit/examples/docviewer/pdfout"
	"github.com/sandkit/sandkit/examples/docviewer/render"
	"github.com/sandkit/sandkit/examples/docviewer/server"
)

func main() {
	// A renderer is this executable started by the broker: it must become
	// the renderer before anything else runs (renderer.Main never returns).
	if renderer.Requested() {
		renderer.Main(worker.Register)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var code int
	if learn.Requested(os.Args) {
		code = learnCommand(ctx, os.Args[1:], os.Stdout, os.Stderr)
	} else {
		code = run(ctx, os.Args[1:], os.Stderr)
	}
	stop()
	os.Exit(code)
}

// unsandboxedFlag names the flag that renders in-process. It is long and
// loud on purpose: nobody should type it by accident.
const unsandboxedFlag = "unsandboxed-dangerous"

// newBackend is the one place that decides what renders documents: one
// sandboxed renderer per document, unless unsandboxed is set. warm is how
// many renderers to keep ready (serve opens documents on demand; convert
// opens one).
func newBackend(ctx context.Context, lib *library.Library, log *slog.Logger, unsandboxed bool, cfg sandboxed.Config) (backend.Backend, io.Closer, error) {
	if unsandboxed {
		log.Warn("-" + unsandboxedFlag + ": rendering in-process, documents are NOT sandboxed; use only for trusted documents")
		b := inprocess.New(lib, render.DefaultLimits(), log)
		return b, b, nil
	}
	cfg.Library, cfg.Limits, cfg.Logger = lib, render.DefaultLimits(), log
	b, err := sandboxed.New(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	return b, b, nil
}

const usage = `usage:
  docviewer serve [-addr 127.0.0.1:8080] [-dpi 110] [-uploads] [-ocr LANG] DIR
  docviewer convert [-dpi 150] [-quality N] [-small | -lossless] [-ocr LANG] [-v] IN OUT.pdf
  docviewer convert [-j N] [-r] [-o OUTDIR] IN... [OUTDIR]
(-` + unsandboxedFlag + ` renders in-process: trusted documents only)
`

// newFlagSet is a subcommand's flag set whose -h prints the command's
// usage and flags once, and whose errors the caller reports.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: docviewer %s\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args into fs. -h is errHelp (the usage is printed,
// exit 0); a bad flag is a usageError whose message the flag package has
// already printed, with the usage.
func parseFlags(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		return errHelp
	}
	if err != nil {
		return usageError{printed: true}
	}
	return nil
}

// errHelp ends a command that printed its usage because it was asked to.
var errHelp = errors.New("help requested")

func run(ctx context.Context, args []string, stderr io.Writer) int {
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(ctx, args[1:], stderr, log)
	case "convert":
		err = convertCmd(ctx, args[1:], stderr, log)
	default:
		fmt.Fprint(stderr, usage)
		return 2
	}
	var ue usageError
	switch {
	case errors.Is(err, errHelp):
		return 0
	case errors.Is(err, errBatchFailed):
		return 1
	case errors.As(err, &ue) && ue.printed:
		return 2
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "docviewer: %v\n%s", err, usage)
		return 2
	case err != nil:
		fmt.Fprintf(stderr, "docviewer: %v\n", err)
		return 1
	}
	return 0
}

// usageError is a mistake in the command line. printed: the flag package
// has already said what and shown the usage.
type usageError struct {
	msg     string
	printed bool
}

func (e usageError) Error() string { return e.msg }

func serve(ctx context.Context, args []string, stderr io.Writer, log *slog.Logger) error {
	fs := newFlagSet("serve", "serve [-addr 127.0.0.1:8080] [-dpi 110] [-uploads] [-ocr LANG] DIR", stderr)
	addr := fs.String("addr", "127.0.0.1:8080", "address to listen on (loopback by default)")
	dpi := fs.Float64("dpi", server.DefaultDPI, "resolution of the pages shown")
	unsandboxed := fs.Bool(unsandboxedFlag, false, "render in-process, WITHOUT the sandbox (trusted documents only)")
	uploads := fs.Bool("uploads", false, "web mode: accept uploads from the browser into a private temporary store (32 MiB each, 8 per client, deleted after 30 min)")
	allowedHosts := fs.String("allowed-hosts", "", "comma-separated Host header values to accept besides -addr (e.g. docviewer,docviewer.default.svc); with it -addr may be 0.0.0.0:PORT")
	maxRenderers := fs.Int("max-renderers", 8, "documents open at once, each in a renderer of its own (also the requests served at once)")
	maxQueue := fs.Int("max-queue", 256, "requests waiting for a renderer; past it a page request is answered 503 with Retry-After")
	warm := fs.Int("warm", 2, "renderers kept locked down and ready (at most -max-renderers)")
	idle := fs.Duration("idle-timeout", 2*time.Minute, "end a document's renderer after this long unused")
	ocrLang := fs.String("ocr", "", "give pages a text layer (find, selection) and safe PDFs an invisible one, recognised by Tesseract in this language (eng, deu, eng+deu), each page in a sandbox of its own")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{msg: "serve needs one directory"}
	}
	if err := checkOCR(*ocrLang); err != nil {
		return err
	}
	hosts := strings.FieldsFunc(*allowedHosts, func(r rune) bool { return r == ',' })
	if err := checkDPI(*dpi); err != nil {
		return err
	}
	if host, _, err := net.SplitHostPort(*addr); err == nil {
		if ip := net.ParseIP(host); len(hosts) == 0 && (host == "" || (ip != nil && ip.IsUnspecified())) {
			return usageError{msg: fmt.Sprintf("-addr %s: listening on every address is refused: the Host check needs the address clients use; give that one (for example -addr 192.0.2.10:8080), or the names with -allowed-hosts", *addr)}
		}
	}
	lib, err := library.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	if *maxRenderers < 1 || *maxQueue < 1 || *warm < 0 || *warm > *maxRenderers || *idle <= 0 {
		return usageError{msg: fmt.Sprintf("-max-renderers %d, -max-queue %d, -warm %d, -idle-timeout %v: need -max-renderers >= 1, -max-queue >= 1, 0 <= -warm <= -max-renderers, -idle-timeout > 0", *maxRenderers, *maxQueue, *warm, *idle)}
	}
	// Office documents, of the folder or uploaded, go through
	// LibreOffice, if installed; without it they are refused with what
	// to install.
	conv, err := office.New(ctx, log, 2)
	switch {
	case errors.Is(err, office.ErrNotInstalled):
		if *uploads || slices.ContainsFunc(lib.List(), func(d library.Doc) bool { return office.Is(d.Name) }) {
			log.Warn("Office documents are refused", "err", err)
		}
		conv = nil
	case err != nil:
		return err
	default:
		defer conv.Close()
	}
	be, closer, err := newBackend(ctx, lib, log, *unsandboxed, sandboxed.Config{
		MaxRenderers: *maxRenderers, MaxQueue: *maxQueue, WarmPool: *warm, IdleTimeout: *idle,
		// A server's resident size goes back down after a burst.
		FreeMemoryWhenIdle: true,
		Office:             conv,
	})
	if err != nil {
		return err
	}
	defer closer.Close()

	opts := []server.Option{server.WithDPI(*dpi), server.WithLogger(log), server.WithAllowedHosts(hosts...)}
	rec, recCloser, err := newRecognizer(ctx, *ocrLang, 2, log)
	if err != nil {
		return err
	}
	defer recCloser.Close()
	if rec != nil {
		opts = append(opts, server.WithOCR(rec))
	}
	if *uploads {
		up, err := server.NewUploads(ctx, server.UploadConfig{Logger: log, Office: conv})
		if err != nil {
			return err
		}
		defer up.Close()
		upBE, upCloser, err := newBackend(ctx, up.Library(), log, *unsandboxed, sandboxed.Config{
			// Uploads get no warm pool: folder mode's renderers stay ready.
			MaxRenderers: *maxRenderers, MaxQueue: *maxQueue, IdleTimeout: *idle,
			FreeMemoryWhenIdle: true,
		})
		if err != nil {
			return err
		}
		defer upCloser.Close()
		opts = append(opts, server.WithUploads(up, upBE))
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	bound := ln.Addr().String()
	h, err := server.New(lib, be, bound, opts...)
	if err != nil {
		ln.Close()
		return err
	}
	if ip := ln.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
		log.Warn("listening on a non-loopback address: anyone who can reach it can view the documents", "addr", bound)
	}
	srv := &http.Server{
		Handler:           server.AccessLog(h, log),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	log.Info("serving", "url", "http://"+bound+"/", "documents", len(lib.List()))
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(shutdownCtx)
	}
}

const convertSynopsis = "convert [-dpi 150] [-quality N] [-small | -lossless] [-ocr LANG] [-v] IN OUT.pdf\n" +
	"       docviewer convert [-dpi 150] [-quality N] [-small | -lossless] [-ocr LANG] [-v] [-j N] [-r] [-o OUTDIR] IN... [OUTDIR]"

// maxJobs bounds -j.
const maxJobs = 64

func convertCmd(ctx context.Context, args []string, stderr io.Writer, log *slog.Logger) error {
	fs := newFlagSet("convert", convertSynopsis, stderr)
	dpi := fs.Float64("dpi", convert.DefaultDPI, "resolution of the converted pages")
	verbose := fs.Bool("v", false, "log the renderer's lifecycle, with the isolation layers in force, to stderr")
	quality := fs.Int("quality", 0, "store every page that is not pure black and white as JPEG at this quality (1-100); 0: lossless, JPEG only for photographic pages")
	small := fs.Bool("small", false, "store pages without colour as 1-bit black and white (threshold at mid-gray): ~3x smaller, loses anti-aliasing and light grays")
	lossless := fs.Bool("lossless", false, "store pages of black text on white with 256 gray levels, not 4 (anti-aliased edges exact; ~2.6x larger)")
	jobs := fs.Int("j", min(runtime.NumCPU(), maxJobs), "documents converted at once (batch mode)")
	recursive := fs.Bool("r", false, "convert the documents under directories, mirroring the tree into OUTDIR (the last argument) or beside each original")
	outDir := fs.String("o", "", "write NAME-safe.pdf into this directory (batch mode)")
	unsandboxed := fs.Bool(unsandboxedFlag, false, "render in-process, WITHOUT the sandbox (trusted documents only)")
	ocrLang := fs.String("ocr", "", "add an invisible text layer recognised by Tesseract in this language (eng, deu, eng+deu), run in a sandbox of its own on the checked pixels")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *verbose {
		log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	} else {
		log = slog.New(withoutDocumentErrors{log.Handler()})
	}
	// Checked before any document is opened, let alone a sandbox spawned.
	if err := checkDPI(*dpi); err != nil {
		return err
	}
	if *quality < 0 || *quality > 100 {
		return usageError{msg: fmt.Sprintf("-quality %d: must be between 1 and 100 (0: automatic)", *quality)}
	}
	// Each job holds a renderer and its page region (128 MiB with the
	// default limits): the bound keeps a typo from asking for hundreds.
	if *jobs < 1 || *jobs > maxJobs {
		return usageError{msg: fmt.Sprintf("-j %d: must be between 1 and %d", *jobs, maxJobs)}
	}
	if err := checkOCR(*ocrLang); err != nil {
		return err
	}
	if *small && *lossless {
		return usageError{msg: "-small and -lossless: choose one"}
	}
	if err := checkOffice(fs.Args()); err != nil {
		return err
	}
	opt := pdfout.Options{Quality: *quality, Small: *small, Lossless: *lossless}
	if fs.NArg() == 0 {
		return usageError{msg: "convert needs IN and OUT.pdf, or documents to convert beside themselves"}
	}
	rec, ocrCloser, err := newRecognizer(ctx, *ocrLang, *jobs, log)
	if err != nil {
		return err
	}
	defer ocrCloser.Close()
	if fs.NArg() == 2 && !*recursive && *outDir == "" {
		return convertOne(ctx, fs.Arg(0), fs.Arg(1), *dpi, opt, rec, *unsandboxed, stderr, log)
	}
	return convertBatch(ctx, batchConfig{
		args: fs.Args(), recursive: *recursive, outDir: *outDir, jobs: *jobs,
		dpi: *dpi, opt: opt, unsandboxed: *unsandboxed, rec: rec,
	}, stderr, log)
}

// convertOne is the single-document form, convert IN OUT.pdf.
func convertOne(ctx context.Context, in, out string, dpi float64, opt pdfout.Options, rec convert.Recognizer, unsandboxed bool, stderr io.Writer, log *slog.Logger) error {
	if same(in, out) {
		return usageError{msg: "OUT must differ from IN"}
	}
	// An Office document becomes a PDF first, in LibreOffice's sandbox;
	// that PDF is rendered like any other, in MuPDF's.
	src, cleanup, err := officePDF(ctx, in, log)
	if err != nil {
		return fmt.Errorf("convert %s: %w (nothing written to %s)", in, err, out)
	}
	defer cleanup()
	lib, err := library.Single(src)
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	be, closer, err := newBackend(ctx, lib, log, unsandboxed, sandboxed.Config{})
	if err != nil {
		return err
	}
	defer closer.Close()
	doc := lib.List()[0].ID
	// Page progress only on a terminal, as one line rewritten in place:
	// in a log or a pipe it would only bury the result.
	progress := func(int, int) {}
	if isTerminal(stderr) {
		progress = func(done, total int) {
			fmt.Fprintf(stderr, "\rpage %d/%d", done, total)
			if done == total {
				fmt.Fprintln(stderr)
			}
		}
	}
	if _, err := convert.ToPDFText(ctx, be, doc, out, dpi, opt, rec, progress); err != nil {
		return fmt.Errorf("convert %s: %w (nothing written to %s)", in, err, out)
	}
	return nil
}

// checkDPI refuses a resolution the renderer would refuse, before any
// document is opened or a sandbox spawned.
func checkDPI(dpi float64) error {
	lim := render.DefaultLimits()
	if !(dpi >= lim.MinDPI && dpi <= lim.MaxDPI) {
		return usageError{msg: fmt.Sprintf("-dpi %g: must be between %g and %g", dpi, lim.MinDPI, lim.MaxDPI)}
	}
	return nil
}

// same reports whether a and b name the same file (or the same path).
func same(a, b string) bool {
	if ia, err := os.Stat(a); err == nil {
		if ib, err := os.Stat(b); err == nil {
			return os.SameFile(ia, ib)
		}
	}
	aa, err1 := filepath.Abs(a)
	bb, err2 := filepath.Abs(b)
	return err1 == nil && err2 == nil && aa == bb
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

// withoutDocumentErrors drops the log records that restate a document's
// error: its refusal, or its renderer killed. convert reports each
// document's error itself, once (its last line, or the batch's line and
// summary); logged as well, every error was printed twice. -v keeps them,
// with the rest of the renderers' lifecycle.
type withoutDocumentErrors struct{ slog.Handler }

func (h withoutDocumentErrors) Handle(ctx context.Context, r slog.Record) error {
	switch r.Message {
	case "document refused", "renderer killed", "renderer misbehaved, killed":
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h withoutDocumentErrors) WithAttrs(attrs []slog.Attr) slog.Handler {
	return withoutDocumentErrors{h.Handler.WithAttrs(attrs)}
}

func (h withoutDocumentErrors) WithGroup(name string) slog.Handler {
	return withoutDocumentErrors{h.Handler.WithGroup(name)}
}
