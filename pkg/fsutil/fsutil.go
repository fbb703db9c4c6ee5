// Package fsutil writes files atomically: a temp file in the target's
// directory renamed over it, so a reader sees the old content or the new,
// never a part.
package fsutil

import (
	"io"
	"os"
	"path/filepath"
)

// WriteAtomic writes r to path with the given mode through a temp file in
// path's directory (which must exist) renamed over path. With sync
// the file's data is on disk before the rename (the rename itself is
// durable once the caller syncs the directory).
func WriteAtomic(path string, mode os.FileMode, r io.Reader, sync bool) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	_, err = io.Copy(tmp, r)
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if err == nil && sync {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	return err
}
