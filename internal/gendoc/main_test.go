package main

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSecurityDocIsCurrent fails when SECURITY.md no longer matches the
// code; run `make docs` to regenerate it.
func TestSecurityDocIsCurrent(t *testing.T) {
	doc, err := os.ReadFile("../../SECURITY.md")
	require.NoError(t, err)
	want, err := Splice(doc, Generate())
	require.NoError(t, err)
	require.Equal(t, string(want), string(doc), "SECURITY.md is stale: run make docs")
}

func TestSpliceNeedsMarkers(t *testing.T) {
	_, err := Splice([]byte("no markers"), "x")
	require.Error(t, err)
}
