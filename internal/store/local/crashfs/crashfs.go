// Package crashfs is an in-memory file system for crash tests of the embedded store (local.FS). Beside each
// file's current contents it keeps what File.Sync last made durable, and beside each directory's entries what
// SyncDir last made durable, as strict POSIX allows no more: data written but not synced, and files created,
// renamed or removed in a directory that was not synced afterwards, are lost in a crash.
//
// Crash simulates the power failing: from then on every operation fails. Durable returns a new file system
// holding only the durable state, on which the store can be reopened; DurableTorn also keeps a random part of
// what was in flight, as a disk that wrote back some pages in order and tore the last write.
//
// It never touches the real disk.
package crashfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cairn-ai/cairn/internal/store/local"
)

// ErrCrashed is what every operation returns after Crash.
var ErrCrashed = errors.New("crashfs: the machine crashed")

// Op is a kind of operation that changes the file system or makes it durable, as passed to a hook.
type Op int

const (
	OpCreate   Op = iota // OpenFile with O_CREATE, or Mkdir
	OpWrite              // Write or WriteAt, on a file or a projection
	OpTruncate           // Truncate, O_TRUNC, or a projection's Grow
	OpSync               // File.Sync or Mapped.Sync
	OpSyncDir            // SyncDir
	OpRename             // Rename (the hook gets the old name)
	OpRemove             // Remove
)

func (o Op) String() string {
	return [...]string{"create", "write", "truncate", "sync", "syncdir", "rename", "remove"}[o]
}

// FS is a crash-simulating in-memory file system. It is safe for concurrent use.
type FS struct {
	mu      sync.Mutex
	root    *node
	crashed bool
	hook    atomic.Pointer[func(Op, string)]
}

var _ local.FS = (*FS)(nil)

// New returns an empty file system whose root directory is durable.
func New() *FS { return &FS{root: newDir(0o755)} }

// SetHook installs a function called before each operation that changes the file system or makes it durable,
// with the path it concerns (nil removes it). The hook runs outside the file system's lock; if it calls Crash,
// the operation fails as if the power had failed just before it.
func (f *FS) SetHook(h func(op Op, name string)) {
	if h == nil {
		f.hook.Store(nil)
		return
	}
	f.hook.Store(&h)
}

// Crash simulates a power failure: every later operation, on the file system or on any open file, fails with
// ErrCrashed.
func (f *FS) Crash() {
	f.mu.Lock()
	f.crashed = true
	f.mu.Unlock()
}

// Crashed reports whether Crash was called.
func (f *FS) Crashed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.crashed
}

// Durable returns a new file system holding exactly what was durable: each file reachable through durable
// directory entries, with the contents it had at its last Sync.
func (f *FS) Durable() *FS { return f.image(nil) }

// DurableTorn is like Durable, but each file also keeps a random prefix of the writes made since its last Sync,
// the last of them possibly cut short, as the disk may have written them back before the power failed.
// Directory entries are kept only when durable.
func (f *FS) DurableTorn(rng *rand.Rand) *FS { return f.image(rng) }

func (f *FS) image(rng *rand.Rand) *FS {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &FS{root: f.root.durableCopy(rng)}
}

// node is a file or a directory.
type node struct {
	mode fs.FileMode
	dir  bool
	// directories: current and durable entries
	children, durableChildren map[string]*node
	// files: current and durable contents, and the changes since the last sync (durable + pending = data)
	data, durable []byte
	pending       []change
}

// change is one unsynced write (data != nil) or truncation.
type change struct {
	off  int64
	data []byte
	size int64 // for a truncation
}

func newDir(perm fs.FileMode) *node {
	return &node{dir: true, mode: fs.ModeDir | perm, children: map[string]*node{}, durableChildren: map[string]*node{}}
}

func (c change) apply(b []byte) []byte {
	if c.data == nil {
		return resize(b, c.size)
	}
	end := c.off + int64(len(c.data))
	if end > int64(len(b)) {
		b = resize(b, end)
	}
	copy(b[c.off:], c.data)
	return b
}

// resize truncates b or extends it with zeros.
func resize(b []byte, n int64) []byte {
	if n <= int64(len(b)) {
		return b[:n]
	}
	old := len(b)
	b = slices.Grow(b, int(n)-old)[:n]
	clear(b[old:])
	return b
}

