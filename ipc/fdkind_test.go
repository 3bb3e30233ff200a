package ipc

import (
	"errors"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
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
				err := CheckFD(f, k)
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
	require.Error(t, CheckFD(nil, SealedMemfd))
	f, err := os.Open("/dev/null")
	require.NoError(t, err)
	defer f.Close()
	require.Error(t, CheckFD(f, FDKind(0)))
	require.Error(t, CheckFD(f, FDKind(99)))
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
