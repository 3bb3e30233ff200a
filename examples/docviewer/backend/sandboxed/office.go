package sandboxed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/sandkit/sandkit/broker"
	"github.com/sandkit/sandkit/examples/docviewer/docerr"
	"github.com/sandkit/sandkit/examples/docviewer/library"
	"github.com/sandkit/sandkit/examples/docviewer/office"
)

// maxOfficePDFs bounds the Office documents whose PDF is kept: past it,
// the least recently opened one's PDF is deleted, and that document is
// converted again when it is next opened.
const maxOfficePDFs = 64

// officePDFs are the PDFs LibreOffice made of a folder's Office
// documents, each in a file of a private directory (0700) of the
// backend's: a conversion takes seconds, and a renderer that was ended
// (idle, evicted) is given the document again. A PDF is as untrusted as
// the document it came from and reaches only a MuPDF renderer, as a
// descriptor of a file opened afresh for each renderer (its own open
// file description); it is never served.
type officePDFs struct {
	conv *office.Converter // nil: Office documents are refused
	dir  string

	mu      sync.Mutex
	byID    map[string]*officePDF
	dirErr  error
	runs    int // conversions started
	counter int // names files
}

// officePDF is one converted document, and which version of it.
type officePDF struct {
	src  fileVersion
	path string
	used time.Time
}

// fileVersion tells one content of a file from another without reading
// it: a document rewritten in place gets a new modification time, one
// replaced by rename a new inode.
type fileVersion struct {
	dev, ino uint64
	size     int64
	mtime    syscall.Timespec
}

func versionOf(f *os.File) (fileVersion, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return fileVersion{}, err
	}
	return fileVersion{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim}, nil
}

func newOfficePDFs(conv *office.Converter) *officePDFs {
	return &officePDFs{conv: conv, byID: map[string]*officePDF{}}
}

// open returns the PDF of the Office document d, opened read-only: the
// one made before if d has not changed since, else a new one, made by
// LibreOffice in its sandbox. The caller serializes calls for one
// document (session.mu).
func (o *officePDFs) open(ctx context.Context, lib *library.Library, d library.Doc) (*os.File, error) {
	if o.conv == nil {
		return nil, docerr.New(docerr.ErrUnsupported, nil, "%s: Office documents need LibreOffice, which this server does not have; to install it: %s", d.Name, office.InstallHint)
	}
	src, _, err := lib.OpenDocument(d.ID)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	v, err := versionOf(src)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.Name, err)
	}
	if f := o.cached(d.ID, v); f != nil {
		return f, nil
	}
	o.mu.Lock()
	o.runs++
	o.mu.Unlock()
	res, err := o.conv.ToPDF(ctx, d.ID, src, d.Name)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s: %w", d.Name, ctx.Err())
		}
		if !errors.Is(err, office.ErrConversion) {
			// LibreOffice's sandbox did not start (a layer
			// unavailable, the converter closed): not the
			// document's doing, so not remembered as its fault.
			return nil, fmt.Errorf("%s: %w", d.Name, err)
		}
		kind := docerr.ErrCorrupt
		if res != nil && res.Exit != nil && res.Exit.Reason != broker.ExitClean {
			kind = docerr.ErrSandbox // killed converting it
		}
		return nil, docerr.New(kind, err, "%s", d.Name)
	}
	path, err := o.store(d.ID, v, res.PDF)
	if err != nil {
		return nil, err
	}
	return os.Open(path)
}

// cached opens d's PDF if it was made of version v.
func (o *officePDFs) cached(id string, v fileVersion) *os.File {
	o.mu.Lock()
	defer o.mu.Unlock()
	e := o.byID[id]
	if e == nil || e.src != v {
		return nil
	}
	f, err := os.Open(e.path)
	if err != nil {
		return nil
	}
	e.used = time.Now()
	return f
}

// store writes pdf as id's PDF, made of version v, replacing an older
// one and, past maxOfficePDFs, deleting the least recently used.
func (o *officePDFs) store(id string, v fileVersion, pdf []byte) (string, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.dir == "" && o.dirErr == nil {
		o.dir, o.dirErr = os.MkdirTemp("", "docviewer-office-*") // 0700
	}
	if o.dirErr != nil {
		return "", fmt.Errorf("keep converted PDF: %w", o.dirErr)
	}
	o.counter++
	path := filepath.Join(o.dir, fmt.Sprintf("%d.pdf", o.counter))
	if err := os.WriteFile(path, pdf, 0o600); err != nil {
		os.Remove(path)
		return "", fmt.Errorf("keep converted PDF: %w", err)
	}
	if old := o.byID[id]; old != nil {
		os.Remove(old.path)
	}
	o.byID[id] = &officePDF{src: v, path: path, used: time.Now()}
	for len(o.byID) > maxOfficePDFs {
		var oldest string
		for k, e := range o.byID {
			if oldest == "" || e.used.Before(o.byID[oldest].used) {
				oldest = k
			}
		}
		os.Remove(o.byID[oldest].path)
		delete(o.byID, oldest)
	}
	return path, nil
}

// forget deletes id's PDF.
func (o *officePDFs) forget(id string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if e := o.byID[id]; e != nil {
		os.Remove(e.path)
		delete(o.byID, id)
	}
}

// conversions is how many conversions were started.
func (o *officePDFs) conversions() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.runs
}

// close deletes every PDF.
func (o *officePDFs) close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	clear(o.byID)
	if o.dir == "" {
		return nil
	}
	err := os.RemoveAll(o.dir)
	o.dir, o.dirErr = "", errors.New("backend closed")
	return err
}
