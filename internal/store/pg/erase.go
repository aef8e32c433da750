package pg

import (
	"context"
	"fmt"

	"github.com/cairn-ai/cairn/internal/store"
)

// Erase implements store.Log: one UPDATE per chunk of indexes sets the envelope, sealed payload and content key
// to NULL and the salt to zeros. PostgreSQL keeps the old row versions until VACUUM reclaims them (and in WAL and
// backups until those expire): run VACUUM on the entries table after retention to drop them from the heap.
func (l *Log) Erase(ctx context.Context, indexes []uint64) error {
	n := l.Size()
	const chunk = 10000
	for len(indexes) > 0 {
		k := min(chunk, len(indexes))
		idx := make([]int64, k)
		for i, x := range indexes[:k] {
			if x >= n {
				return fmt.Errorf("erase entry %d of %s: %w", x, l.name, store.ErrNotFound)
			}
			idx[i] = int64(x)
		}
		_, err := l.s.pool.Exec(ctx, `UPDATE entries SET envelope = NULL, sealed = NULL, content_key = NULL,
			salt = '\x00000000000000000000000000000000'::bytea
			WHERE log = $1 AND idx = ANY($2) AND (envelope IS NOT NULL OR sealed IS NOT NULL OR content_key IS NOT NULL)`, l.id, idx)
		if err != nil {
			return fmt.Errorf("erase entries of %s: %w", l.name, err)
		}
		indexes = indexes[k:]
	}
	return nil
}

// ReplaceSealed implements store.Log.
func (l *Log) ReplaceSealed(ctx context.Context, index uint64, sealed []byte) error {
	tag, err := l.s.pool.Exec(ctx, `UPDATE entries SET sealed = $3::bytea WHERE log = $1 AND idx = $2 AND sealed IS NOT NULL AND length(sealed) = length($3::bytea)`,
		l.id, int64(index), sealed)
	if err != nil {
		return fmt.Errorf("replace sealed payload of %s[%d]: %w", l.name, index, err)
	}
	if tag.RowsAffected() == 0 {
		e, err := l.Entry(ctx, index)
		if err != nil {
			return err
		}
		if e.Sealed == nil {
			return fmt.Errorf("entry %d has no sealed payload: %w", index, store.ErrNotFound)
		}
		return fmt.Errorf("replace sealed payload of %s[%d]: %d bytes, the stored one has %d", l.name, index, len(sealed), len(e.Sealed))
	}
	return nil
}
