// Package office converts Office documents (Word, Excel, PowerPoint,
// OpenDocument, RTF) to PDF with LibreOffice, run unmodified as a foreign
// program of the broker (broker.RunProgram): one sandbox per document,
// under Policy, with no network, no host filesystem beyond LibreOffice's
// own read-only files, and macros disabled by its profile.
//
// The PDF it returns is LibreOffice's output: as untrusted as the
// document it came from. The docviewer hands it, as bytes, to a MuPDF
// renderer like any other PDF; only pixels reach the broker.
package office

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/policy"
)

// Program is LibreOffice's binary, launched directly: soffice is a shell
// script (a foreign program cannot exec an interpreter, nor anything
// else), and oosplash would exec soffice.bin.
const Program = "/usr/lib/libreoffice/program/soffice.bin"

// InstallHint is what to run when LibreOffice is missing.
const InstallHint = "apt-get install libreoffice-core-nogui libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui"

// ErrNotInstalled is returned (wrapped, with InstallHint) when
// LibreOffice is not on this host.
var ErrNotInstalled = errors.New("LibreOffice is not installed")

// extensions are the formats converted, by file name: LibreOffice picks
// its import filter by content, the name is only the door in.
var extensions = []string{".docx", ".doc", ".xlsx", ".xls", ".pptx", ".ppt", ".odt", ".ods", ".odp", ".rtf"}

// Extensions returns the file name extensions handled here.
func Extensions() []string { return append([]string(nil), extensions...) }

// Is reports whether name is an Office document by its extension.
func Is(name string) bool {
	ext := strings.ToLower(filepath.Ext(name))
	for _, e := range extensions {
		if ext == e {
			return true
		}
	}
	return false
}

// Available says whether LibreOffice can be run: an error wrapping
// ErrNotInstalled that names the packages otherwise.
func Available() error { return available(Program) }

func available(program string) error {
	if _, err := os.Stat(program); err != nil {
		return fmt.Errorf("%w (%s missing): install it with: %s", ErrNotInstalled, program, InstallHint)
	}
	return nil
}

// Paths in the sandbox: everything LibreOffice writes lies in one tmpfs.
const (
	work    = "/tmp"
	profile = work + "/profile"
	outDir  = work
)

// Limits of one conversion.
const (
	// MaxPDF bounds the PDF LibreOffice may produce.
	MaxPDF = 256 << 20
	// tmpfsSize bounds everything LibreOffice writes: the document's
	// copy, its profile, temporary files, the PDF.
	tmpfsSize = 512 << 20
)

// Policy is the policy of one conversion: policy.Strict with what
// LibreOffice needs on top, each item explained.
func Policy() *policy.Policy {
	p := policy.Strict()
	fs := &p.Filesystem
	// The program, its libraries and its loader, executable and
	// read-only.
	fs.ExecutablePaths = []string{"/usr/lib/libreoffice", "/lib/x86_64-linux-gnu", "/lib64"}
	fs.ReadOnlyPaths = []string{
		"/etc/ld.so.cache",       // the loader finds libraries by name
		"/usr/share/libreoffice", // share/ symlinks point here
		"/etc/libreoffice",       // share/registry, psprint.conf
		"/etc/fonts",             // fontconfig's configuration
		"/usr/share/fonts",       // the fonts
		"/var/cache/fontconfig",  // its cache: no font scan at each start
	}
	fs.Tmpfs = []policy.Tmpfs{{Path: work, Size: tmpfsSize}}
	// NSS, with which LibreOffice writes PDF, seeds its generator from
	// /dev/urandom by name (not getrandom): without it the export fails
	// ("Error Area:Io Class:Write"). The one device, read-only.
	fs.Devices = []string{"/dev/urandom"}
	// The loader maps libraries executable (mmap PROT_EXEC of a file).
	p.Seccomp.DenyExecMemory = false
	// It stats its installation and fonts by path.
	p.Seccomp.AllowPathStat = true
	// Its single-instance pipe: it does not start without one.
	p.Seccomp.AllowUnixSockets = true
	// NSS keeps its certificate store in SQLite, in the tmpfs, which
	// locks and syncs it.
	p.Seccomp.AllowFileLocks = true
	p.Seccomp.Allow = append(p.Seccomp.Allow, lowriterSyscalls...)
	l := &p.Limits
	l.Memory = 4 << 30 // address space: LibreOffice reserves much
	l.OpenFiles = 1024
	l.Threads = 128
	l.CPUTime = 120 * time.Second
	l.Lifetime = 180 * time.Second
	l.FileSize = MaxPDF
	return p
}

