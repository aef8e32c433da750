package local

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// FS is the file system the store keeps its files in: the real one by default (OS), an in-memory one that
// forgets everything not yet made durable in crash tests (package crashfs).
//
// Durability follows POSIX, strictly: a file's data is durable once File.Sync returns; a file's or directory's
// creation, rename or removal is durable once SyncDir of its parent directory returns.
type FS interface {
	// OpenFile opens a file with os.OpenFile's flags (O_RDONLY, O_RDWR, O_CREATE, O_EXCL, O_TRUNC, O_APPEND).
	OpenFile(name string, flag int, perm fs.FileMode) (File, error)
	// Mkdir creates a directory; it fails with fs.ErrExist if name exists.
	Mkdir(name string, perm fs.FileMode) error
	// ReadDir lists a directory sorted by name.
	ReadDir(name string) ([]fs.DirEntry, error)
	// Rename replaces newname with oldname.
	Rename(oldname, newname string) error
	// Remove removes a file or an empty directory.
	Remove(name string) error
	Stat(name string) (fs.FileInfo, error)
	// SyncDir makes the creations, renames and removals of entries of directory name durable.
	SyncDir(name string) error
	// OpenMapped opens, creating it if needed, a projection file: fixed-size slots written in place and
	// read at memory speed, made durable by Mapped.Sync. chunk is a hint for how it grows.
	OpenMapped(name string, chunk int64) (Mapped, error)
}

// File is an open file of an FS.
type File interface {
	io.ReaderAt
	io.WriterAt
	io.Writer
	// Sync makes the file's data durable, with the metadata needed to read it back (its size).
	Sync() error
	Truncate(size int64) error
	Stat() (fs.FileInfo, error)
	Close() error
	Name() string
}

// Mapped is a projection file: bytes read and written in place at any offset below its size. Writes are
// visible to reads at once and durable after Sync. ReadAt and WriteAt may run concurrently with each other and
// with Grow (on different offsets).
type Mapped interface {
	io.ReaderAt
	io.WriterAt
	// Grow makes bytes [0, size) addressable, extending the file with zeros; it never shrinks it.
	Grow(size int64) error
	// Size is the addressable size.
	Size() int64
	Sync() error
	Close() error
}

// OS is the real file system; projection files are memory-mapped.
var OS FS = osFS{}

type osFS struct{}

func (osFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (osFS) Mkdir(name string, perm fs.FileMode) error           { return os.Mkdir(name, perm) }
func (osFS) ReadDir(name string) ([]fs.DirEntry, error)          { return os.ReadDir(name) }
func (osFS) Rename(oldname, newname string) error                { return os.Rename(oldname, newname) }
func (osFS) Remove(name string) error                            { return os.Remove(name) }
func (osFS) Stat(name string) (fs.FileInfo, error)               { return os.Stat(name) }
func (osFS) OpenMapped(name string, chunk int64) (Mapped, error) { return openMapped(name, chunk) }

func (osFS) SyncDir(name string) error {
	d, err := os.Open(name)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// osFile syncs with fdatasync: segment appends need the data and the size, not the timestamps.
type osFile struct{ *os.File }

func (f osFile) Sync() error { return fdatasync(f.File) }

// readFile reads a whole file.
func readFile(fsys FS, name string) ([]byte, error) {
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	b := make([]byte, fi.Size())
	n, err := f.ReadAt(b, 0)
	if err == io.EOF && n == len(b) {
		err = nil
	}
	if err != nil {
		return nil, err
	}
	return b[:n], nil
}

// writeFileAtomic replaces name with data durably: a temporary file beside it, Sync, Rename, SyncDir. A crash
// leaves the old file or the new one, never a mix. Only one writer per name at a time.
func writeFileAtomic(fsys FS, name string, data []byte, perm fs.FileMode) error {
	tmp := name + ".tmp"
	if err := fsys.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	f, err := fsys.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		f.Close()
		fsys.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := fsys.Rename(tmp, name); err != nil {
		return err
	}
	return fsys.SyncDir(filepath.Dir(name))
}

// mkdirAllDurable creates dir and any missing parents, syncing each new directory's parent so the whole path
// survives a crash.
func mkdirAllDurable(fsys FS, dir string) error {
	dir = filepath.Clean(dir)
	fi, err := fsys.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := mkdirAllDurable(fsys, parent); err != nil {
			return err
		}
	}
	if err := fsys.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return fsys.SyncDir(parent)
}

// removeAll removes a directory tree (used only for the leftovers of an interrupted Create).
func removeAll(fsys FS, name string) error {
	fi, err := fsys.Stat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	if fi.IsDir() {
		ents, err := fsys.ReadDir(name)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if err := removeAll(fsys, filepath.Join(name, e.Name())); err != nil {
				return err
			}
		}
	}
	return fsys.Remove(name)
}
