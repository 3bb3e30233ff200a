package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/policy"
)

// asMainEnv makes the test binary run main: sandkit itself, a real
// process with real descriptors.
const asMainEnv = "SANDKIT_TEST_AS_MAIN"

// buildRunProg compiles testdata/runprog.c, dynamically linked like most
// programs, into a directory the program's id may search: a root
// broker's programs run as ids of their own.
func buildRunProg(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		require.NoError(t, os.Chmod(d, 0o755))
	}
	prog := filepath.Join(dir, "runprog")
	out, err := exec.Command("gcc", "-O1", "-Wall", "-o", prog, "testdata/runprog.c").CombinedOutput()
	require.NoError(t, err, "gcc: %s", out)
	require.NoError(t, os.Chmod(prog, 0o755))
	return prog
}

// sandkitCmd is `sandkit run ARGS...` as a process of its own.
func sandkitCmd(t *testing.T, ctx context.Context, args ...string) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.CommandContext(ctx, self, append([]string{"run"}, args...)...)
	cmd.Env = append(os.Environ(), asMainEnv+"=1")
	return cmd
}

type runOutcome struct {
	stdout, stderr string
	code           int
}

// sandkitRun runs `sandkit run ARGS...` with stdin and waits for it.
func sandkitRun(t *testing.T, stdin string, args ...string) runOutcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := sandkitCmd(t, ctx, args...)
	var stdout, stderr strings.Builder
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(stdin), &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		require.NoError(t, err)
	}
	return runOutcome{stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()}
}

// writePolicy writes a policy file for the test.
func writePolicy(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "test.policy")
	require.NoError(t, os.WriteFile(path, []byte(text), 0o644))
	return path
}

// loaderPolicy is what the default policy gives a dynamic program, for
// policy files, which start from policy.Strict.
const loaderPolicy = `filesystem {
  read_only_paths: "/etc/ld.so.cache"
  executable_paths: "/lib64"
  executable_paths: "/lib/x86_64-linux-gnu"
}
seccomp {
  deny_exec_memory: false
  allow: "arch_prctl"
  allow: "access"
`

