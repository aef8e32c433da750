package seal

import (
	"context"
	"errors"
	"fmt"
)

// RewrapKeyring re-wraps every key of the keyring directory dir (period keys and instance secrets) from the KEK
// from to the KEK to, and returns how many it rewrote; see RewrapStore.
func RewrapKeyring(dir string, from, to KEK) (n int, err error) {
	ks, err := NewFileKeyStore(dir)
	if err != nil {
		return 0, err
	}
	return RewrapStore(context.Background(), ks, from, to)
}

// CheckRewrap reports whether RewrapKeyring(dir, from, to) would succeed, without writing anything.
func CheckRewrap(dir string, from, to KEK) error {
	ks, err := NewFileKeyStore(dir)
	if err != nil {
		return err
	}
	return CheckRewrapStore(context.Background(), ks, from, to)
}

// RewrapStore re-wraps every key of ks (period keys and instance secrets) from the KEK from to the KEK to, and
// returns how many it rewrote. The keys themselves do not change, so nothing sealed with them changes either:
// leaves, envelopes and payloads stay as they are.
//
// It is crash-safe and re-runnable. Every key is first opened and checked — a key already wrapped by to (it
// names to, and to opens it) is left alone; every other key must open with from — and only when all keys open
// does it write anything, each key replaced atomically (KeyStore.Replace). So a wrong from changes nothing,
// and a rotation interrupted half-way is completed by running it again with both KEKs.
func RewrapStore(ctx context.Context, ks KeyStore, from, to KEK) (int, error) {
	return rewrap(ctx, ks, from, to, true)
}

// CheckRewrapStore reports whether RewrapStore(ctx, ks, from, to) would succeed, without writing anything: every key
// opens with from, or is already wrapped by to.
func CheckRewrapStore(ctx context.Context, ks KeyStore, from, to KEK) error {
	_, err := rewrap(ctx, ks, from, to, false)
	return err
}

// WrapsAny reports whether some key of ks names the KEK id.
func WrapsAny(ctx context.Context, ks KeyStore, id string) (bool, error) {
	errFound := errors.New("found")
	err := ks.List(ctx, func(w WrappedKey) error {
		if w.KEK == id {
			return errFound
		}
		return nil
	})
	if errors.Is(err, errFound) {
		return true, nil
	}
	return false, err
}

func rewrap(ctx context.Context, ks KeyStore, from, to KEK, write bool) (n int, err error) {
	if from == nil || to == nil {
		return 0, errors.New("rewrap: both the old and the new key-encryption key are needed")
	}
	if from.ID() == to.ID() {
		return 0, fmt.Errorf("rewrap: the new key-encryption key is the old one (%s)", to.ID())
	}
	type pending struct {
		id, kek string
		key     []byte
	}
	var todo []pending
	defer func() {
		for _, p := range todo {
			clear(p.key)
		}
	}()
	// Phase 1: open every key; write nothing.
	err = ks.List(ctx, func(w WrappedKey) error {
		if w.KEK == to.ID() {
			key, err := to.Unwrap([]byte(w.ID), w.Wrapped)
			if err != nil {
				return fmt.Errorf("key %s names the new key-encryption key %s but does not open with it: %w", w.ID, to.ID(), err)
			}
			clear(key)
			return nil
		}
		key, err := from.Unwrap([]byte(w.ID), w.Wrapped)
		if err != nil {
			return fmt.Errorf("key %s (wrapped by %s) does not open with the old key-encryption key %s: %w", w.ID, w.KEK, from.ID(), err)
		}
		todo = append(todo, pending{id: w.ID, kek: w.KEK, key: key})
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("rewrap: %w", err)
	}
	if !write {
		return 0, nil
	}
	// Phase 2: replace each key atomically; a crash here leaves every key wrapped by one KEK or the other.
	for _, p := range todo {
		w, err := to.Wrap([]byte(p.id), p.key)
		if err != nil {
			return n, fmt.Errorf("rewrap %s: %w", p.id, err)
		}
		if err := ks.Replace(ctx, WrappedKey{ID: p.id, KEK: to.ID(), Wrapped: w}, p.kek); err != nil {
			return n, fmt.Errorf("rewrap %s: %w", p.id, err)
		}
		n++
	}
	return n, nil
}
