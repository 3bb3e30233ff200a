package seccompprofile_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	moby "github.com/moby/profiles/seccomp"

	"github.com/sandkit/sandkit/examples/docviewer/backend/sandboxed"
	"github.com/sandkit/sandkit/examples/docviewer/doclimits"

	"github.com/sandkit/sandkit/deploy/seccompprofile"
)

// execEnv makes the test binary a launcher: it loads the profile named by
// the variable as a seccomp filter and execs the rest of its arguments
// under it, as a container runtime does for a container's first process.
const execEnv = "SANDKIT_TEST_SECCOMP_PROFILE"

func TestMain(m *testing.M) {
	if path := os.Getenv(execEnv); path != "" {
		os.Exit(launch(path, os.Args[1:]))
	}
	os.Exit(m.Run())
}

func launch(path string, argv []string) int {
	runtime.LockOSThread()
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "launcher:", err); return 127 }
	b, err := os.ReadFile(path)
	if err != nil {
		return fail(err)
	}
	f, err := seccompprofile.Filter(b)
	if err != nil {
		return fail(err)
	}
	// Load sets no_new_privs and synchronizes the filter to every thread.
	if err := f.Load(); err != nil {
		return fail(err)
	}
	env := slices.DeleteFunc(os.Environ(), func(s string) bool { return strings.HasPrefix(s, execEnv+"=") })
	return fail(syscall.Exec(argv[0], argv, env))
}

func viewerPolicyAdditions(t *testing.T) []seccompprofile.Addition {
	t.Helper()
	adds, err := seccompprofile.Additions(sandboxed.Policy(doclimits.Default()), moby.DefaultProfile())
	if err != nil {
		t.Fatal(err)
	}
	return adds
}

// The additions are exactly the lockdown's: every name of the renderer's
// allowlist is already allowed by the default.
func TestAdditions(t *testing.T) {
	var got []string
	for _, a := range viewerPolicyAdditions(t) {
		got = append(got, a.Name)
		if a.Why == "" {
			t.Errorf("%s: no reason", a.Name)
		}
	}
	want := []string{"clone", "mount", "umount2", "pivot_root", "sethostname"}
	if !slices.Equal(got, want) {
		t.Errorf("additions = %v, want %v", got, want)
	}
}

// The calls the broker and the lockdown make before the renderer's filter
// that are NOT additions must be allowed by the default as they are: if
// the default ever drops one, this names it.
func TestDefaultAllowsTheRestOfTheLockdown(t *testing.T) {
	def := moby.DefaultProfile()
	for _, name := range []string{
		"prctl", "capset", "capget", "setrlimit", "prlimit64", "landlock_create_ruleset", "landlock_add_rule",
		"landlock_restrict_self", "seccomp", "close_range", "pidfd_open", "pidfd_send_signal", "waitid", "wait4",
		"chdir", "execve", "pipe2", "dup3", "ioctl", "tgkill", "rt_sigaction", "openat", "statfs",
	} {
		ok := false
		for _, s := range def.Syscalls {
			if s.Action == "SCMP_ACT_ALLOW" && len(s.Args) == 0 && s.Includes == nil && slices.Contains(s.Names, name) {
				ok = true
			}
		}
		if !ok {
			t.Errorf("the default profile does not allow %s unconditionally: add it to Lockdown with its reason", name)
		}
	}
}

func mustJSON(t *testing.T, p *moby.Seccomp) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(p); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func buildViewer(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "docviewer")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = filepath.Join("..", "..", "examples", "docviewer")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build docviewer: %v\n%s", err, out)
	}
	return bin
}

// convertUnder runs docviewer convert on a sample under profile and
// returns its exit code and output.
func convertUnder(t *testing.T, bin, dir, name string, profile []byte) (int, string, string) {
	t.Helper()
	prof := filepath.Join(dir, name+".json")
	if err := os.WriteFile(prof, profile, 0o644); err != nil {
		t.Fatal(err)
	}
	in, err := filepath.Abs(filepath.Join("..", "..", "examples", "docviewer", "testdata", "valid", "multipage.pdf"))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, name+".pdf")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], bin, "convert", in, out)
	cmd.Env = append(os.Environ(), execEnv+"="+prof)
	output, _ := cmd.CombinedOutput()
	return cmd.ProcessState.ExitCode(), string(output), out
}

