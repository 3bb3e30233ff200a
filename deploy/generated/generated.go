// Package generated keeps the files generated from the document viewer's
// renderer policy in step with it: deploy/seccomp.json and the table
// between the markers of docs/deploying-containers.md.
package generated

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sandkit/sandkit/examples/docviewer/backend/sandboxed"
	"github.com/sandkit/sandkit/examples/docviewer/doclimits"

	"github.com/sandkit/sandkit/deploy/seccompprofile"
)

// Paths of the generated files, relative to the repository's root.
const (
	ProfilePath = "deploy/seccomp.json"
	DocPath     = "docs/deploying-containers.md"
)

// Markers delimit the generated table in DocPath.
const (
	BeginMarker = "<!-- BEGIN GENERATED seccomp additions (make seccomp-profile) -->\n"
	EndMarker   = "<!-- END GENERATED seccomp additions -->\n"
)

// Files returns each generated file's path and wanted content, given the
// current content of the doc (the generated table replaces what is
// between its markers).
func Files(root string) (map[string][]byte, error) {
	p := sandboxed.Policy(doclimits.Default())
	profile, err := seccompprofile.Generate(p)
	if err != nil {
		return nil, err
	}
	table, err := seccompprofile.Markdown(p)
	if err != nil {
		return nil, err
	}
	doc, err := os.ReadFile(filepath.Join(root, DocPath))
	if err != nil {
		return nil, err
	}
	b := bytes.Index(doc, []byte(BeginMarker))
	e := bytes.Index(doc, []byte(EndMarker))
	if b < 0 || e < b {
		return nil, fmt.Errorf("%s: markers %q and %q not found in order", DocPath, BeginMarker, EndMarker)
	}
	var nd []byte
	nd = append(nd, doc[:b+len(BeginMarker)]...)
	nd = append(nd, table...)
	nd = append(nd, doc[e:]...)
	return map[string][]byte{ProfilePath: profile, DocPath: nd}, nil
}

// Sync compares (or, with write, rewrites) the generated files under root
// and returns the paths that differed.
func Sync(root string, write bool) ([]string, error) {
	files, err := Files(root)
	if err != nil {
		return nil, err
	}
	var stale []string
	for _, path := range []string{ProfilePath, DocPath} {
		full := filepath.Join(root, path)
		have, err := os.ReadFile(full)
		if err != nil && !os.IsNotExist(err) {
			return nil, err
		}
		if bytes.Equal(have, files[path]) {
			continue
		}
		stale = append(stale, path)
		if write {
			if err := os.WriteFile(full, files[path], 0o644); err != nil {
				return nil, err
			}
		}
	}
	return stale, nil
}
