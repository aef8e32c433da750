package seal

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
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

// Keyring keeps period keys and instance secrets in a KeyStore, each wrapped by the KEK, and caches them
// unwrapped in memory. It is safe for concurrent use, and several Keyrings (several nodes) may share one
// KeyStore: a key created by one is found by the others, and two that create the same key at once end up with
// the same one.
type Keyring struct {
	ks  KeyStore
	kek KEK
	// recheck is how long a cached key is used before the KeyStore is asked again whether it still exists, so
	// that a key destroyed by another node stops being used here within that time.
	recheck time.Duration
	now     func() time.Time

	mu      sync.Mutex
	m       map[string]*cachedPeriod
	secrets map[string][]byte
}

type cachedPeriod struct {
	pk      *PeriodKey
	checked time.Time
}

// keyTimeout bounds each KeyStore call: the Keyring's methods take no context.
const keyTimeout = 30 * time.Second

// DefaultRecheck is how long a Keyring trusts its cache of a period key before it checks that the key was not
// destroyed meanwhile (by another node).
const DefaultRecheck = time.Minute

// OpenKeyring opens (creating if needed) a keyring directory: a Keyring over a FileKeyStore.
func OpenKeyring(dir string, kek KEK) (*Keyring, error) {
	ks, err := NewFileKeyStore(dir)
	if err != nil {
		return nil, err
	}
	return NewKeyring(ks, kek), nil
}

// NewKeyring returns a Keyring keeping its keys in ks, wrapped by kek.
func NewKeyring(ks KeyStore, kek KEK) *Keyring {
	return &Keyring{ks: ks, kek: kek, recheck: DefaultRecheck, now: time.Now, m: map[string]*cachedPeriod{}, secrets: map[string][]byte{}}
}

// SetRecheck sets how long a cached period key is used before the KeyStore is asked again whether it was
// destroyed (default DefaultRecheck; 0 asks every time).
func (k *Keyring) SetRecheck(d time.Duration) {
	k.mu.Lock()
	k.recheck = d
	k.mu.Unlock()
}

// Store is the Keyring's KeyStore.
func (k *Keyring) Store() KeyStore { return k.ks }

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

// Period returns the period key for (system, class, month of t), creating it durably if it does not exist:
// when Period returns, the key is stored, so nothing sealed with it can outlive it by accident. A destroyed
// period is never created again (ErrDestroyed).
func (k *Keyring) Period(system, class string, t time.Time) (*PeriodKey, error) {
	return k.period(PeriodID(system, class, t), true)
}

// Lookup returns an existing period key by id; ErrDestroyed when it was destroyed or never existed.
func (k *Keyring) Lookup(id string) (*PeriodKey, error) {
	return k.period(id, false)
}

func (k *Keyring) period(id string, create bool) (*PeriodKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	c := k.m[id]
	if c != nil && now.Sub(c.checked) < k.recheck {
		return c.pk, nil
	}
	if err := CheckKeyID(id); err != nil || strings.HasPrefix(id, "_secrets/") {
		return nil, fmt.Errorf("bad period key id %q", id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), keyTimeout)
	defer cancel()
	if c != nil {
		// Recheck that the cached key still exists; keep using it if the store cannot say.
		_, err := k.ks.Get(ctx, id)
		switch {
		case err == nil:
			c.checked = now
			return c.pk, nil
		case errors.Is(err, ErrDestroyed), errors.Is(err, ErrNoKey):
			delete(k.m, id)
			return nil, fmt.Errorf("period key %s: %w", id, ErrDestroyed)
		default:
			return c.pk, nil
		}
	}
	key, err := k.unwrapStored(ctx, id, create)
	if errors.Is(err, ErrNoKey) {
		err = fmt.Errorf("period key %s: %w", id, ErrDestroyed)
	}
	if err != nil {
		return nil, err
	}
	defer clear(key)
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	pk := &PeriodKey{ID: id, aead: aead}
	k.m[id] = &cachedPeriod{pk: pk, checked: now}
	return pk, nil
}

// Destroy destroys the period key id in the KeyStore and drops it from this Keyring's cache: every payload
// sealed under it becomes unreadable for good (crypto-shredding), and the period is never created again. Other
// Keyrings over the same KeyStore (other nodes) stop using their cached copy within DefaultRecheck. Destroying
// a key that is already destroyed, or never existed, is not an error.
func (k *Keyring) Destroy(id string) error {
	if err := CheckKeyID(id); err != nil || strings.HasPrefix(id, "_secrets/") {
		return fmt.Errorf("bad period key id %q", id)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), keyTimeout)
	defer cancel()
	if err := k.ks.Destroy(ctx, id); err != nil {
		return fmt.Errorf("destroy period key %s: %w", id, err)
	}
	delete(k.m, id)
	return nil
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
	ctx, cancel := context.WithTimeout(context.Background(), keyTimeout)
	defer cancel()
	key, err := k.unwrapStored(ctx, "_secrets/"+name, true)
	if err != nil {
		return nil, err
	}
	k.secrets[name] = key
	return key, nil
}

// unwrapStored returns the key stored under id, unwrapped; with create, a missing one is made: a new random
// key is wrapped and offered to the KeyStore, and whichever key the store holds afterwards (another node's, if
// it won the race) is the one returned.
func (k *Keyring) unwrapStored(ctx context.Context, id string, create bool) ([]byte, error) {
	w, err := k.ks.Get(ctx, id)
	if errors.Is(err, ErrNoKey) && create {
		key := make([]byte, 32)
		rand.Read(key)
		wrapped, werr := k.kek.Wrap([]byte(id), key)
		clear(key)
		if werr != nil {
			return nil, werr
		}
		w, err = k.ks.Create(ctx, WrappedKey{ID: id, KEK: k.kek.ID(), Wrapped: wrapped})
	}
	if err != nil {
		return nil, err
	}
	key, err := k.kek.Unwrap([]byte(id), w.Wrapped)
	if err != nil {
		return nil, fmt.Errorf("key %s (wrapped by %s): %w", id, w.KEK, err)
	}
	return key, nil
}
