package broker_test

import (
	"context"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/broker"
)

// TestForeignProgramOutputDescriptor: with OutputDescriptor the program writes the
// caller's own descriptor (a pipe here, a shell's stdout for sandkit
// run), which the broker neither reads nor keeps; one without a File is
// refused before anything starts.
func TestForeignProgramOutputDescriptor(t *testing.T) {
	prog := buildForeign(t)
	b := newBroker(t, foreignPolicy())
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	res := runForeign(t, b, broker.Program{Path: prog, Args: []string{"foreignprog", "echo"}, Input: inputPipe(t, "to the caller\n"),
		Output: broker.Output{Kind: broker.OutputDescriptor, File: w}})
	require.Equal(t, broker.ExitClean, res.Exit.Reason, "%v", res.Exit)
	assert.Nil(t, res.Output)
	assert.Nil(t, res.File)
	require.NoError(t, w.Close())
	got, err := io.ReadAll(r)
	require.NoError(t, err)
	assert.Equal(t, "TO THE CALLER\n", string(got), "and no writer is left: the broker kept no copy")

	_, err = b.RunProgram(context.Background(), "origin", "doc", broker.Program{Path: prog, Args: []string{"foreignprog", "echo"}, Output: broker.Output{Kind: broker.OutputDescriptor}})
	require.ErrorIs(t, err, broker.ErrProgram)
	assert.Contains(t, err.Error(), "OutputDescriptor without Output.File")
}

// TestForeignProgramSignal: a program a signal ended says which in
// Result.Signal, its ExitCode -1; one that exited has no signal.
func TestForeignProgramSignal(t *testing.T) {
	prog := buildForeign(t)
	b := newBroker(t, foreignPolicy())
	in, w, err := os.Pipe()
	require.NoError(t, err)
	defer in.Close()
	defer w.Close() // never written: the program waits until killed
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	res, err := b.RunProgram(ctx, "origin", "doc", broker.Program{Path: prog, Args: []string{"foreignprog", "echo"}, Input: in, Output: broker.Output{Limit: 1 << 10}})
	require.NoError(t, err)
	require.Equal(t, broker.ExitReleased, res.Exit.Reason, "%v", res.Exit)
	assert.Equal(t, syscall.SIGKILL, res.Signal)
	assert.Equal(t, -1, res.ExitCode)

	res = runForeign(t, b, broker.Program{Path: prog, Args: []string{"foreignprog", "exit", "7"}, Output: broker.Output{Limit: 1 << 10}})
	require.Equal(t, broker.ExitCrash, res.Exit.Reason, "%v", res.Exit)
	assert.Equal(t, 7, res.ExitCode)
	assert.Equal(t, syscall.Signal(0), res.Signal)
	assert.True(t, strings.HasPrefix(res.Exit.Detail, "exit status 7"), res.Exit.Detail)
}
