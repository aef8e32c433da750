package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/cairn-ai/cairn/internal/atomicfile"
	"github.com/cairn-ai/cairn/internal/ledger"
)

// instanceConfig is DIR/cairn.json: what an installation must keep constant for its logs to stay verifiable.
type instanceConfig struct {
	// Origin prefixes every log's checkpoint origin; it must be unique to this installation.
	Origin string `json:"origin"`
}

// paths of an instance's files, with the places keys can be moved to.
type paths struct {
	data       string
	signingKey string // CAIRN_SIGNING_KEY_FILE or --signing-key; default DATA/keys/signing.key
	kek        string // CAIRN_KEK_FILE or --kek; default DATA/keys/kek
}

func (p paths) config() string     { return filepath.Join(p.data, "cairn.json") }
func (p paths) publicKey() string  { return filepath.Join(p.data, "keys", "signing.pub") }
func (p paths) keyring() string    { return filepath.Join(p.data, "keys", "periods") }
func (p paths) tokens() string     { return filepath.Join(p.data, "tokens.json") }
func (p paths) adminToken() string { return filepath.Join(p.data, "admin.token") }
func (p paths) index() string      { return filepath.Join(p.data, "index.db") }
func (p paths) vault() string      { return filepath.Join(p.data, "vault", "vault.db") }

// vaultKeyPath is where the token vault's key is: flag, CAIRN_VAULT_KEY_FILE, or DATA/keys/vault.key.
func (p paths) vaultKeyPath(flagValue string) string {
	switch {
	case flagValue != "":
		return flagValue
	case os.Getenv("CAIRN_VAULT_KEY_FILE") != "":
		return os.Getenv("CAIRN_VAULT_KEY_FILE")
	}
	return filepath.Join(p.data, "keys", "vault.key")
}

func defaultPaths(data, signingKey, kek string) paths {
	if signingKey == "" {
		signingKey = os.Getenv("CAIRN_SIGNING_KEY_FILE")
	}
	if kek == "" {
		kek = os.Getenv("CAIRN_KEK_FILE")
	}
	if signingKey == "" {
		signingKey = filepath.Join(data, "keys", "signing.key")
	}
	if kek == "" {
		kek = filepath.Join(data, "keys", "kek")
	}
	return paths{data: data, signingKey: signingKey, kek: kek}
}

// loadConfig reads the instance configuration; with create, a missing one is written with origin (or a new
// random origin when origin is empty). A different origin than the stored one is refused.
func loadConfig(p paths, origin string, create bool) (instanceConfig, bool, error) {
	var c instanceConfig
	b, err := os.ReadFile(p.config())
	if errors.Is(err, fs.ErrNotExist) {
		if !create {
			return c, false, fmt.Errorf("%s is not a Cairn data directory (no cairn.json)", p.data)
		}
		if origin == "" {
			r := make([]byte, 5)
			rand.Read(r)
			origin = "cairn.local/" + hex.EncodeToString(r)
		}
		if strings.ContainsAny(origin, " \n+") {
			return c, false, errors.New("origin must not contain spaces, newlines or '+'")
		}
		c.Origin = origin
		if err := os.MkdirAll(filepath.Join(p.data, "keys"), 0o700); err != nil {
			return c, false, err
		}
		b, _ := json.MarshalIndent(c, "", "  ")
		return c, true, atomicfile.Write(p.config(), append(b, '\n'), 0o600)
	}
	if err != nil {
		return c, false, err
	}
	if err := json.Unmarshal(b, &c); err != nil || c.Origin == "" {
		return c, false, fmt.Errorf("%s is damaged", p.config())
	}
	if origin != "" && origin != c.Origin {
		return c, false, fmt.Errorf("origin %q differs from this installation's %q; an origin cannot change", origin, c.Origin)
	}
	return c, false, nil
}

// publicKey returns the checkpoint verification key kept beside the data (public, safe to copy anywhere).
func publicKey(p paths) (ed25519.PublicKey, error) { return readPublicKey(p.publicKey()) }

func readPublicKey(path string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read public key: %w", err)
	}
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(k) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%s: not an Ed25519 public key", path)
	}
	return k, nil
}

func writePublicKey(p paths, k ed25519.PublicKey) error {
	return atomicfile.Write(p.publicKey(), []byte(base64.StdEncoding.EncodeToString(k)+"\n"), 0o644)
}

// vkeyFunc returns the verifier key of each system's log.
func vkeyFunc(origin string, pub ed25519.PublicKey) func(string) string {
	return func(system string) string {
		vk, _ := ledger.VerifierKey(origin+"/"+system, pub)
		return vk
	}
}

// lockData takes the data directory's exclusive lock, so a server and an offline tool never share it.
func lockData(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s is in use by another cairn process (stop it, or verify remotely with --url)", dir)
	}
	return func() { f.Close() }, nil
}