// lowriterSyscalls are the calls LibreOffice makes beyond the base
// allowlist, found by learn mode (broker.Learner) over the six samples of
// testdata/office, and link: fontconfig's lock when it writes a cache of
// LibreOffice's own font directories, which a fresh host lacks and the
// host the samples were learned on had (TestWithoutFontCache). Each one
// reviewed (see SECURITY.md, "LibreOffice").
var lowriterSyscalls = []string{"readlink", "access", "arch_prctl", "statfs", "getcwd", "getdents64", "unlink", "rmdir", "mkdir",
	"faccessat2", "connect", "bind", "chmod", "listen", "accept", "sysinfo", "ftruncate", "fstatfs", "fadvise64", "rename", "chown", "fchown", "link"}

// Converter converts documents, one sandbox each.
type Converter struct {
	b        *broker.Broker
	buildid  []byte
	registry string
	log      *slog.Logger
}

// New starts the converter's broker. It fails with ErrNotInstalled when
// LibreOffice is missing.
func New(ctx context.Context, log *slog.Logger, maxConversions int) (*Converter, error) {
	return newConverter(ctx, log, maxConversions, Policy(), registry)
}

// newConverter is New with the policy and the profile's configuration
// given: tests change one of them to show what the other holds.
func newConverter(ctx context.Context, log *slog.Logger, maxConversions int, p *policy.Policy, registry string) (*Converter, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	id, err := buildID()
	if err != nil {
		return nil, err
	}
	b, err := broker.New(ctx, broker.Config{Policy: p, MaxRenderers: max(maxConversions, 1), Logger: log})
	if err != nil {
		return nil, fmt.Errorf("office: start sandbox: %w", err)
	}
	return &Converter{b: b, buildid: id, registry: registry, log: log}, nil
}

// Close ends every conversion.
func (c *Converter) Close() error { return c.b.Close() }

// Broker is the converter's broker: its events and renderers.
func (c *Converter) Broker() *broker.Broker { return c.b }

// buildID reads LibreOffice's build id from its versionrc. A profile
// whose user/extensions/buildid differs makes LibreOffice clean its
// extension cache and ask for a restart (exit 81), which only its
// launcher, oosplash, would do; a fresh profile carrying the id starts
// at once.
func buildID() ([]byte, error) {
	rc, err := os.ReadFile(filepath.Join(filepath.Dir(Program), "versionrc"))
	if err != nil {
		return nil, fmt.Errorf("office: %w", err)
	}
	for line := range strings.Lines(string(rc)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "buildid="); ok && v != "" {
			return []byte(v), nil
		}
	}
	return nil, errors.New("office: no buildid in LibreOffice's versionrc")
}

// registry is the profile's configuration: macros never run, links are
// never updated, nothing is loaded from the network; and a fixed locale,
// without which it asks the shell for the paper size (popen of
// paperconf: a fork and an exec, both refused).
const registry = `<?xml version="1.0" encoding="UTF-8"?>
<oor:items xmlns:oor="http://openoffice.org/2001/registry" xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<item oor:path="/org.openoffice.Office.Common/Security/Scripting"><prop oor:name="MacroSecurityLevel" oor:op="fuse"><value>3</value></prop></item>
<item oor:path="/org.openoffice.Office.Common/Security/Scripting"><prop oor:name="DisableMacrosExecution" oor:op="fuse"><value>true</value></prop></item>
<item oor:path="/org.openoffice.Office.Common/Security/Scripting"><prop oor:name="BlockUntrustedRefererLinks" oor:op="fuse"><value>true</value></prop></item>
<item oor:path="/org.openoffice.Office.Writer/Content/Update"><prop oor:name="Link" oor:op="fuse"><value>2</value></prop></item>
<item oor:path="/org.openoffice.Office.Calc/Content/Update"><prop oor:name="Link" oor:op="fuse"><value>2</value></prop></item>
<item oor:path="/org.openoffice.Office.Common/Misc"><prop oor:name="UseLocking" oor:op="fuse"><value>false</value></prop></item>
<item oor:path="/org.openoffice.Setup/L10N"><prop oor:name="ooSetupSystemLocale" oor:op="fuse"><value>en-US</value></prop></item>
</oor:items>
`

