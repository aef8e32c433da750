package pg

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/cairn-ai/cairn/internal/store"
)

// SetBeforeCommit makes Append run f inside its transaction just before COMMIT.
func SetBeforeCommit(s *Store, f func(ctx context.Context, tx pgx.Tx) error) { s.beforeCommit = f }

// ResolveCommit is what Append does after COMMIT failed with err.
func ResolveCommit(l store.Log, b *store.Batch, err error) error {
	return l.(*Log).resolveCommit(b, err)
}

var Migrations = migrations