func (n *node) change(c change) {
	n.data = c.apply(n.data)
	n.pending = append(n.pending, c)
}

func (n *node) sync() {
	for _, c := range n.pending {
		n.durable = c.apply(n.durable)
	}
	n.pending = nil
}

func (n *node) durableCopy(rng *rand.Rand) *node {
	if n.dir {
		d := newDir(n.mode.Perm())
		for name, c := range n.durableChildren {
			cc := c.durableCopy(rng)
			d.children[name] = cc
			d.durableChildren[name] = cc
		}
		return d
	}
	b := slices.Clone(n.durable)
	if rng != nil && len(n.pending) > 0 {
		k := rng.IntN(len(n.pending) + 1)
		for _, c := range n.pending[:k] {
			b = c.apply(b)
		}
		if k < len(n.pending) && n.pending[k].data != nil && len(n.pending[k].data) > 1 && rng.IntN(2) == 0 {
			c := n.pending[k]
			c.data = c.data[:rng.IntN(len(c.data))]
			b = c.apply(b)
		}
	}
	if b == nil {
		b = []byte{}
	}
	return &node{mode: n.mode, data: b, durable: slices.Clone(b)}
}

func (n *node) info(name string) fs.FileInfo {
	return fileInfo{name: name, size: int64(len(n.data)), mode: n.mode}
}

type fileInfo struct {
	name string
	size int64
	mode fs.FileMode
}

func (i fileInfo) Name() string       { return i.name }
func (i fileInfo) Size() int64        { return i.size }
func (i fileInfo) Mode() fs.FileMode  { return i.mode }
func (i fileInfo) ModTime() time.Time { return time.Time{} }
func (i fileInfo) IsDir() bool        { return i.mode.IsDir() }
func (i fileInfo) Sys() any           { return nil }

// split cleans name into path components ("/a/b" and "a/b" are the same file).
func split(name string) []string {
	p := path.Clean("/" + filepath.ToSlash(name))
	if p == "/" {
		return nil
	}
	return strings.Split(p[1:], "/")
}

// lookup finds a node; f.mu must be held.
func (f *FS) lookup(op, name string) (*node, error) {
	n := f.root
	for _, c := range split(name) {
		if !n.dir {
			return nil, &fs.PathError{Op: op, Path: name, Err: syscall.ENOTDIR}
		}
		if n = n.children[c]; n == nil {
			return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
		}
	}
	return n, nil
}

// parent finds the directory holding name and name's last component; f.mu must be held.
func (f *FS) parent(op, name string) (*node, string, error) {
	cs := split(name)
	if len(cs) == 0 {
		return nil, "", &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	d, err := f.lookup(op, strings.Join(cs[:len(cs)-1], "/"))
	if err != nil {
		return nil, "", err
	}
	if !d.dir {
		return nil, "", &fs.PathError{Op: op, Path: name, Err: syscall.ENOTDIR}
	}
	return d, cs[len(cs)-1], nil
}

// begin runs the hook for a changing operation, then takes the lock; it fails after a crash.
func (f *FS) begin(op Op, name string) error {
	if h := f.hook.Load(); h != nil {
		(*h)(op, name)
	}
	return f.lock()
}

// lock takes the lock unless the machine crashed.
func (f *FS) lock() error {
	f.mu.Lock()
	if f.crashed {
		f.mu.Unlock()
		return ErrCrashed
	}
	return nil
}

func (f *FS) OpenFile(name string, flag int, perm fs.FileMode) (local.File, error) {
	var err error
	if flag&os.O_CREATE != 0 {
		err = f.begin(OpCreate, name)
	} else {
		err = f.lock()
	}
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	defer f.mu.Unlock()
	d, base, err := f.parent("open", name)
	if err != nil {
		return nil, err
	}
	n := d.children[base]
	switch {
	case n != nil && flag&(os.O_CREATE|os.O_EXCL) == os.O_CREATE|os.O_EXCL:
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrExist}
	case n != nil && n.dir:
		return nil, &fs.PathError{Op: "open", Path: name, Err: syscall.EISDIR}
	case n == nil && flag&os.O_CREATE == 0:
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	case n == nil:
		n = &node{mode: perm.Perm(), data: []byte{}, durable: []byte{}}
		d.children[base] = n
	}
	if flag&os.O_TRUNC != 0 && len(n.data) > 0 {
		n.change(change{size: 0})
	}
	return &file{fs: f, n: n, name: name, flag: flag}, nil
}

