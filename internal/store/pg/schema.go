package pg

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// CreateSchema creates an empty schema called name in the database at url, for a store kept apart from others in
// one database (Options.Schema). Benchmarks and tests use it for throw-away stores.
func CreateSchema(ctx context.Context, url, name string) error {
	return execOnce(ctx, url, "CREATE SCHEMA "+pgx.Identifier{name}.Sanitize())
}

// DropSchema drops the schema called name and everything in it: every log, entry and key of that store.
func DropSchema(ctx context.Context, url, name string) error {
	return execOnce(ctx, url, "DROP SCHEMA IF EXISTS "+pgx.Identifier{name}.Sanitize()+" CASCADE")
}

func execOnce(ctx context.Context, url, sql string) error {
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("connect to postgres: %w", err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, sql); err != nil {
		return err
	}
	return nil
}

// DiskUsage is the bytes the store's tables and their indexes (and TOAST) take in its schema.
func (s *Store) DiskUsage(ctx context.Context) (int64, error) {
	var n int64
	err := s.pool.QueryRow(ctx, `SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
		JOIN pg_namespace ns ON ns.oid = c.relnamespace WHERE ns.nspname = current_schema() AND c.relkind = 'r'`).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("disk usage: %w", err)
	}
	return n, nil
}

// WALPosition is the server's current write-ahead log position in bytes: the difference between two readings
// is the WAL the whole server wrote in between (every database on it, not only this store).
func (s *Store) WALPosition(ctx context.Context) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint").Scan(&n); err != nil {
		return 0, fmt.Errorf("wal position: %w", err)
	}
	return n, nil
}
