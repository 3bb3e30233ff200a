package ipc

import (
	"errors"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sandkit/sandkit/internal/fdkind"
)

func TestCheckFD(t *testing.T) {
	accept := map[FDKind][]string{
		SealedMemfd:     {"memfd-sealed", "memfd-sealed-extra", "memfd-readonly"},
		SharedRegion:    {"memfd-sealed", "memfd-sealed-extra", "memfd-readonly", "memfd-no-write"},
		ReadOnlyFile:    {"readonly", "memfd-readonly"},
		SeccompListener: {"seccomp-listener"},
		BlankMemfd:      {"memfd-blank"},
	}
	for _, k := range []FDKind{SealedMemfd, SharedRegion, ReadOnlyFile, SeccompListener, BlankMemfd} {
		for name, mk := range fixtures {
			t.Run(k.String()+"/"+name, func(t *testing.T) {
				fd := mk(t)
				f := os.NewFile(uintptr(fd), name)
				defer f.Close()
				err := checkFile(f, k)
				want := false
				for _, ok := range accept[k] {
					want = want || ok == name
				}
				if want {
					require.NoError(t, err)
					return
				}
				var perr *ProtocolError
				require.True(t, errors.As(err, &perr), "got %v", err)
				require.Equal(t, ReasonFDKind, perr.Reason)
				require.ErrorIs(t, err, ErrProtocol)
			})
		}
	}
}

func TestCheckFDInvalid(t *testing.T) {
	require.Error(t, checkFile(nil, SealedMemfd))
	f, err := os.Open("/dev/null")
	require.NoError(t, err)
	defer f.Close()
	require.Error(t, checkFile(f, FDKind(0)))
	require.Error(t, checkFile(f, FDKind(99)))
	require.Equal(t, "FDKind(99)", FDKind(99).String())
}

func TestNewMethodPanics(t *testing.T) {
	for name, spec := range map[string]MethodSpec{
		"empty name":    {},
		"bad kind":      {Name: "m", RequestFDs: []FDKind{0}},
		"bad resp kind": {Name: "m", ResponseFDs: []FDKind{42}},
		"negative":      {Name: "m", MaxRequestBytes: -1},
		"bad utf8":      {Name: "\xff"},
		"too many fds":  {Name: "m", RequestFDs: make([]FDKind, 300)},
	} {
		t.Run(name, func(t *testing.T) {
			require.Panics(t, func() { NewMethod[*testMsg, *testMsg](spec) })
		})
	}
}

// FDKind's checks and names are internal/fdkind's: the numbers must match.
func TestFDKindsMatch(t *testing.T) {
	for k, want := range map[FDKind]fdkind.Kind{
		SealedMemfd:     fdkind.SealedMemfd,
		ReadOnlyFile:    fdkind.ReadOnlyFile,
		SeccompListener: fdkind.SeccompListener,
		SharedRegion:    fdkind.SharedRegion,
		BlankMemfd:      fdkind.BlankMemfd,
	} {
		require.Equal(t, want, k.kind(), "%v", k)
	}
	require.False(t, FDKind(BlankMemfd+1).valid(), "a kind fdkind does not know")
}
