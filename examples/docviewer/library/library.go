// Package library is the only code of the viewer that touches the documents
// directory. It lists the documents (regular files, no dotfiles, no
// symlinks) and gives each an opaque id; everything else, the web UI
// included, refers to documents by id only, so no path that came from a URL
// ever reaches the filesystem. The broker side uses ReadDocument or
// OpenDocument to hand a document to a renderer.
package library

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/sandkit/sandkit/examples/docviewer/docerr"
)

// MaxDocuments bounds the listing; a directory with more files lists the
// first MaxDocuments by name.
const MaxDocuments = 10000

// Doc is one listed document.
type Doc struct {
	ID   string // 16 hex digits, derived from the name; stable across scans
	Name string // base name, for display only
	Size int64
}

// Library is a directory's listing. Safe for concurrent use.
type Library struct {
	dir  string
	only string // if set, the one file name this library lists

	mu   sync.Mutex
	docs []Doc
	byID map[string]Doc
}

// Open lists dir.
func Open(dir string) (*Library, error) {
	l := &Library{dir: dir}
	return l, l.Refresh()
}

// Single makes a library of the one file at path (for `convert`). The file
// must pass the same checks as in a listing: regular, not a symlink.
func Single(path string) (*Library, error) {
	dir, name := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	l := &Library{dir: dir, only: name}
	if err := l.Refresh(); err != nil {
		return nil, err
	}
	if len(l.docs) != 1 {
		why, kind := whyNotListable(path)
		return nil, docerr.New(kind, nil, "%s", why)
	}
	return l, nil
}

// whyNotListable says why path is not a document Single can open: that
// it does not exist (ErrNotFound), or the kind of file it is instead of a
// regular one (ErrUnsupported).
func whyNotListable(path string) (why string, kind error) {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "no such file", docerr.ErrNotFound
	case err != nil:
		return err.Error(), docerr.ErrNotFound
	case fi.Mode()&fs.ModeSymlink != 0:
		why = "a symbolic link; name the file itself"
	case fi.IsDir():
		why = "a directory; name a file"
	case fi.Mode()&fs.ModeNamedPipe != 0:
		why = "a named pipe (FIFO), not a regular file"
	case fi.Mode()&fs.ModeSocket != 0:
		why = "a socket, not a regular file"
	case fi.Mode()&fs.ModeDevice != 0:
		why = "a device, not a regular file"
	case strings.HasPrefix(filepath.Base(path), "."):
		why = "a hidden file (its name starts with a dot)"
	default:
		why = "not a regular file"
	}
	return why, docerr.ErrUnsupported
}

// IDOf is the id of a document name: the first 8 bytes of its SHA-256.
func IDOf(name string) string {
	sum := sha256.Sum256([]byte(name))
	return hex.EncodeToString(sum[:8])
}

// listable says whether a directory entry may be offered as a document.
// Symlinks are not (their type is ModeSymlink, never regular: entries come
// from getdents/lstat, not stat), nor devices, FIFOs, sockets or dotfiles.
func listable(name string, mode os.FileMode) bool {
	return mode.IsRegular() && !strings.HasPrefix(name, ".") && name != "" &&
		!strings.ContainsAny(name, "/\x00")
}

// Refresh rescans the directory.
func (l *Library) Refresh() error {
	entries, err := os.ReadDir(l.dir)
	if err != nil {
		return fmt.Errorf("list documents: %w", err)
	}
	var docs []Doc
	for _, e := range entries {
		if l.only != "" && e.Name() != l.only {
			continue
		}
		if !listable(e.Name(), e.Type()) {
			continue
		}
		info, err := e.Info()
		if err != nil || !listable(e.Name(), info.Mode()) {
			continue // vanished or changed since the scan
		}
		docs = append(docs, Doc{ID: IDOf(e.Name()), Name: e.Name(), Size: info.Size()})
		if len(docs) == MaxDocuments {
			break
		}
	}
	byID := make(map[string]Doc, len(docs))
	for _, d := range docs {
		byID[d.ID] = d
	}
	l.mu.Lock()
	l.docs, l.byID = docs, byID
	l.mu.Unlock()
	return nil
}

// List returns the documents, sorted by name.
func (l *Library) List() []Doc {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.docs)
}

// Lookup finds a listed document by id. Anything that is not a listed id,
// whatever it looks like, is simply not found.
func (l *Library) Lookup(id string) (Doc, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	d, ok := l.byID[id]
	return d, ok
}

// OpenDocument opens a listed document read-only for handing to a renderer
// (e.g. as an fd over the IPC). The name is opened relative to the listed
// directory with O_NOFOLLOW and O_NONBLOCK and must still be a regular file:
// a file swapped for a symlink or a FIFO after the scan is refused.
func (l *Library) OpenDocument(id string) (*os.File, Doc, error) {
	d, ok := l.Lookup(id)
	if !ok {
		return nil, Doc{}, docerr.New(docerr.ErrNotFound, nil, "no document %q", id)
	}
	dirf, err := os.Open(l.dir)
	if err != nil {
		return nil, d, fmt.Errorf("open documents directory: %w", err)
	}
	defer dirf.Close()
	fd, err := syscall.Openat(int(dirf.Fd()), d.Name, syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, d, docerr.New(docerr.ErrNotFound, err, "open %s", d.Name)
	}
	f := os.NewFile(uintptr(fd), d.Name)
	info, err := f.Stat()
	if err != nil || !info.Mode().IsRegular() {
		f.Close()
		return nil, d, docerr.New(docerr.ErrNotFound, err, "%s is no longer a regular file", d.Name)
	}
	return f, d, nil
}

// ReadDocument reads a listed document whole, refusing more than max bytes
// without reading them.
func (l *Library) ReadDocument(id string, max int64) ([]byte, Doc, error) {
	f, d, err := l.OpenDocument(id)
	if err != nil {
		return nil, d, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, d, fmt.Errorf("read %s: %w", d.Name, err)
	}
	if int64(len(b)) > max {
		return nil, d, docerr.New(docerr.ErrOverBudget, nil, "%s is larger than %d bytes", d.Name, max)
	}
	return b, d, nil
}
