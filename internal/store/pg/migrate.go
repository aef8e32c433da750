package pg

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// ErrSchema: the database's schema is not the version this code needs. Run Migrate (cairn migrate) when it is
// older; upgrade Cairn when it is newer.
var ErrSchema = errors.New("database schema version mismatch")

type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations in order; their versions must run 1, 2, 3, … without a gap.
func migrations() ([]migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, p := range names { // Glob sorts; versions are zero-padded
		base := path.Base(p)
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || len(num) != 4 {
			return nil, fmt.Errorf("migration %s: want NNNN_name.sql", base)
		}
		if v != len(out)+1 {
			return nil, fmt.Errorf("migration %s: version %d, want %d", base, v, len(out)+1)
		}
		b, err := migrationFiles.ReadFile(p)
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: strings.TrimSuffix(base, ".sql"), sql: string(b)})
	}
	return out, nil
}

// SchemaVersion is the schema version this code needs: the number of its last migration.
func SchemaVersion() int {
	ms, err := migrations()
	if err != nil || len(ms) == 0 {
		panic(fmt.Sprintf("pg: embedded migrations: %v", err))
	}
	return ms[len(ms)-1].version
}

const versionTable = "cairn_migrations"

// dbVersion returns the database's schema version: 0 before the first migration.
func dbVersion(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) (int, error) {
	var exists bool
	if err := q.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", versionTable).Scan(&exists); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	if !exists {
		return 0, nil
	}
	var v int
	if err := q.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM "+versionTable).Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return v, nil
}

func checkVersion(ctx context.Context, c *pgx.Conn) error {
	v, err := dbVersion(ctx, c)
	if err != nil {
		return err
	}
	switch want := SchemaVersion(); {
	case v > want:
		return fmt.Errorf("%w: the database is at version %d, newer than this Cairn knows (%d): upgrade Cairn", ErrSchema, v, want)
	case v < want:
		return fmt.Errorf("%w: the database is at version %d, this Cairn needs %d: run cairn migrate", ErrSchema, v, want)
	}
	return nil
}

// Migrate brings the database (in Options.Schema) to this code's schema version, applying each missing
// migration in its own transaction. Several nodes may run it at once: an advisory lock, per schema, lets one
// migrate while the others wait and then find nothing to do. It refuses a database newer than this code.
func Migrate(ctx context.Context, url string, opts Options) error {
	opts.fill()
	cfg, err := poolConfig(url, opts)
	if err != nil {
		return err
	}
	c, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		return fmt.Errorf("connect to postgres: %w", err)
	}
	defer c.Close(context.Background())
	return migrate(ctx, c, opts.Logger)
}

func migrate(ctx context.Context, c *pgx.Conn, logger *slog.Logger) (err error) {
	ms, err := migrations()
	if err != nil {
		return err
	}
	const lockKey = "hashtext('cairn migrate ' || current_schema())"
	if _, err := c.Exec(ctx, "SELECT pg_advisory_lock("+lockKey+")"); err != nil {
		return fmt.Errorf("migrate: lock: %w", err)
	}
	defer func() {
		if _, uerr := c.Exec(context.Background(), "SELECT pg_advisory_unlock("+lockKey+")"); uerr != nil && err == nil {
			err = fmt.Errorf("migrate: unlock: %w", uerr)
		}
	}()
	if _, err := c.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+versionTable+
		" (version integer PRIMARY KEY, name text NOT NULL, applied timestamptz NOT NULL DEFAULT now())"); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	v, err := dbVersion(ctx, c)
	if err != nil {
		return err
	}
	if want := ms[len(ms)-1].version; v > want {
		return fmt.Errorf("%w: the database is at version %d, newer than this Cairn knows (%d): upgrade Cairn", ErrSchema, v, want)
	}
	for _, m := range ms[v:] {
		err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO "+versionTable+" (version, name) VALUES ($1, $2)", m.version, m.name)
			return err
		})
		if err != nil {
			return fmt.Errorf("migrate: apply %s: %w", m.name, err)
		}
		logger.Info("applied database migration", "migration", m.name)
	}
	return nil
}
