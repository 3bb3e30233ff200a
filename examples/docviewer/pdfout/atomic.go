package pdfout

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// WriteFileAtomic creates path with the bytes fn writes, or leaves the
// filesystem as it was: fn writes to a temporary file in path's directory
// (so the final rename cannot cross filesystems), which is fsynced and
// renamed over path only if fn and every step after it succeed; on any
// error the temporary file is removed. The directory is fsynced after the
// rename so the new name survives a crash. The file gets mode 0644.
func WriteFileAtomic(path string, fn func(w io.Writer) error) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("create temporary file for %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			if rmErr := os.Remove(tmp); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
				err = errors.Join(err, rmErr)
			}
		}
	}()
	if err = fn(f); err != nil {
		return err
	}
	if err = f.Chmod(0o644); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", tmp, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename to %s: %w", path, err)
	}
	// The rename is done: from here the output exists; a failed directory
	// fsync is reported but the file is not removed.
	d, derr := os.Open(dir)
	if derr != nil {
		return nil
	}
	defer d.Close()
	if serr := d.Sync(); serr != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, serr)
	}
	return nil
}
