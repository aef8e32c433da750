package seal

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/cairn-ai/cairn/internal/atomicfile"
)

// WrappedKey is a key as a KeyStore keeps it: wrapped by a KEK, never in clear.
type WrappedKey struct {
	ID      string // "<system>/<class>/<YYYY-MM>" for a period key, "_secrets/<name>" for an instance secret
	KEK     string // the ID of the KEK that wrapped it
	Wrapped []byte // KEK.Wrap(ID, key)
}

// ErrNoKey means no key was ever stored under an id.
var ErrNoKey = errors.New("no such key")

// KeyStore keeps the keyring's keys, each wrapped by the KEK. It only ever sees wrapped keys. Every Cairn node
// of an installation uses the same KeyStore, so each implementation must be safe for concurrent use by several
// processes: Create is insert-if-absent, so two nodes that create the same key at once agree on one of them.
// Implementations: [FileKeyStore] (a directory) and the PostgreSQL store's (package store/pg).
type KeyStore interface {
	// Get returns the key stored under id: ErrNoKey if none ever was, ErrDestroyed if it was destroyed.
	Get(ctx context.Context, id string) (WrappedKey, error)
	// Create stores w durably unless something is stored under w.ID already, and returns what is stored under
	// the id afterwards: w, or the key another node stored first (ErrDestroyed if that id was destroyed).
	Create(ctx context.Context, w WrappedKey) (WrappedKey, error)
	// Destroy removes the key stored under id durably and for good, leaving a mark that the id was destroyed,
	// so that it is never created again. Destroying a destroyed or missing id is not an error.
	Destroy(ctx context.Context, id string) error
	// List calls fn for every stored (not destroyed) key, in id order.
	List(ctx context.Context, fn func(WrappedKey) error) error
	// Replace stores w in place of the key under w.ID if that key is still wrapped by the KEK named from (as
	// a rotation re-wraps it), atomically; otherwise it changes nothing and returns an error.
	Replace(ctx context.Context, w WrappedKey, from string) error
}

// CheckKeyID reports whether id names a period key or an instance secret.
func CheckKeyID(id string) error {
	parts := strings.Split(id, "/")
	switch {
	case len(parts) == 2 && parts[0] == "_secrets" && slug.MatchString(parts[1]):
		return nil
	case len(parts) == 3 && slug.MatchString(parts[0]) && slug.MatchString(parts[1]):
		if _, err := time.Parse("2006-01", parts[2]); err == nil {
			return nil
		}
	}
	return fmt.Errorf("bad key id %q", id)
}

// FileKeyStore keeps each key in its own file under a directory: DIR/<system>/<class>/<YYYY-MM>.key and
// DIR/_secrets/<name>.key, JSON {"id","kek","wrapped"} (a destroyed key: {"id","destroyed"}). Several processes
// may share the directory (a shared file system): a new file is linked into place, never renamed over another.
type FileKeyStore struct{ dir string }

// NewFileKeyStore opens (creating if needed) a keyring directory.
func NewFileKeyStore(dir string) (*FileKeyStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	return &FileKeyStore{dir: dir}, nil
}

// Dir is the store's directory.
func (s *FileKeyStore) Dir() string { return s.dir }

type keyFile struct {
	ID        string     `json:"id"`
	KEK       string     `json:"kek,omitempty"`
	Wrapped   string     `json:"wrapped,omitempty"`
	Destroyed *time.Time `json:"destroyed,omitempty"`
}

func (s *FileKeyStore) path(id string) (string, error) {
	if err := CheckKeyID(id); err != nil {
		return "", err
	}
	return filepath.Join(s.dir, filepath.FromSlash(id)+".key"), nil
}

// read parses the key file at path, which must hold id.
func readKeyFile(path, id string) (WrappedKey, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return WrappedKey{}, fmt.Errorf("key %s: %w", id, ErrNoKey)
	}
	if err != nil {
		return WrappedKey{}, err
	}
	var f keyFile
	if err := json.Unmarshal(b, &f); err != nil || f.ID != id {
		return WrappedKey{}, fmt.Errorf("key file %s is damaged", path)
	}
	if f.Destroyed != nil {
		return WrappedKey{}, fmt.Errorf("key %s: %w", id, ErrDestroyed)
	}
	w, err := base64.StdEncoding.DecodeString(f.Wrapped)
	if err != nil || f.KEK == "" {
		return WrappedKey{}, fmt.Errorf("key file %s is damaged", path)
	}
	return WrappedKey{ID: id, KEK: f.KEK, Wrapped: w}, nil
}

