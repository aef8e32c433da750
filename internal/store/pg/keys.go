package pg

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/cairn-ai/cairn/internal/seal"
)

// KeyStore keeps a keyring's keys in the database (table wrapped_keys), wrapped by the KEK, so that several
// nodes share period keys and instance secrets without a shared file system. It implements seal.KeyStore; it
// only ever sees wrapped keys. Create is INSERT … ON CONFLICT DO NOTHING followed by a read of the row, so two
// nodes creating the same key at once agree on the one that was inserted first.
type KeyStore struct{ s *Store }

// Keys returns the store's KeyStore, which shares its connection pool.
func (s *Store) Keys() *KeyStore { return &KeyStore{s: s} }

var _ seal.KeyStore = (*KeyStore)(nil)

func (k *KeyStore) Get(ctx context.Context, id string) (seal.WrappedKey, error) {
	if err := seal.CheckKeyID(id); err != nil {
		return seal.WrappedKey{}, err
	}
	return k.get(ctx, k.s.pool, id)
}

func (k *KeyStore) get(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, id string) (seal.WrappedKey, error) {
	var (
		kek     *string
		wrapped []byte
	)
	err := q.QueryRow(ctx, "SELECT kek, wrapped FROM wrapped_keys WHERE id = $1", id).Scan(&kek, &wrapped)
	if errors.Is(err, pgx.ErrNoRows) {
		return seal.WrappedKey{}, fmt.Errorf("key %s: %w", id, seal.ErrNoKey)
	}
	if err != nil {
		return seal.WrappedKey{}, fmt.Errorf("read key %s: %w", id, err)
	}
	if kek == nil || wrapped == nil {
		return seal.WrappedKey{}, fmt.Errorf("key %s: %w", id, seal.ErrDestroyed)
	}
	return seal.WrappedKey{ID: id, KEK: *kek, Wrapped: wrapped}, nil
}

func (k *KeyStore) Create(ctx context.Context, w seal.WrappedKey) (seal.WrappedKey, error) {
	if err := seal.CheckKeyID(w.ID); err != nil {
		return seal.WrappedKey{}, err
	}
	if w.KEK == "" || len(w.Wrapped) == 0 {
		return seal.WrappedKey{}, fmt.Errorf("create key %s: no wrapped key", w.ID)
	}
	// Committed (synchronous_commit on) before it returns, like an appended batch; the read that follows sees
	// either this row or the one a racing node committed first.
	if _, err := k.s.pool.Exec(ctx, "INSERT INTO wrapped_keys (id, kek, wrapped) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
		w.ID, w.KEK, w.Wrapped); err != nil {
		return seal.WrappedKey{}, fmt.Errorf("create key %s: %w", w.ID, err)
	}
	return k.get(ctx, k.s.pool, w.ID)
}

func (k *KeyStore) Destroy(ctx context.Context, id string) error {
	if err := seal.CheckKeyID(id); err != nil {
		return err
	}
	_, err := k.s.pool.Exec(ctx, `INSERT INTO wrapped_keys (id, kek, wrapped, destroyed) VALUES ($1, NULL, NULL, now())
		ON CONFLICT (id) DO UPDATE SET kek = NULL, wrapped = NULL, destroyed = coalesce(wrapped_keys.destroyed, now())`, id)
	if err != nil {
		return fmt.Errorf("destroy key %s: %w", id, err)
	}
	return nil
}

func (k *KeyStore) List(ctx context.Context, fn func(seal.WrappedKey) error) error {
	// Keys are few (systems × classes × months); read them all, then call fn holding no connection.
	rows, err := k.s.pool.Query(ctx, "SELECT id, kek, wrapped FROM wrapped_keys WHERE wrapped IS NOT NULL ORDER BY id COLLATE \"C\"")
	if err != nil {
		return fmt.Errorf("list keys: %w", err)
	}
	ws, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (seal.WrappedKey, error) {
		var w seal.WrappedKey
		err := r.Scan(&w.ID, &w.KEK, &w.Wrapped)
		return w, err
	})
	if err != nil {
		return fmt.Errorf("list keys: %w", err)
	}
	for _, w := range ws {
		if err := fn(w); err != nil {
			return err
		}
	}
	return nil
}

func (k *KeyStore) Replace(ctx context.Context, w seal.WrappedKey, from string) error {
	if err := seal.CheckKeyID(w.ID); err != nil {
		return err
	}
	tag, err := k.s.pool.Exec(ctx, "UPDATE wrapped_keys SET kek = $2, wrapped = $3 WHERE id = $1 AND kek = $4 AND wrapped IS NOT NULL",
		w.ID, w.KEK, w.Wrapped, from)
	if err != nil {
		return fmt.Errorf("replace key %s: %w", w.ID, err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("replace key %s: not stored, or not wrapped by %s", w.ID, from)
	}
	return nil
}

// Empty reports whether the table holds no key at all, destroyed ones included.
func (k *KeyStore) Empty(ctx context.Context) (bool, error) {
	var any bool
	if err := k.s.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM wrapped_keys)").Scan(&any); err != nil {
		return false, fmt.Errorf("read keys: %w", err)
	}
	return !any, nil
}
