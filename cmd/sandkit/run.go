package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/learn"
	"github.com/sandkit/sandkit/policy"
)

// Exit statuses of sandkit run besides the program's own, after the
// conventions of env(1), timeout(1) and container runtimes: 125 and up
// for sandkit's own failures, 124 for a timeout, and just below them the
// other ends the sandbox imposes. Each is reported on stderr as well,
// since a program may exit with the same number itself.
const (
	exitViolation = 122 // the violation monitor killed it: a syscall outside the policy
	exitLimit     = 123 // a resource limit or a bound of the broker's ended it
	exitTimeout   = 124 // the wall-clock limit (-timeout, limits.lifetime_ms) ended it
	exitSandkit   = 125 // sandkit failed: usage, policy, a layer unavailable; nothing ran
	exitCannotRun = 126 // PROGRAM was found but cannot be run (not an ELF executable)
	exitNotFound  = 127 // PROGRAM was not found
)

// runOrigin names the one program sandkit run runs, in the broker's
// events and errors.
const runOrigin = "sandkit-run"

// defaultRunPolicy is the policy sandkit run applies without -policy:
// policy.Strict, plus exactly what a dynamically linked C program needs to
// start, and nothing it could be asked to do. See docs/policy.md.
func defaultRunPolicy() *policy.Policy {
	p := policy.Strict()
	// The dynamic loader maps the libraries executable.
	p.Seccomp.DenyExecMemory = false
	// The loader (Debian and Ubuntu on amd64; Fedora's /lib64), the
	// libraries, and the loader's cache, so that it opens them by name.
	for _, dir := range []string{"/lib64", "/lib/x86_64-linux-gnu"} {
		if _, err := os.Stat(dir); err == nil {
			p.Filesystem.ExecutablePaths = append(p.Filesystem.ExecutablePaths, dir)
		}
	}
	if _, err := os.Stat("/etc/ld.so.cache"); err == nil {
		p.Filesystem.ReadOnlyPaths = []string{"/etc/ld.so.cache"}
	}
	// glibc's start-up (arch_prctl; access to /etc/ld.so.preload, which
	// the empty root does not have), and what coreutils' file copies ask
	// of the descriptors they were given (fadvise64, copy_file_range):
	// none of them reaches anything but those descriptors.
	p.Seccomp.Allow = []string{"arch_prctl", "access", "fadvise64", "copy_file_range"}
	// The program's stdout may be a file the caller redirected it to:
	// RLIMIT_FSIZE applies to it.
	p.Limits.FileSize = 1 << 30
	return p
}

const runUsage = `  sandkit run [-policy FILE] [-v] [-allow-degraded LAYER,...] [-timeout DURATION] [-setenv NAME=VALUE]... [-learn FILE] -- PROGRAM [ARG...]
`

// runConfig is what sandkit run's flags ask for.
type runConfig struct {
	policyFile    string
	verbose       bool
	allowDegraded string
	timeout       time.Duration
	env           []string
	printPolicy   bool
	learnFile     string
}

// runCommand is sandkit run: PROGRAM under the policy with every layer,
// its stdin and stdout the caller's descriptors, its stderr forwarded by
// the broker, its exit status sandkit's.
func runCommand(ctx context.Context, args []string, stdin, stdout *os.File, stderr io.Writer) int {
	var rc runConfig
	fs := flag.NewFlagSet("sandkit run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, "usage:\n"+runUsage); fs.PrintDefaults() }
	fs.StringVar(&rc.policyFile, "policy", "", "the policy file (text format); without it, the default policy for a dynamically linked program (docs/policy.md)")
	fs.BoolVar(&rc.verbose, "v", false, "print the layers in force, the broker's logs and how the program ended")
	fs.StringVar(&rc.allowDegraded, "allow-degraded", "", "comma-separated layers to run without if the kernel lacks them (added to the policy's allow_degraded)")
	fs.DurationVar(&rc.timeout, "timeout", 0, "kill the program after this long (the policy's limits.lifetime_ms); 0 keeps the policy's")
	fs.Func("setenv", "add NAME=VALUE to the program's environment, which is otherwise empty (repeatable)", func(s string) error {
		if name, _, ok := strings.Cut(s, "="); !ok || name == "" || strings.ContainsRune(s, 0) {
			return fmt.Errorf("want NAME=VALUE, got %q", s)
		}
		rc.env = append(rc.env, s)
		return nil
	})
	fs.BoolVar(&rc.printPolicy, "print-policy", false, "print the policy that would apply, every field, and exit")
	fs.StringVar(&rc.learnFile, "learn", "", "learn mode, for trusted input only: every layer but seccomp enforcing; syscalls outside the allowlist are recorded and let through, and the policy that allows them is written to this file (check it with -policy)")
	if err := fs.Parse(args); err != nil {
		return exitSandkit
	}
	p, err := rc.policy()
	if err != nil {
		fmt.Fprintln(stderr, "sandkit run:", err)
		return exitSandkit
	}
	if rc.printPolicy {
		text, err := policy.Format(p)
		if err != nil {
			fmt.Fprintln(stderr, "sandkit run:", err)
			return exitSandkit
		}
		_, _ = stdout.Write(text)
		return 0
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "sandkit run: need PROGRAM")
		fs.Usage()
		return exitSandkit
	}
	argv := fs.Args()
	path, code, err := resolveProgram(argv[0])
	if err != nil {
		fmt.Fprintln(stderr, "sandkit run:", err)
		return code
	}
	prog := broker.Program{
		Path:   path,
		Args:   argv,
		Env:    rc.env,
		Input:  openOrNil(stdin),
		Output: broker.Output{Kind: broker.OutputDescriptor, FD: 1, File: stdout},
	}
	if rc.learnFile != "" {
		return learnProgram(ctx, rc, p, prog, stderr)
	}
	return runProgram(ctx, rc, p, prog, stderr, nil)
}

