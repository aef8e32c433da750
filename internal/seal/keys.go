package seal

import (
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/cairn-ai/cairn/internal/atomicfile"
)

// KEK is a key-encryption key: it wraps period keys. A file KEK is built in; an external KMS can implement it.
type KEK interface {
	// ID names the KEK (never the key itself), so a wrapped key says which KEK opens it.
	ID() string
	Wrap(aad, key []byte) ([]byte, error)
	Unwrap(aad, wrapped []byte) ([]byte, error)
}

// FileKEK is a KEK held in a file of 32 random bytes (base64).
type FileKEK struct {
	id   string
	aead cipher.AEAD
}

// LoadKEK reads a KEK file. With create, a missing file is made with a new random key (mode 0600) and
// created reports so.
func LoadKEK(path string, create bool) (k *FileKEK, created bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && create {
		key := make([]byte, 32)
		rand.Read(key)
		if err := atomicfile.Write(path, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
			return nil, false, fmt.Errorf("create key-encryption key: %w", err)
		}
		k, err := NewKEK(key)
		return k, true, err
	}
	if err != nil {
		return nil, false, fmt.Errorf("read key-encryption key: %w", err)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) != 32 {
		return nil, false, fmt.Errorf("key-encryption key %s: want 32 bytes in base64", path)
	}
	k, err = NewKEK(key)
	return k, false, err
}

// NewKEK makes a KEK from 32 bytes of key.
func NewKEK(key []byte) (*FileKEK, error) {
	if len(key) != 32 {
		return nil, errors.New("key-encryption key must be 32 bytes")
	}
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	h := sha256.Sum256(append([]byte("cairn/v1/kek-id\x00"), key...))
	return &FileKEK{id: "kek-" + hex.EncodeToString(h[:6]), aead: aead}, nil
}

func (k *FileKEK) ID() string { return k.id }
func (k *FileKEK) Wrap(aad, key []byte) ([]byte, error) {
	return wrapWith(nil, k.aead, aad, key), nil
}
func (k *FileKEK) Unwrap(aad, wrapped []byte) ([]byte, error) {
	out, err := unwrapWith(k.aead, aad, wrapped)
	if err != nil {
		return nil, fmt.Errorf("unwrap with %s: %w", k.id, ErrOpen)
	}
	return out, nil
}

// PeriodKey wraps the data keys of one system's events of one retention class recorded in one month.
type PeriodKey struct {
	ID   string // "<system>/<class>/<YYYY-MM>"
	aead cipher.AEAD
}

func (p *PeriodKey) wrap(dst, eventID, dk []byte) ([]byte, error) {
	return wrapWith(dst, p.aead, eventID, dk), nil
}

func (p *PeriodKey) unwrap(eventID, wrapped []byte) ([]byte, error) {
	return unwrapWith(p.aead, eventID, wrapped)
}

// ErrDestroyed means a period key was destroyed: the payloads it wrapped are gone for good.
var ErrDestroyed = errors.New("period key destroyed")

// Keyring keeps period keys, each in its own file wrapped by the KEK. It is safe for concurrent use.
type Keyring struct {
	dir     string
	kek     KEK
	mu      sync.Mutex
	m       map[string]*PeriodKey
	secrets map[string][]byte
}

// OpenKeyring opens (creating if needed) a keyring directory.
func OpenKeyring(dir string, kek KEK) (*Keyring, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	return &Keyring{dir: dir, kek: kek, m: map[string]*PeriodKey{}, secrets: map[string][]byte{}}, nil
}

var slug = regexp.MustCompile(`^[a-z0-9_][a-z0-9_-]{0,63}$`)

// PeriodID names the period key of a system, class and month (UTC).
func PeriodID(system, class string, t time.Time) string {
	return system + "/" + class + "/" + t.UTC().Format("2006-01")
}

// Month returns the month part of a period key id.
func Month(id string) string {
	if i := strings.LastIndexByte(id, '/'); i >= 0 {
		return id[i+1:]
	}
	return ""
}

type keyFile struct {
	ID      string `json:"id"`
	KEK     string `json:"kek"`
	Wrapped string `json:"wrapped"`
}

