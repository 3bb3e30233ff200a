// Package ocr recognises the words of a page with Tesseract, run as a
// foreign program (broker.RunProgram) in a sandbox of its own, on the
// pixels a renderer already drew and the broker already checked. It never
// sees the document: only a grayscale image of one page, on its stdin,
// and it answers with word boxes (TSV) on a bounded pipe, parsed as
// hostile input (ParseTSV).
package ocr

import (
	"context"
	"errors"
	"fmt"
	"image"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/policy"

	"github.com/sandkit/sandkit/examples/docviewer/pdfout"
)

// DefaultPath is Debian's Tesseract.
const DefaultPath = "/usr/bin/tesseract"

// tessdataGlob finds Debian's language data (tesseract-ocr-LANG packages
// install /usr/share/tesseract-ocr/5/tessdata/LANG.traineddata).
const tessdataGlob = "/usr/share/tesseract-ocr/*/tessdata"

// InstallHint says what to install for lang.
func InstallHint(lang string) string {
	return fmt.Sprintf("install Tesseract and its %s language data: apt-get install tesseract-ocr tesseract-ocr-%s", lang, lang)
}

// ErrUnavailable is wrapped by Check's errors: OCR for that language
// cannot run on this machine.
var ErrUnavailable = errors.New("ocr: unavailable")

// langRe is Tesseract's language names (eng, chi_sim, deu_latf, osd)
// joined by '+': never a path.
var langRe = regexp.MustCompile(`^[a-z][a-z_]{1,15}(\+[a-z][a-z_]{1,15}){0,3}$`)

// Check finds Tesseract and the data of lang (e.g. "eng", "eng+deu"),
// before any document is opened. It returns the tessdata directory.
func Check(path, lang string) (tessdata string, err error) {
	if !langRe.MatchString(lang) {
		return "", fmt.Errorf("%w: -ocr %q: not a Tesseract language name (eng, deu, chi_sim, eng+deu)", ErrUnavailable, lang)
	}
	if fi, err := os.Stat(path); err != nil || !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%w: %s not found: %s", ErrUnavailable, path, InstallHint(lang))
	}
	dirs, _ := filepath.Glob(tessdataGlob)
	for i, l := range splitLang(lang) {
		found := false
		for _, d := range dirs {
			if fi, err := os.Stat(filepath.Join(d, l+".traineddata")); err == nil && fi.Mode().IsRegular() {
				if i == 0 {
					tessdata = d
				}
				found = d == tessdata
			}
		}
		if !found {
			return "", fmt.Errorf("%w: no language data for %s in %s: apt-get install tesseract-ocr-%s", ErrUnavailable, l, tessdataGlob, l)
		}
	}
	return tessdata, nil
}

func splitLang(lang string) []string {
	var out []string
	start := 0
	for i := range len(lang) + 1 {
		if i == len(lang) || lang[i] == '+' {
			out = append(out, lang[start:i])
			start = i + 1
		}
	}
	return out
}

// Policy is what Tesseract may do: policy.Strict with its binary, its
// libraries and the language data bound read-only (nothing writable), one
// thread (OMP_THREAD_LIMIT=1 in its environment), the syscalls its
// start-up and glibc ask for, and room for the page image and its
// models.
//
// DenyExecMemory is off: the dynamic loader maps libraries executable
// after the filter is in force (the exec happens under it).
func Policy(tessdata string) *policy.Policy {
	p := policy.Strict()
	p.Seccomp.DenyExecMemory = false
	p.Seccomp.Allow = append(p.Seccomp.Allow, Syscalls...)
	p.Filesystem.ExecutablePaths = []string{"/lib64", "/lib/x86_64-linux-gnu"}
	p.Filesystem.ReadOnlyPaths = []string{"/etc/ld.so.cache", tessdata}
	p.Limits.Memory = 1 << 30
	p.Limits.CPUTime = 2 * time.Minute
	p.Limits.Threads = 16
	p.Limits.Lifetime = 2 * time.Minute
	return p
}

// Syscalls are the syscalls Tesseract 5.3 (Debian 12) needs beyond
// policy.BaseSyscalls, each found by running it under the violation
// monitor, which names it, and each checked to be needed by removing it:
// arch_prctl (the dynamic loader sets up thread-local storage), access
// (the loader looks for /etc/ld.so.preload), sysinfo (glibc's sysconf
// for the memory size, before the page is read).
var Syscalls = []string{"arch_prctl", "access", "sysinfo"}

// Env is Tesseract's environment: one OpenMP thread (pages run in
// parallel instead), its data directory, and GnuTLS (linked in through
// libarchive and libcurl, never used) told not to read its system
// configuration at load time: a stat by path, which the policy refuses.
func Env(tessdata string) []string {
	return []string{"OMP_THREAD_LIMIT=1", "TESSDATA_PREFIX=" + tessdata, "GNUTLS_NO_IMPLICIT_INIT=1"}
}