// learnProgram is sandkit run -learn: one run of the program in learn mode
// (package learn), the learned policy written to rc.learnFile. The
// program's exit status is sandkit's, as without -learn.
func learnProgram(ctx context.Context, rc runConfig, p *policy.Policy, prog broker.Program, stderr io.Writer) int {
	code := exitSandkit
	res, err := learn.Learn(ctx, p, func(ctx context.Context, configure func(*broker.Config)) error {
		code = runProgram(ctx, rc, p, prog, stderr, configure)
		return nil
	})
	if err != nil {
		fmt.Fprintln(stderr, "sandkit run -learn:", err)
		return exitSandkit
	}
	if err := os.WriteFile(rc.learnFile, res.Text, 0o644); err != nil {
		fmt.Fprintln(stderr, "sandkit run -learn:", err)
		return exitSandkit
	}
	fmt.Fprintf(stderr, "sandkit: learned %d syscalls beyond the base allowlist into %s: review it, then check it with sandkit run -policy %s\n", len(res.Uses)-len(res.Refused), rc.learnFile, rc.learnFile)
	for _, u := range res.Refused {
		fmt.Fprintf(stderr, "sandkit: %s (%d calls) was refused with EPERM: no policy allows it\n", u.Name, u.Count)
	}
	if res.Overflow+res.Withdrawn > 0 {
		fmt.Fprintf(stderr, "sandkit: WARNING: %d calls could not be named; the policy may lack a syscall: learn again\n", res.Overflow+res.Withdrawn)
	}
	return code
}

// policy reads the policy file, or takes the default, and applies the
// flags to it.
func (rc *runConfig) policy() (*policy.Policy, error) {
	p := defaultRunPolicy()
	if rc.policyFile != "" {
		f, err := os.Open(rc.policyFile)
		if err != nil {
			return nil, fmt.Errorf("policy: %w", err)
		}
		text, err := io.ReadAll(io.LimitReader(f, policy.MaxTextSize+1))
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("policy %s: %w", rc.policyFile, err)
		}
		if p, err = policy.Parse(text); err != nil {
			return nil, fmt.Errorf("policy %s: %w", rc.policyFile, err)
		}
	}
	if rc.timeout < 0 {
		return nil, fmt.Errorf("-timeout %v is negative", rc.timeout)
	}
	if rc.timeout > 0 {
		p.Limits.Lifetime = rc.timeout
	}
	if rc.allowDegraded != "" {
		for _, l := range strings.Split(rc.allowDegraded, ",") {
			if !p.Degradable(policy.Layer(l)) {
				p.AllowDegraded = append(p.AllowDegraded, policy.Layer(l))
			}
		}
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return p, nil
}

// resolveProgram finds PROGRAM as a shell would and checks that the
// launcher can exec it, returning the exit status to fail with otherwise.
func resolveProgram(name string) (string, int, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return "", exitNotFound, err
		}
		return "", exitCannotRun, err
	}
	if path, err = filepath.Abs(path); err != nil {
		return "", exitCannotRun, err
	}
	f, err := os.Open(path)
	if err != nil {
		return "", exitCannotRun, err
	}
	defer f.Close()
	magic := make([]byte, 4)
	if _, err := io.ReadFull(f, magic); err != nil || !bytes.Equal(magic, []byte("\x7fELF")) {
		why := "is not an ELF executable"
		if bytes.HasPrefix(magic, []byte("#!")) {
			// The launcher execs through a close-on-exec descriptor the
			// interpreter could not open.
			why = "is a script: run its interpreter, with the script in the policy's read_only_paths"
		}
		return "", exitCannotRun, fmt.Errorf("%s %s", path, why)
	}
	return path, 0, nil
}

// openOrNil returns f if its descriptor is open, nil (the program's
// stdin left closed) if the caller's is closed.
func openOrNil(f *os.File) *os.File {
	if f == nil {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil
	}
	return f
}

