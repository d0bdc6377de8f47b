// Package atomicfile writes files so a reader or a crash never sees half of one.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write writes a sibling temp file, syncs it and renames it over
// path, so readers see the old or the new content, never a part. A path that
// is a symlink (a ~/.kube/config kept in a dotfiles repository) stays one:
// the file it points to is replaced.
func Write(path string, data []byte, mode os.FileMode) (err error) {
	if target, err := filepath.EvalSymlinks(path); err == nil {
		path = target
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".rack-tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(mode); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	if d, derr := os.Open(dir); derr == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