// Config configures New.
type Config struct {
	// Lang is the Tesseract language, e.g. "eng"; required.
	Lang string
	// Path is Tesseract; empty means DefaultPath.
	Path string
	// Policy overrides Policy(tessdata) (tests).
	Policy *policy.Policy
	// MaxRunning bounds Tesseracts running at once; zero means 2.
	MaxRunning int
	Logger     *slog.Logger
}

// Engine runs Tesseract on page images, each page in a sandbox of its own.
// It is safe for concurrent use.
type Engine struct {
	b        *broker.Broker
	path     string
	lang     string
	tessdata string
	log      *slog.Logger
}

// New checks Tesseract and the language (Check) and starts the broker
// that runs it.
func New(ctx context.Context, cfg Config) (*Engine, error) {
	if cfg.Path == "" {
		cfg.Path = DefaultPath
	}
	tessdata, err := Check(cfg.Path, cfg.Lang)
	if err != nil {
		return nil, err
	}
	p := cfg.Policy
	if p == nil {
		p = Policy(tessdata)
	}
	if cfg.MaxRunning == 0 {
		cfg.MaxRunning = 2
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	b, err := broker.New(ctx, broker.Config{Policy: p, MaxRenderers: cfg.MaxRunning, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("ocr: start sandbox: %w", err)
	}
	return &Engine{b: b, path: cfg.Path, lang: cfg.Lang, tessdata: tessdata, log: log}, nil
}

// Close ends every Tesseract still running.
func (e *Engine) Close() error { return e.b.Close() }

// Policy returns the policy Tesseract runs under.
func (e *Engine) Policy() *policy.Policy { return e.b.Policy() }

// Page is the outcome of recognising one page.
type Page struct {
	Words  []pdfout.Word
	PID    int
	Layers policy.Status // the isolation layers Tesseract ran under
}

// Recognize runs Tesseract on img, the pixels of page (0-based) of doc
// (both only name the run in the broker's events and logs). A Tesseract
// that breaks its policy, a limit or the output format is an error.
func (e *Engine) Recognize(ctx context.Context, doc string, page int, img *image.RGBA) (*Page, error) {
	in, err := pgmMemfd(img)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	res, err := e.b.RunProgram(ctx, "ocr", fmt.Sprintf("%s#%d", doc, page+1), broker.Program{
		Path: e.path,
		// "stdin"/"stdout": the image on fd 0, the TSV on fd 1; the
		// tsv config file is in the language data directory.
		Args:   []string{"tesseract", "stdin", "stdout", "-l", e.lang, "tsv"},
		Env:    Env(e.tessdata),
		Input:  in,
		Output: broker.Output{Kind: broker.OutputPipe, FD: 1, Limit: MaxOutput},
	})
	if err != nil {
		return nil, fmt.Errorf("ocr: %w", err)
	}
	if res.Exit.Reason != broker.ExitClean {
		return nil, fmt.Errorf("ocr: tesseract: %w", res.Exit)
	}
	words, err := ParseTSV(res.Output, img.Bounds())
	if err != nil {
		return nil, err
	}
	e.log.Debug("ocr", "document", doc, "page", page+1, "pid", res.PID, "words", len(words), "layers", res.Layers.String())
	return &Page{Words: words, PID: res.PID, Layers: res.Layers}, nil
}

// Words is Recognize's words, for convert.ToPDFText.
func (e *Engine) Words(ctx context.Context, doc string, page int, img *image.RGBA) ([]pdfout.Word, error) {
	pg, err := e.Recognize(ctx, doc, page, img)
	if err != nil {
		return nil, err
	}
	return pg.Words, nil
}

// pgmMemfd returns img as a binary PGM (8-bit gray, ITU-R 601 luma) in a
// sealed memfd positioned at 0: Tesseract works on gray anyway, and a
// PGM needs no encoder a page could exploit.
func pgmMemfd(img *image.RGBA) (*os.File, error) {
	fd, err := unix.MemfdCreate("ocr-page", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("ocr: memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "ocr-page")
	b := img.Bounds()
	hdr := fmt.Sprintf("P5\n%d %d\n255\n", b.Dx(), b.Dy())
	buf := make([]byte, len(hdr)+b.Dx()*b.Dy())
	copy(buf, hdr)
	o := len(hdr)
	for y := b.Min.Y; y < b.Max.Y; y++ {
		row := img.Pix[img.PixOffset(b.Min.X, y):]
		for x := 0; x < b.Dx(); x++ {
			r, g, bl, a := int(row[4*x]), int(row[4*x+1]), int(row[4*x+2]), int(row[4*x+3])
			// Composite the premultiplied pixel onto white, as the
			// safe PDF shows it.
			l := (299*r + 587*g + 114*bl) / 1000
			buf[o] = byte(min(l+255-a, 255))
			o++
		}
	}
	if _, err = f.Write(buf); err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err == nil {
		_, err = unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_WRITE|unix.F_SEAL_GROW|unix.F_SEAL_SHRINK|unix.F_SEAL_SEAL)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("ocr: page image: %w", err)
	}
	return f, nil
}
