package seal

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Destroy destroys a period key (crypto-shredding): it removes the key's wrapped file durably and forgets the
// cached key, so nothing sealed under it can be opened again by this keyring — not even with the KEK, which
// only ever wrapped the key and never derived it. Destroying a key that is already gone is not an error.
//
// Copies of the keyring directory (backups, snapshots) are beyond its reach: keep key material out of data
// backups, or shredding does not reach them.
func (k *Keyring) Destroy(id string) error {
	p, err := k.path(id)
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.m, id)
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("destroy period key %s: %w", id, err)
	}
	d, err := os.Open(filepath.Dir(p))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("destroy period key %s: %w", id, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("destroy period key %s: sync: %w", id, err)
	}
	return nil
}