func (s *FileKeyStore) Get(ctx context.Context, id string) (WrappedKey, error) {
	p, err := s.path(id)
	if err != nil {
		return WrappedKey{}, err
	}
	return readKeyFile(p, id)
}

func encodeKeyFile(w WrappedKey) []byte {
	b, _ := json.Marshal(keyFile{ID: w.ID, KEK: w.KEK, Wrapped: base64.StdEncoding.EncodeToString(w.Wrapped)})
	return b
}

func (s *FileKeyStore) Create(ctx context.Context, w WrappedKey) (WrappedKey, error) {
	p, err := s.path(w.ID)
	if err != nil {
		return WrappedKey{}, err
	}
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return WrappedKey{}, err
	}
	// A complete, synced temporary file is linked into place: link fails if another process got there first.
	tmp, err := os.CreateTemp(dir, ".new-*")
	if err != nil {
		return WrappedKey{}, fmt.Errorf("create key %s: %w", w.ID, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(encodeKeyFile(w))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return WrappedKey{}, fmt.Errorf("create key %s: %w", w.ID, err)
	}
	if err := os.Link(tmp.Name(), p); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return readKeyFile(p, w.ID)
		}
		return WrappedKey{}, fmt.Errorf("create key %s: %w", w.ID, err)
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return WrappedKey{}, fmt.Errorf("create key %s: %w", w.ID, err)
	}
	return w, nil
}

func (s *FileKeyStore) Destroy(ctx context.Context, id string) error {
	p, err := s.path(id)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	now := time.Now().UTC().Truncate(time.Second)
	b, _ := json.Marshal(keyFile{ID: id, Destroyed: &now})
	// atomicfile renames over the key file, so the wrapped key is gone from the directory once this returns.
	if err := atomicfile.Write(p, b, 0o600); err != nil {
		return fmt.Errorf("destroy key %s: %w", id, err)
	}
	return nil
}

func (s *FileKeyStore) List(ctx context.Context, fn func(WrappedKey) error) error {
	var ids []string
	err := filepath.WalkDir(s.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || strings.HasPrefix(d.Name(), ".") || !strings.HasSuffix(d.Name(), ".key") {
			return nil // temporary files start with a dot
		}
		rel, err := filepath.Rel(s.dir, path)
		if err != nil {
			return err
		}
		ids = append(ids, strings.TrimSuffix(filepath.ToSlash(rel), ".key"))
		return nil
	})
	if err != nil {
		return fmt.Errorf("list keys: %w", err)
	}
	sort.Strings(ids)
	for _, id := range ids {
		w, err := s.Get(ctx, id)
		if errors.Is(err, ErrDestroyed) {
			continue
		}
		if err != nil {
			return err
		}
		if err := fn(w); err != nil {
			return err
		}
	}
	return nil
}

func (s *FileKeyStore) Replace(ctx context.Context, w WrappedKey, from string) error {
	p, err := s.path(w.ID)
	if err != nil {
		return err
	}
	cur, err := readKeyFile(p, w.ID)
	if err != nil {
		return err
	}
	if cur.KEK != from {
		return fmt.Errorf("replace key %s: wrapped by %s, not %s", w.ID, cur.KEK, from)
	}
	mode := fs.FileMode(0o600)
	if fi, err := os.Stat(p); err == nil {
		mode = fi.Mode().Perm()
	}
	if err := atomicfile.Write(p, encodeKeyFile(w), mode); err != nil {
		return fmt.Errorf("replace key %s: %w", w.ID, err)
	}
	return nil
}

// CopyKeys copies every stored key of src into dst as it is, still wrapped by its KEK (nothing is unwrapped), and
// returns how many it copied. A key dst holds already must be the same key, wrapped the same way.
func CopyKeys(ctx context.Context, src, dst KeyStore) (int, error) {
	n := 0
	err := src.List(ctx, func(w WrappedKey) error {
		got, err := dst.Create(ctx, w)
		if err != nil {
			return fmt.Errorf("copy key %s: %w", w.ID, err)
		}
		if got.KEK != w.KEK || string(got.Wrapped) != string(w.Wrapped) {
			return fmt.Errorf("copy key %s: the destination holds a different key under that id", w.ID)
		}
		n++
		return nil
	})
	return n, err
}