func (f *FS) Mkdir(name string, perm fs.FileMode) error {
	if err := f.begin(OpCreate, name); err != nil {
		return &fs.PathError{Op: "mkdir", Path: name, Err: err}
	}
	defer f.mu.Unlock()
	d, base, err := f.parent("mkdir", name)
	if err != nil {
		return err
	}
	if d.children[base] != nil {
		return &fs.PathError{Op: "mkdir", Path: name, Err: fs.ErrExist}
	}
	d.children[base] = newDir(perm.Perm())
	return nil
}

func (f *FS) ReadDir(name string) ([]fs.DirEntry, error) {
	if err := f.lock(); err != nil {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: err}
	}
	defer f.mu.Unlock()
	d, err := f.lookup("readdir", name)
	if err != nil {
		return nil, err
	}
	if !d.dir {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: syscall.ENOTDIR}
	}
	out := make([]fs.DirEntry, 0, len(d.children))
	for _, k := range slices.Sorted(maps.Keys(d.children)) {
		out = append(out, fs.FileInfoToDirEntry(d.children[k].info(k)))
	}
	return out, nil
}

func (f *FS) Rename(oldname, newname string) error {
	if err := f.begin(OpRename, oldname); err != nil {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: err}
	}
	defer f.mu.Unlock()
	od, ob, err := f.parent("rename", oldname)
	if err != nil {
		return err
	}
	nd, nb, err := f.parent("rename", newname)
	if err != nil {
		return err
	}
	n := od.children[ob]
	if n == nil {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: fs.ErrNotExist}
	}
	if t := nd.children[nb]; t != nil && t != n {
		if t.dir != n.dir || (t.dir && len(t.children) > 0) {
			return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: fs.ErrExist}
		}
	}
	delete(od.children, ob)
	nd.children[nb] = n
	return nil
}

func (f *FS) Remove(name string) error {
	if err := f.begin(OpRemove, name); err != nil {
		return &fs.PathError{Op: "remove", Path: name, Err: err}
	}
	defer f.mu.Unlock()
	d, base, err := f.parent("remove", name)
	if err != nil {
		return err
	}
	n := d.children[base]
	if n == nil {
		return &fs.PathError{Op: "remove", Path: name, Err: fs.ErrNotExist}
	}
	if n.dir && len(n.children) > 0 {
		return &fs.PathError{Op: "remove", Path: name, Err: syscall.ENOTEMPTY}
	}
	delete(d.children, base)
	return nil
}

func (f *FS) Stat(name string) (fs.FileInfo, error) {
	if err := f.lock(); err != nil {
		return nil, &fs.PathError{Op: "stat", Path: name, Err: err}
	}
	defer f.mu.Unlock()
	n, err := f.lookup("stat", name)
	if err != nil {
		return nil, err
	}
	return n.info(path.Base("/" + filepath.ToSlash(name))), nil
}

func (f *FS) SyncDir(name string) error {
	if err := f.begin(OpSyncDir, name); err != nil {
		return &fs.PathError{Op: "sync", Path: name, Err: err}
	}
	defer f.mu.Unlock()
	d, err := f.lookup("sync", name)
	if err != nil {
		return err
	}
	if !d.dir {
		return &fs.PathError{Op: "sync", Path: name, Err: syscall.ENOTDIR}
	}
	d.durableChildren = maps.Clone(d.children)
	return nil
}

// OpenMapped opens a projection file; its writes are lost in a crash unless synced, like any file's.
func (f *FS) OpenMapped(name string, chunk int64) (local.Mapped, error) {
	fl, err := f.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	return mapped{fl.(*file)}, nil
}

// file is an open file.
type file struct {
	fs     *FS
	n      *node
	name   string
	flag   int
	pos    int64
	closed bool
}

func (f *file) op(op string, err error) error { return &fs.PathError{Op: op, Path: f.name, Err: err} }

