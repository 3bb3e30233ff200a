package generated

import "testing"

// Hand edits of deploy/seccomp.json or of the generated table in the docs
// fail here; make seccomp-profile rewrites both.
func TestGeneratedFilesUpToDate(t *testing.T) {
	stale, err := Sync("../..", false)
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range stale {
		t.Errorf("%s differs from what the generator writes: run make seccomp-profile (never edit it by hand)", path)
	}
}