// Period returns the period key for (system, class, month of t), creating it durably if it does not exist:
// when Period returns, the key is on disk, so nothing sealed with it can outlive it by accident.
func (k *Keyring) Period(system, class string, t time.Time) (*PeriodKey, error) {
	id := PeriodID(system, class, t)
	k.mu.Lock()
	defer k.mu.Unlock()
	if pk := k.m[id]; pk != nil {
		return pk, nil
	}
	pk, err := k.load(id)
	if errors.Is(err, fs.ErrNotExist) {
		pk, err = k.create(id)
	}
	if err != nil {
		return nil, err
	}
	k.m[id] = pk
	return pk, nil
}

// Lookup returns an existing period key by id.
func (k *Keyring) Lookup(id string) (*PeriodKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if pk := k.m[id]; pk != nil {
		return pk, nil
	}
	pk, err := k.load(id)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("period key %s: %w", id, ErrDestroyed)
	}
	if err != nil {
		return nil, err
	}
	k.m[id] = pk
	return pk, nil
}

func (k *Keyring) path(id string) (string, error) {
	parts := strings.Split(id, "/")
	if len(parts) != 3 || !slug.MatchString(parts[0]) || !slug.MatchString(parts[1]) {
		return "", fmt.Errorf("bad period key id %q", id)
	}
	if _, err := time.Parse("2006-01", parts[2]); err != nil {
		return "", fmt.Errorf("bad period key id %q", id)
	}
	return filepath.Join(k.dir, parts[0], parts[1], parts[2]+".key"), nil
}

func (k *Keyring) load(id string) (*PeriodKey, error) {
	p, err := k.path(id)
	if err != nil {
		return nil, err
	}
	key, err := k.readWrapped(p, id)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	return &PeriodKey{ID: id, aead: aead}, nil
}

func (k *Keyring) create(id string) (*PeriodKey, error) {
	p, err := k.path(id)
	if err != nil {
		return nil, err
	}
	key, err := k.writeWrapped(p, id)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	return &PeriodKey{ID: id, aead: aead}, nil
}

// Secret returns a named instance secret (32 bytes), creating it if absent. It is stored wrapped by the KEK
// like a period key. Used for keyed digests, such as the idempotency digest of client content.
func (k *Keyring) Secret(name string) ([]byte, error) {
	if !slug.MatchString(name) {
		return nil, fmt.Errorf("bad secret name %q", name)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if key, ok := k.secrets[name]; ok {
		return key, nil
	}
	p := filepath.Join(k.dir, "_secrets", name+".key")
	id := "_secrets/" + name
	key, err := k.readWrapped(p, id)
	if errors.Is(err, fs.ErrNotExist) {
		key, err = k.writeWrapped(p, id)
	}
	if err != nil {
		return nil, err
	}
	k.secrets[name] = key
	return key, nil
}

// readWrapped reads a key file and unwraps its key with the KEK; the key file's id must be id.
func (k *Keyring) readWrapped(path, id string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f keyFile
	if err := json.Unmarshal(b, &f); err != nil || f.ID != id {
		return nil, fmt.Errorf("key file %s is damaged", path)
	}
	w, err := base64.StdEncoding.DecodeString(f.Wrapped)
	if err != nil {
		return nil, fmt.Errorf("key file %s is damaged", path)
	}
	key, err := k.kek.Unwrap([]byte(id), w)
	if err != nil {
		return nil, fmt.Errorf("key %s (wrapped by %s): %w", id, f.KEK, err)
	}
	return key, nil
}

// writeWrapped makes a new random key, stores it wrapped by the KEK durably at path, and returns it.
func (k *Keyring) writeWrapped(path, id string) ([]byte, error) {
	key := make([]byte, 32)
	rand.Read(key)
	w, err := k.kek.Wrap([]byte(id), key)
	if err != nil {
		return nil, err
	}
	b, _ := json.Marshal(keyFile{ID: id, KEK: k.kek.ID(), Wrapped: base64.StdEncoding.EncodeToString(w)})
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if err := atomicfile.Write(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("create key %s: %w", id, err)
	}
	return key, nil
}