// begin is FS.begin for an open file, which must also not be closed.
func (f *file) begin(op Op) error {
	if err := f.fs.begin(op, f.name); err != nil {
		return err
	}
	if f.closed {
		f.fs.mu.Unlock()
		return os.ErrClosed
	}
	return nil
}

func (f *file) lock() error {
	if err := f.fs.lock(); err != nil {
		return err
	}
	if f.closed {
		f.fs.mu.Unlock()
		return os.ErrClosed
	}
	return nil
}

func (f *file) Name() string { return f.name }

func (f *file) ReadAt(p []byte, off int64) (int, error) {
	if err := f.lock(); err != nil {
		return 0, f.op("read", err)
	}
	defer f.fs.mu.Unlock()
	if off < 0 {
		return 0, f.op("read", fs.ErrInvalid)
	}
	if off >= int64(len(f.n.data)) {
		return 0, io.EOF
	}
	k := copy(p, f.n.data[off:])
	if k < len(p) {
		return k, io.EOF
	}
	return k, nil
}

func (f *file) writable() bool { return f.flag&(os.O_WRONLY|os.O_RDWR) != 0 }

func (f *file) WriteAt(p []byte, off int64) (int, error) {
	if err := f.begin(OpWrite); err != nil {
		return 0, f.op("write", err)
	}
	defer f.fs.mu.Unlock()
	if !f.writable() || off < 0 {
		return 0, f.op("write", fs.ErrInvalid)
	}
	f.n.change(change{off: off, data: slices.Clone(p)})
	return len(p), nil
}

func (f *file) Write(p []byte) (int, error) {
	if err := f.begin(OpWrite); err != nil {
		return 0, f.op("write", err)
	}
	defer f.fs.mu.Unlock()
	if !f.writable() {
		return 0, f.op("write", fs.ErrInvalid)
	}
	if f.flag&os.O_APPEND != 0 {
		f.pos = int64(len(f.n.data))
	}
	f.n.change(change{off: f.pos, data: slices.Clone(p)})
	f.pos += int64(len(p))
	return len(p), nil
}

func (f *file) Sync() error {
	if err := f.begin(OpSync); err != nil {
		return f.op("sync", err)
	}
	defer f.fs.mu.Unlock()
	f.n.sync()
	return nil
}

func (f *file) Truncate(size int64) error {
	if err := f.begin(OpTruncate); err != nil {
		return f.op("truncate", err)
	}
	defer f.fs.mu.Unlock()
	if !f.writable() || size < 0 {
		return f.op("truncate", fs.ErrInvalid)
	}
	f.n.change(change{size: size})
	return nil
}

func (f *file) Stat() (fs.FileInfo, error) {
	if err := f.lock(); err != nil {
		return nil, f.op("stat", err)
	}
	defer f.fs.mu.Unlock()
	return f.n.info(path.Base("/" + filepath.ToSlash(f.name))), nil
}

func (f *file) Close() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return f.op("close", os.ErrClosed)
	}
	f.closed = true
	if f.fs.crashed {
		return f.op("close", ErrCrashed)
	}
	return nil
}

// mapped is a projection file: in memory, a file like any other.
type mapped struct{ *file }

func (m mapped) Grow(size int64) error {
	if err := m.lock(); err != nil {
		return m.op("grow", err)
	}
	if size <= int64(len(m.n.data)) {
		m.fs.mu.Unlock()
		return nil
	}
	m.fs.mu.Unlock()
	if err := m.begin(OpTruncate); err != nil {
		return m.op("grow", err)
	}
	defer m.fs.mu.Unlock()
	if size > int64(len(m.n.data)) {
		m.n.change(change{size: size})
	}
	return nil
}

func (m mapped) Size() int64 {
	m.fs.mu.Lock()
	defer m.fs.mu.Unlock()
	return int64(len(m.n.data))
}

func (m mapped) WriteAt(p []byte, off int64) (int, error) {
	if err := m.begin(OpWrite); err != nil {
		return 0, m.op("write", err)
	}
	defer m.fs.mu.Unlock()
	if off < 0 || off+int64(len(p)) > int64(len(m.n.data)) {
		return 0, m.op("write", fmt.Errorf("write of %d bytes at %d beyond the projection's size %d", len(p), off, len(m.n.data)))
	}
	m.n.change(change{off: off, data: slices.Clone(p)})
	return len(p), nil
}