// runProgram runs prog under p in a broker of its own and returns the
// exit status sandkit run ends with.
func runProgram(ctx context.Context, rc runConfig, p *policy.Policy, prog broker.Program, stderr io.Writer, configure func(*broker.Config)) int {
	out := &lockedWriter{w: stderr}
	cfg := broker.Config{
		Policy:       p,
		MaxRenderers: 1,
		Logger:       slog.New(&stderrHandler{w: out, verbose: rc.verbose}),
		OnEvent: func(e broker.Event) {
			if e.Kind != broker.EventReady {
				return
			}
			if rc.learnFile != "" {
				out.printf("sandkit: WARNING: learn mode: seccomp records instead of enforcing; trusted input only\n")
			} else if degraded := inactive(p, e.Layers); len(degraded) > 0 {
				out.printf("sandkit: WARNING: running without %s (allowed degraded)\n", strings.Join(degraded, ", "))
			}
			if rc.verbose {
				out.printf("sandkit: layers: %s\n", e.Layers)
			}
		},
	}
	if configure != nil {
		configure(&cfg)
	}
	b, err := broker.New(ctx, cfg)
	if err != nil {
		out.printf("sandkit run: %v\n", err)
		return exitSandkit
	}
	defer b.Close()
	res, err := b.RunProgram(ctx, runOrigin, prog.Path, prog)
	if err != nil {
		// A namespace cannot be degraded, only turned off in the policy
		// (the error says how).
		var ue *policy.UnavailableError
		if errors.As(err, &ue) && !strings.HasSuffix(string(ue.Layer), "-namespace") {
			out.printf("sandkit run: %v\n  (-allow-degraded %s does that from the command line)\n", err, ue.Layer)
		} else {
			out.printf("sandkit run: %v\n", err)
		}
		return exitSandkit
	}
	code, report := exitStatus(ctx, res)
	if report != "" {
		out.printf("sandkit: %s (pid %d) %s\n", prog.Args[0], res.PID, report)
	} else if rc.verbose {
		out.printf("sandkit: %s (pid %d) ended: %s, after %v\n", prog.Args[0], res.PID, res.Exit.Reason, res.Exit.Lifetime.Round(time.Millisecond))
	}
	return code
}

// exitStatus maps how the program ended to sandkit run's exit status, and
// says why when the sandbox or a signal ended it, "" when the program
// exited.
func exitStatus(ctx context.Context, res *broker.Result) (int, string) {
	e := res.Exit
	switch e.Reason {
	case broker.ExitClean:
		return 0, ""
	case broker.ExitCrash:
		// Its own exit status or signal, as a shell reports them.
		if res.ExitCode >= 0 {
			return res.ExitCode, ""
		}
		if res.Signal != 0 {
			return 128 + int(res.Signal), "ended by signal: " + res.Signal.String()
		}
	case broker.ExitLockdownFailed:
		// The launcher's failures are RunProgram's errors, so an exit
		// status of 125 after exec, which the broker reads as lockdown
		// failed, is the program's own. Killed, it is the broker's
		// verdict (a listener not received): sandkit's failure.
		if res.ExitCode >= 0 {
			return res.ExitCode, ""
		}
	case broker.ExitViolation:
		return exitViolation, "killed: " + e.Description()
	case broker.ExitCPULimit, broker.ExitMemoryLimit, broker.ExitThreadLimit, broker.ExitBrokerLimit:
		return exitLimit, "killed: " + e.Description()
	case broker.ExitTimeout:
		return exitTimeout, "killed: " + e.Description()
	case broker.ExitReleased:
		// sandkit was told to stop: a signal's conventional status.
		var sig signalCause
		if errors.As(context.Cause(ctx), &sig) {
			return 128 + int(sig.Signal), "killed: sandkit received signal: " + sig.String()
		}
	}
	return exitSandkit, "killed: " + e.Description()
}

// inactive lists the layers p requests that status says are not in force.
func inactive(p *policy.Policy, status policy.Status) []string {
	var out []string
	for _, l := range p.Requested() {
		if !status.Active(l) {
			out = append(out, string(l))
		}
	}
	return out
}

// signalCause is the cause of the context sandkit run's signals cancel.
type signalCause struct{ syscall.Signal }

func (s signalCause) Error() string { return "received " + s.String() }

// withSignals returns ctx cancelled, with a signalCause, by SIGINT or
// SIGTERM.
func withSignals(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-ch:
			cancel(signalCause{s.(syscall.Signal)})
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel(nil)
	}
}

// stderrHandler is the broker's logger: it writes the program's stderr
// lines, which the broker reads from its pipe and logs as "renderer
// log", to sandkit's stderr as they come; with -v, the broker's own logs
// too.
type stderrHandler struct {
	w       *lockedWriter
	verbose bool
}

func (h *stderrHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *stderrHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "renderer log" {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "line" {
				h.w.printf("%s\n", a.Value.String())
				return false
			}
			return true
		})
		return nil
	}
	if !h.verbose || r.Level < slog.LevelInfo {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "sandkit: broker: %s", r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	h.w.printf("%s\n", b.String())
	return nil
}

func (h *stderrHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *stderrHandler) WithGroup(string) slog.Handler      { return h }

// lockedWriter serialises the lines of the broker's goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format, args...)
}