// memfd returns a sealed memfd holding data.
func memfd(name string, data []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("office: memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), name)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return nil, fmt.Errorf("office: memfd: %w", err)
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_WRITE|unix.F_SEAL_GROW|unix.F_SEAL_SHRINK|unix.F_SEAL_SEAL); err != nil {
		f.Close()
		return nil, fmt.Errorf("office: memfd: %w", err)
	}
	return f, nil
}

// Result is one conversion: the PDF's bytes (untrusted) and how
// LibreOffice's sandbox ended.
type Result struct {
	PDF    []byte
	Layers policy.Status
	Exit   *broker.ExitError
	Took   time.Duration
}

// ErrConversion is wrapped by the error of a document LibreOffice could
// not convert (it ended without a PDF, or was killed).
var ErrConversion = errors.New("LibreOffice could not convert the document")

// ToPDF converts the document doc (a regular file, read from offset 0),
// named name (its extension picks the input file's name), for origin.
func (c *Converter) ToPDF(ctx context.Context, origin string, doc *os.File, name string) (*Result, error) {
	ext := strings.ToLower(filepath.Ext(name))
	if !Is(name) {
		return nil, fmt.Errorf("office: %q is not an Office document", name)
	}
	buildid, err := memfd("buildid", c.buildid)
	if err != nil {
		return nil, err
	}
	defer buildid.Close()
	reg, err := memfd("registrymodifications.xcu", []byte(c.registry))
	if err != nil {
		return nil, err
	}
	defer reg.Close()
	in := work + "/document" + ext
	start := time.Now()
	res, err := c.b.RunProgram(ctx, origin, name, broker.Program{
		Path: Program,
		Args: []string{Program, "--headless", "--invisible", "--norestore", "--nolockcheck", "--nodefault", "--nologo",
			"--nofirststartwizard", "-env:UserInstallation=file://" + profile,
			"--convert-to", "pdf", "--outdir", outDir, in},
		Env:   []string{"LD_LIBRARY_PATH=" + filepath.Dir(Program), "LC_ALL=C", "HOME=" + work, "TMPDIR=" + work, "SAL_USE_VCLPLUGIN=svp"},
		Input: doc, InputPath: in,
		Files: []broker.File{
			{Path: profile + "/user/extensions/buildid", Content: buildid},
			{Path: profile + "/user/registrymodifications.xcu", Content: reg},
		},
		Output: broker.Output{Kind: broker.OutputFile, Path: outDir + "/document.pdf", Limit: MaxPDF},
	})
	if res == nil {
		return nil, fmt.Errorf("office: %w", err)
	}
	r := &Result{Layers: res.Layers, Exit: res.Exit, Took: time.Since(start)}
	if res.Exit != nil && res.Exit.Reason != broker.ExitClean {
		return r, fmt.Errorf("%w: %w", ErrConversion, res.Exit)
	}
	if errors.Is(err, unix.ENOENT) {
		// LibreOffice ends with status 0 when it cannot load a
		// document: its reason is only in its log.
		return r, fmt.Errorf("%w: it wrote no PDF (it could not load the document: damaged, or not of the format its name says)", ErrConversion)
	}
	if err != nil {
		return r, fmt.Errorf("%w: %w", ErrConversion, err)
	}
	if !bytes.HasPrefix(res.Output, []byte("%PDF-")) {
		return r, fmt.Errorf("%w: its output is not a PDF", ErrConversion)
	}
	r.PDF = res.Output
	return r, nil
}