// TestRun runs programs that know nothing of sandkit under sandkit run,
// as a shell would: stdin and stdout are sandkit's own descriptors, the
// program's exit status is sandkit's, and what the sandbox ended is said
// on stderr with its own status.
func TestRun(t *testing.T) {
	prog := buildRunProg(t)
	// Next to the program on the host, not bound.
	secret := filepath.Join(filepath.Dir(prog), "secret")
	require.NoError(t, os.WriteFile(secret, []byte("secret\n"), 0o644))
	cpu := writePolicy(t, loaderPolicy+"}\nlimits { cpu_seconds: 1 }\n")
	ls := writePolicy(t, loaderPolicy+`  allow: "statfs"
  allow: "statx"
  allow: "getdents64"
}
`)
	// A directory bound read-only and a tmpfs, from the policy file.
	data := t.TempDir()
	require.NoError(t, os.Chmod(data, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(data, "file"), []byte("bound\n"), 0o666))
	require.NoError(t, os.Chmod(filepath.Join(data, "file"), 0o666)) // the refusal is the mount's, not the mode's
	mounts := writePolicy(t, strings.Replace(loaderPolicy, "filesystem {\n", "filesystem {\n  read_only_paths: \""+data+"\"\n  tmpfs { path: \"/scratch\" size_bytes: 65536 }\n", 1)+
		// cat's, and a file size limit: policy.Strict's is 0, under which
		// even the tmpfs refuses a byte (EFBIG).
		"  allow: \"fadvise64\"\n}\nlimits { file_size_bytes: 65536 }\n")
	pid := `\(pid \d+\)`
	for _, tc := range []struct {
		name   string
		args   []string
		stdin  string
		code   int
		stdout string
		stderr string // a regular expression of the whole of stderr
	}{
		{"cat copies stdin to stdout", []string{"--", "/bin/cat"}, "hello\nsandbox\n", 0, "hello\nsandbox\n", ``},
		{"exit status", []string{"--", prog, "exit", "3"}, "", 3, "", ``},
		// 125 is also sandkit's own failure status; the program's own
		// passes through and sandkit says nothing.
		{"exit status 125", []string{"--", prog, "exit", "125"}, "", 125, "", ``},
		{"signal", []string{"--", prog, "segv"}, "", 128 + int(syscall.SIGSEGV), "",
			`sandkit: ` + prog + ` ` + pid + ` ended by signal: segmentation fault\n`},
		{"stderr forwarded", []string{"--", prog, "stderr", "to the caller's stderr"}, "", 0, "", `to the caller's stderr\n`},
		{"empty environment, -setenv", []string{"-setenv", "LANG=C.UTF-8", "--", prog, "env"}, "", 0, "LANG=C.UTF-8\n", ``},
		{"violation", []string{"--", prog, "socket"}, "", exitViolation, "",
			`sandkit: ` + prog + ` ` + pid + ` killed: sandbox violation socket\(0x2, 0x1, 0x0(, 0x[0-9a-f]+)*\): disallowed by the seccomp policy\n`},
		{"timeout", []string{"-timeout", "300ms", "--", prog, "spin"}, "", exitTimeout, "",
			`sandkit: ` + prog + ` ` + pid + ` killed: wall-clock timeout: lifetime limit 300ms\n`},
		{"cpu limit", []string{"-policy", cpu, "--", prog, "spin"}, "", exitLimit, "",
			`sandkit: ` + prog + ` ` + pid + ` killed: cpu limit: used \S+ of CPU, limit 1s\n`},
		// The host's files are not there: not /etc, not a file next to
		// the program (which is bound alone), not /home.
		{"no /etc/passwd", []string{"--", "/bin/cat", "/etc/passwd"}, "", 1, "", `/bin/cat: /etc/passwd: No such file or directory\n`},
		{"no file next to the program", []string{"--", "/bin/cat", secret}, "", 1, "", `/bin/cat: ` + secret + `: No such file or directory\n`},
		{"no /home", []string{"-policy", ls, "--", "/bin/ls", "/home"}, "", 2, "", `/bin/ls: cannot access '/home': No such file or directory\n`},
		{"read-only bind", []string{"-policy", mounts, "--", "/bin/cat", filepath.Join(data, "file")}, "", 0, "bound\n", ``},
		{"writes: the tmpfs only", []string{"-policy", mounts, "--", prog, "write", "/scratch/new", filepath.Join(data, "file"), filepath.Join(data, "new"), "/new"}, "", 0,
			fmt.Sprintf("write /scratch/new 0\nwrite %s/file %d\nwrite %s/new %d\nwrite /new %d\n", data, syscall.EROFS, data, syscall.EROFS, syscall.EROFS), ``},
		{"-v", []string{"-v", "--", prog, "exit", "0"}, "", 0, "",
			`sandkit: layers: \+user-namespace \+mount-namespace \+pid-namespace \+net-namespace \+ipc-namespace \+uts-namespace \+cgroup-namespace \+rlimits.* \+landlock-filesystem.* \+seccomp\(\d+ BPF instructions\) \+seccomp-monitor\(.*\)\n` +
				`sandkit: ` + prog + ` ` + pid + ` ended: clean exit, after \S+\n`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := sandkitRun(t, tc.stdin, tc.args...)
			assert.Equal(t, tc.code, got.code, "stderr: %s", got.stderr)
			assert.Equal(t, tc.stdout, got.stdout)
			assert.Regexp(t, "^"+tc.stderr+"$", got.stderr)
		})
	}
}

// TestRunRefused: what sandkit run cannot run is refused with a clear
// error before anything starts: /bin/cat would copy the input.
func TestRunRefused(t *testing.T) {
	script := filepath.Join(t.TempDir(), "script")
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\necho hi\n"), 0o755))
	escape := writePolicy(t, `seccomp { allow: "ptrace" }`)
	garbled := writePolicy(t, `seccomp { allow: `)
	missingBind := writePolicy(t, `filesystem { read_only_paths: "/nonexistent-sandkit-path" }`)
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"missing policy file", []string{"-policy", "/nonexistent/x.policy", "--", "/bin/cat"}, exitSandkit,
			"sandkit run: policy: open /nonexistent/x.policy: no such file or directory\n"},
		{"policy allowing escape surface", []string{"-policy", escape, "--", "/bin/cat"}, exitSandkit,
			"sandkit run: policy " + escape + ": invalid policy: seccomp: \"ptrace\" is escape surface and cannot be allowed\n"},
		{"policy not in the text format", []string{"-policy", garbled, "--", "/bin/cat"}, exitSandkit,
			"sandkit run: policy " + garbled + ": invalid policy: "},
		{"unknown layer to degrade", []string{"-allow-degraded", "landlock", "--", "/bin/cat"}, exitSandkit,
			"sandkit run: policy: invalid policy: allow_degraded: unknown layer \"landlock\"\n"},
		{"namespace to degrade", []string{"-allow-degraded", "net-namespace", "--", "/bin/cat"}, exitSandkit,
			"sandkit run: policy: invalid policy: allow_degraded: namespace \"net-namespace\" cannot be degraded at run time; disable it in the policy instead\n"},
		// A layer that cannot be applied stops the launch (fail
		// closed), naming the layer.
		{"bind that cannot be made", []string{"-policy", missingBind, "--", "/bin/cat"}, exitSandkit,
			"sandkit run: broker: start renderer: renderer child: foreign program launcher: isolation layer mount-namespace unavailable: mount /nonexistent-sandkit-path: no such file or directory"},
		{"bad -setenv", []string{"-setenv", "NOVALUE", "--", "/bin/cat"}, exitSandkit, `invalid value "NOVALUE" for flag -setenv: want NAME=VALUE, got "NOVALUE"`},
		{"no program", []string{"-v"}, exitSandkit, "sandkit run: need PROGRAM\n"},
		{"program not found", []string{"--", "sandkit-no-such-program"}, exitNotFound,
			"sandkit run: exec: \"sandkit-no-such-program\": executable file not found in $PATH\n"},
		{"script", []string{"--", script}, exitCannotRun,
			"sandkit run: " + script + " is a script: run its interpreter, with the script in the policy's read_only_paths\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := sandkitRun(t, "input\n", append([]string{"-v"}, tc.args...)...)
			assert.Equal(t, tc.code, got.code, "stderr: %s", got.stderr)
			assert.True(t, strings.HasPrefix(got.stderr, tc.stderr), "stderr %q\nwant prefix %q", got.stderr, tc.stderr)
			assert.NotContains(t, got.stderr, "layers:", "nothing started")
			assert.Empty(t, got.stdout, "nothing started")
		})
	}
}

