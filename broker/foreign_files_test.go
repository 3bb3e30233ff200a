package broker_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/policy"
)

// filesPolicy is foreignPolicy with a tmpfs at /work for the input and
// output files, and the path calls the test program's hostile modes make.
func filesPolicy() *policy.Policy {
	p := foreignPolicy()
	p.Seccomp.Allow = append(p.Seccomp.Allow, "symlinkat", "mkdirat")
	p.Filesystem.Tmpfs = []policy.Tmpfs{{Path: "/work", Size: 64 << 10}}
	p.Limits.FileSize = 1 << 20
	return p
}

// TestForeignProgramFiles: a program that opens its document by name and
// writes its result into a directory gets the input as its own copy in
// its tmpfs and hands back exactly one regular file, read by the broker
// after the program is gone.
func TestForeignProgramFiles(t *testing.T) {
	prog := buildForeign(t)
	b := newBroker(t, filesPolicy())
	const text = "hello by name\n"
	in := inputMemfd(t, text)
	_, err := in.Seek(3, 0)
	require.NoError(t, err)
	res := runForeign(t, b, broker.Program{
		Path: prog, Args: []string{"foreignprog", "convert", "/work/in.txt", "/work/out.txt"},
		Input: in, InputPath: "/work/in.txt",
		Output: broker.Output{Kind: broker.OutputFile, Path: "/work/out.txt", Limit: 1 << 10},
	})
	require.Equal(t, broker.ExitClean, res.Exit.Reason, "%v", res.Exit)
	assertAllLayers(t, filesPolicy(), res.Layers)
	// The whole document, from offset 0 whatever the caller's offset;
	// the program could not open its copy to write (mode 0400, no
	// capabilities): EACCES.
	assert.Equal(t, strings.ToUpper(text)+"write input errno 13\n", string(res.Output))
	off, err := in.Seek(0, 1)
	require.NoError(t, err)
	assert.Equal(t, int64(3), off, "the caller's offset moved")

	// More files, parent directories made: a program's configuration.
	res = runForeign(t, b, broker.Program{
		Path: prog, Args: []string{"foreignprog", "convert", "/work/profile/user/conf", "/work/out.txt"},
		Input: inputMemfd(t, "document"), InputPath: "/work/in.txt",
		Files:  []broker.File{{Path: "/work/profile/user/conf", Content: inputMemfd(t, "setting=1\n")}},
		Output: broker.Output{Kind: broker.OutputFile, Path: "/work/out.txt", Limit: 1 << 10},
	})
	require.Equal(t, broker.ExitClean, res.Exit.Reason, "%v", res.Exit)
	assert.Equal(t, "SETTING=1\nwrite input errno 13\n", string(res.Output))
}

// TestForeignProgramOutputFileHostile: whatever the program leaves at
// the output path, the broker reads a regular file within the bound or
// nothing, and says why (ErrOutputFile with the exact cause).
func TestForeignProgramOutputFileHostile(t *testing.T) {
	prog := buildForeign(t)
	b := newBroker(t, filesPolicy())
	out := broker.Output{Kind: broker.OutputFile, Path: "/work/out", Limit: 1 << 10}
	for _, tc := range []struct {
		name  string
		args  []string
		errno unix.Errno
		msg   string
	}{
		{"missing", []string{"exit", "0"}, unix.ENOENT, ""},
		{"symlink", []string{"symlink", "/work/other", "/work/out"}, unix.ELOOP, ""},
		{"symlink out of the tmpfs", []string{"symlink", "/proc/self/root/etc/passwd", "/work/out"}, unix.ELOOP, ""},
		{"directory", []string{"mkdir", "/work/out"}, 0, "is not a regular file"},
		{"over the bound", []string{"fill", "/work/out"}, 0, "over 1024"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := b.RunProgram(context.Background(), "origin", "doc",
				broker.Program{Path: prog, Args: append([]string{"foreignprog"}, tc.args...), Output: out})
			require.ErrorIs(t, err, broker.ErrOutputFile)
			require.NotNil(t, res)
			assert.Nil(t, res.Output)
			if tc.errno != 0 {
				assert.ErrorIs(t, err, tc.errno)
			} else {
				assert.Contains(t, err.Error(), tc.msg)
			}
		})
	}
}

// TestForeignProgramFilesRefused: input and output paths outside the
// policy's tmpfs, and inputs that cannot be copied or do not fit, are
// refused before anything starts.
func TestForeignProgramFilesRefused(t *testing.T) {
	prog := buildForeign(t)
	b := newBroker(t, filesPolicy())
	big := inputMemfd(t, strings.Repeat("x", 65<<10))
	for _, tc := range []struct {
		name string
		prog broker.Program
		msg  string
	}{
		{"input outside the tmpfs", broker.Program{Input: inputMemfd(t, "x"), InputPath: "/etc/in"}, "not an absolute, clean path inside a tmpfs"},
		{"input at the tmpfs itself", broker.Program{Input: inputMemfd(t, "x"), InputPath: "/work"}, "not an absolute, clean path inside a tmpfs"},
		{"input not clean", broker.Program{Input: inputMemfd(t, "x"), InputPath: "/work/../etc/in"}, "not an absolute, clean path inside a tmpfs"},
		{"input a pipe", broker.Program{Input: inputPipe(t, "x"), InputPath: "/work/in"}, "regular file or a memfd"},
		{"input larger than the tmpfs", broker.Program{Input: big, InputPath: "/work/in"}, "larger than the tmpfs"},
		{"output outside the tmpfs", broker.Program{Output: broker.Output{Kind: broker.OutputFile, Path: "/out"}}, "not an absolute, clean path inside a tmpfs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.prog.Path, tc.prog.Args = prog, []string{"foreignprog", "exit", "0"}
			if tc.prog.Output.Kind == broker.OutputPipe {
				tc.prog.Output = broker.Output{Limit: 10}
			}
			tc.prog.Output.Limit = 10
			_, err := b.RunProgram(context.Background(), "origin", "doc", tc.prog)
			require.ErrorIs(t, err, broker.ErrProgram)
			assert.Contains(t, err.Error(), tc.msg)
		})
	}
	assert.Empty(t, b.Renderers())
}
