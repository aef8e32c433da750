package seal

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/cairn-ai/cairn/internal/atomicfile"
)

// RewrapKeyring re-wraps every key file of the keyring directory dir (period keys and instance secrets) from
// the KEK from to the KEK to, and returns how many files it rewrote. The keys themselves do not change, so
// nothing sealed with them changes either: leaves, envelopes and payloads stay as they are.
//
// It is crash-safe and re-runnable. Every file is first opened and checked — a file already wrapped by to
// (its "kek" field names to, and to opens it) is left alone; every other file must open with from — and only
// when all files open does it write anything, each file replaced atomically. So a wrong from changes nothing,
// and a rotation interrupted half-way is completed by running it again with both KEKs.
func RewrapKeyring(dir string, from, to KEK) (n int, err error) {
	return rewrapKeyring(dir, from, to, true)
}

// CheckRewrap reports whether RewrapKeyring(dir, from, to) would succeed, without writing anything: every key
// file opens with from, or is already wrapped by to.
func CheckRewrap(dir string, from, to KEK) error {
	_, err := rewrapKeyring(dir, from, to, false)
	return err
}

func rewrapKeyring(dir string, from, to KEK, write bool) (n int, err error) {
	if from == nil || to == nil {
		return 0, errors.New("rewrap: both the old and the new key-encryption key are needed")
	}
	if from.ID() == to.ID() {
		return 0, fmt.Errorf("rewrap: the new key-encryption key is the old one (%s)", to.ID())
	}
	type pending struct {
		path, id string
		key      []byte
		mode     fs.FileMode
	}
	var todo []pending
	defer func() {
		for _, p := range todo {
			clear(p.key)
		}
	}()
	// Phase 1: open every key file; write nothing.
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || strings.HasPrefix(d.Name(), ".") || !strings.HasSuffix(d.Name(), ".key") {
			return nil // atomicfile's temporary files start with a dot
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		id := strings.TrimSuffix(filepath.ToSlash(rel), ".key")
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var f keyFile
		if err := json.Unmarshal(b, &f); err != nil || f.ID != id {
			return fmt.Errorf("key file %s is damaged", path)
		}
		w, err := base64.StdEncoding.DecodeString(f.Wrapped)
		if err != nil {
			return fmt.Errorf("key file %s is damaged", path)
		}
		if f.KEK == to.ID() {
			key, err := to.Unwrap([]byte(id), w)
			if err != nil {
				return fmt.Errorf("key %s names the new key-encryption key %s but does not open with it: %w", id, to.ID(), err)
			}
			clear(key)
			return nil
		}
		key, err := from.Unwrap([]byte(id), w)
		if err != nil {
			return fmt.Errorf("key %s (wrapped by %s) does not open with the old key-encryption key %s: %w", id, f.KEK, from.ID(), err)
		}
		mode := fs.FileMode(0o600)
		if fi, err := d.Info(); err == nil {
			mode = fi.Mode().Perm()
		}
		todo = append(todo, pending{path: path, id: id, key: key, mode: mode})
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("rewrap: %w", err)
	}
	if !write {
		return 0, nil
	}
	// Phase 2: replace each file atomically; a crash here leaves every file wrapped by one KEK or the other.
	for _, p := range todo {
		w, err := to.Wrap([]byte(p.id), p.key)
		if err != nil {
			return n, fmt.Errorf("rewrap %s: %w", p.id, err)
		}
		b, _ := json.Marshal(keyFile{ID: p.id, KEK: to.ID(), Wrapped: base64.StdEncoding.EncodeToString(w)})
		if err := atomicfile.Write(p.path, b, p.mode); err != nil {
			return n, fmt.Errorf("rewrap %s: %w", p.id, err)
		}
		n++
	}
	return n, nil
}