// TestRunSignals: SIGINT or SIGTERM to sandkit kills the program (its
// context ends) and sandkit exits as the signal's conventional status;
// nothing holds the program's stdin afterwards.
func TestRunSignals(t *testing.T) {
	prog := buildRunProg(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			in, w, err := os.Pipe()
			require.NoError(t, err)
			defer w.Close()
			cmd := sandkitCmd(t, ctx, "-v", "--", prog, "wait")
			cmd.Stdin = in
			stderr, err := cmd.StderrPipe()
			require.NoError(t, err)
			require.NoError(t, cmd.Start())
			in.Close()
			// The program runs once the layers are reported.
			lines := bufio.NewScanner(stderr)
			require.True(t, lines.Scan(), "no layers line: %v", lines.Err())
			require.True(t, strings.HasPrefix(lines.Text(), "sandkit: layers: "), lines.Text())
			require.NoError(t, cmd.Process.Signal(sig))
			rest, err := io.ReadAll(stderr)
			require.NoError(t, err)
			err = cmd.Wait()
			var exit *exec.ExitError
			require.ErrorAs(t, err, &exit)
			assert.Equal(t, 128+int(sig), exit.ExitCode())
			assert.Regexp(t, fmt.Sprintf(`^sandkit: %s \(pid \d+\) killed: sandkit received signal: %s\n$`, prog, sig), string(rest))
			_, err = w.Write([]byte{1})
			assert.ErrorIs(t, err, syscall.EPIPE, "the program outlived sandkit, holding its stdin")
		})
	}
}

// TestExitStatus maps every way a program can end, including those the
// process tests cannot provoke on demand, to sandkit run's status.
func TestExitStatus(t *testing.T) {
	sigterm, cancel := context.WithCancelCause(context.Background())
	cancel(signalCause{syscall.SIGTERM})
	for _, tc := range []struct {
		ctx    context.Context
		exit   broker.ExitError
		code   int
		sig    syscall.Signal
		want   int
		report string
	}{
		{context.Background(), broker.ExitError{Reason: broker.ExitClean}, 0, 0, 0, ""},
		{context.Background(), broker.ExitError{Reason: broker.ExitCrash, Detail: "exit status 9"}, 9, 0, 9, ""},
		{context.Background(), broker.ExitError{Reason: broker.ExitCrash, Detail: "signal aborted"}, -1, syscall.SIGABRT, 134, "ended by signal: aborted"},
		// The launcher's failures are RunProgram's errors: 125 after exec
		// is the program's own.
		{context.Background(), broker.ExitError{Reason: broker.ExitLockdownFailed}, 125, 0, 125, ""},
		{context.Background(), broker.ExitError{Reason: broker.ExitLockdownFailed, Detail: "seccomp listener not received"}, -1, syscall.SIGKILL, exitSandkit,
			"killed: lockdown failed: seccomp listener not received"},
		{context.Background(), broker.ExitError{Reason: broker.ExitViolation, Syscall: "ptrace", Args: []uint64{0, 1}, Detail: "disallowed by the seccomp policy"}, -1, syscall.SIGKILL, exitViolation,
			"killed: sandbox violation ptrace(0x0, 0x1): disallowed by the seccomp policy"},
		{context.Background(), broker.ExitError{Reason: broker.ExitViolation, Detail: "disallowed syscall (SIGSYS; the violation monitor is off)"}, -1, syscall.SIGSYS, exitViolation,
			"killed: sandbox violation: disallowed syscall (SIGSYS; the violation monitor is off)"},
		{context.Background(), broker.ExitError{Reason: broker.ExitMemoryLimit, Detail: "cgroup memory.max reached"}, -1, syscall.SIGKILL, exitLimit, "killed: memory limit: cgroup memory.max reached"},
		{context.Background(), broker.ExitError{Reason: broker.ExitThreadLimit}, 2, 0, exitLimit, "killed: thread limit"},
		{context.Background(), broker.ExitError{Reason: broker.ExitBrokerLimit, Detail: "log output over 1024 KiB at once or 256 KiB/s sustained"}, -1, syscall.SIGKILL, exitLimit,
			"killed: broker limit: log output over 1024 KiB at once or 256 KiB/s sustained"},
		{context.Background(), broker.ExitError{Reason: broker.ExitTimeout, Detail: "lifetime limit 1s"}, -1, syscall.SIGKILL, exitTimeout, "killed: wall-clock timeout: lifetime limit 1s"},
		{sigterm, broker.ExitError{Reason: broker.ExitReleased}, -1, syscall.SIGKILL, 143, "killed: sandkit received signal: terminated"},
		// Released or shut down for anything but a signal: sandkit's own
		// failure, said.
		{context.Background(), broker.ExitError{Reason: broker.ExitShutdown}, -1, syscall.SIGKILL, exitSandkit, "killed: broker shutdown"},
	} {
		t.Run(string(tc.exit.Reason)+"/"+tc.report, func(t *testing.T) {
			code, report := exitStatus(tc.ctx, &broker.Result{Exit: &tc.exit, ExitCode: tc.code, Signal: tc.sig})
			assert.Equal(t, tc.want, code)
			assert.Equal(t, tc.report, report)
		})
	}
}

