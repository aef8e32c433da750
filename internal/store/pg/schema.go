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