// Each addition is needed: without it the document is not converted, and
// the error names the refused step.
func TestEachAdditionIsNeeded(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the document viewer")
	}
	dir := t.TempDir()
	bin := buildViewer(t, dir)
	adds := viewerPolicyAdditions(t)
	want := map[string]string{
		"clone":       "cannot create a user namespace (clone CLONE_NEWUSER|CLONE_NEWNS: operation not permitted)",
		"mount":       "lockdown failed: mount-namespace: make / rprivate: operation not permitted (EPERM)",
		"umount2":     "lockdown failed: mount-namespace: detach old root: operation not permitted (EPERM)",
		"pivot_root":  "lockdown failed: mount-namespace: pivot_root: operation not permitted (EPERM)",
		"sethostname": "lockdown failed: uts-namespace: sethostname: operation not permitted (EPERM)",
	}
	for i, a := range adds {
		t.Run("without-"+a.Name, func(t *testing.T) {
			without := slices.Delete(slices.Clone(adds), i, i+1)
			code, output, _ := convertUnder(t, bin, dir, "without-"+a.Name, mustJSON(t, seccompprofile.Profile(without)))
			w := want[a.Name]
			if w == "" {
				t.Fatalf("no expected refusal for %s: add it to the table", a.Name)
			}
			if code != 1 || !strings.Contains(output, w) {
				t.Fatalf("without %s: exit %d, want 1 with %q:\n%s", a.Name, code, w, output)
			}
		})
	}
}

// TestConvertUnderProfile runs the real `docviewer convert` under the
// generated profile, compiled to BPF and loaded the way a runtime loads
// it (no_new_privs, every thread), and under the runtime's default: the
// generated profile converts the document, the default refuses the
// renderer's namespaces.
func TestConvertUnderProfile(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the document viewer")
	}
	dir := t.TempDir()
	bin := buildViewer(t, dir)
	generated, err := seccompprofile.Generate(sandboxed.Policy(doclimits.Default()))
	if err != nil {
		t.Fatal(err)
	}
	committed, err := os.ReadFile(filepath.Join("..", "seccomp.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(generated, committed) {
		t.Fatal("deploy/seccomp.json is stale: run make seccomp-profile")
	}
	in, err := filepath.Abs(filepath.Join("..", "..", "examples", "docviewer", "testdata", "valid", "multipage.pdf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		profile []byte
		wantErr string // "" means the conversion must succeed
	}{
		{"generated", generated, ""},
		{"runtime-default", mustJSON(t, moby.DefaultProfile()), "operation not permitted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prof := filepath.Join(dir, tc.name+".json")
			if err := os.WriteFile(prof, tc.profile, 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, tc.name+".pdf")
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], bin, "convert", in, out)
			cmd.Env = append(os.Environ(), execEnv+"="+prof)
			stderr, err := cmd.CombinedOutput()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("convert under the generated profile: %v\n%s", err, stderr)
				}
				pdf, err := os.ReadFile(out)
				if err != nil || !bytes.HasPrefix(pdf, []byte("%PDF-")) {
					t.Fatalf("no PDF written (%v): %.40q", err, pdf)
				}
				return
			}
			if err == nil {
				t.Fatalf("convert succeeded under the runtime's default profile; want a refusal containing %q", tc.wantErr)
			}
			if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(stderr), tc.wantErr) {
				t.Fatalf("exit %d, want 1 with %q:\n%s", code, tc.wantErr, stderr)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("%s exists after a refused conversion (stat: %v)", out, err)
			}
			t.Logf("refused as expected:\n%s", stderr)
		})
	}
}