// TestInactive names the requested layers a status says are not in
// force: the ones sandkit run warns about when they were allowed
// degraded.
func TestInactive(t *testing.T) {
	p := policy.Strict()
	var status policy.Status
	for _, l := range p.Requested() {
		status = append(status, policy.LayerStatus{Layer: l, Active: l != policy.LayerLandlockNet && l != policy.LayerSeccompMonitor})
	}
	assert.Equal(t, []string{"landlock-network", "seccomp-monitor"}, inactive(p, status))
	assert.Equal(t, []string{"user-namespace"}, inactive(p, status[1:])[:1], "a layer missing from the status is not in force")
}

// TestRunLearn: sandkit run -learn lets ls list a bound directory, which
// the base policy would kill it for (getdents64 and the like are outside
// the allowlist), and writes the policy that allows what it used: the
// base's binds plus the syscalls. Under that policy ls runs again,
// enforcing, with the same output; under the base it is killed.
func TestRunLearn(t *testing.T) {
	// Searchable by the program's id, as buildRunProg's directory.
	data := t.TempDir()
	for _, d := range []string{data, filepath.Dir(data)} {
		require.NoError(t, os.Chmod(d, 0o755))
	}
	for _, name := range []string{"a", "b"} {
		require.NoError(t, os.WriteFile(filepath.Join(data, name), nil, 0o644))
	}
	base := writePolicy(t, strings.Replace(loaderPolicy, "filesystem {\n", "filesystem {\n  read_only_paths: \""+data+"\"\n", 1)+"}\n")
	file := filepath.Join(t.TempDir(), "ls.policy")
	learned := sandkitRun(t, "", "-policy", base, "-learn", file, "--", "/bin/ls", data)
	require.Equal(t, 0, learned.code, "stderr: %s", learned.stderr)
	assert.Equal(t, "a\nb\n", learned.stdout)
	assert.Regexp(t, `^sandkit: WARNING: learn mode: seccomp records instead of enforcing; trusted input only\n`+
		`sandkit: learned \d+ syscalls beyond the base allowlist into `+regexp.QuoteMeta(file)+`: review it, then check it with sandkit run -policy `+regexp.QuoteMeta(file)+`\n$`, learned.stderr)
	text, err := os.ReadFile(file)
	require.NoError(t, err)
	assert.Contains(t, string(text), `allow: "getdents64"`)
	assert.Contains(t, string(text), `read_only_paths: "`+data+`"`)

	checked := sandkitRun(t, "", "-policy", file, "--", "/bin/ls", data)
	assert.Equal(t, 0, checked.code, "stderr: %s", checked.stderr)
	assert.Equal(t, learned.stdout, checked.stdout)
	assert.Empty(t, checked.stderr)

	killed := sandkitRun(t, "", "-policy", base, "--", "/bin/ls", data)
	assert.Equal(t, exitViolation, killed.code, "stderr: %s", killed.stderr)
}
