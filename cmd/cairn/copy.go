package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/cairn-ai/cairn/internal/seal"
	"github.com/cairn-ai/cairn/internal/store"
	"github.com/cairn-ai/cairn/internal/store/local"
	"github.com/cairn-ai/cairn/internal/store/pg"
)

func cmdCopy(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("copy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	from := fs.String("from", "", "source: a data directory or postgres://…")
	to := fs.String("to", "", "destination: a data directory or postgres://… (its logs must not exist yet)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *from == "" || *to == "" {
		return fmt.Errorf("--from and --to are required")
	}
	ctx := context.Background()
	src, closeSrc, err := openStore(ctx, *from, true)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	defer closeSrc()
	dst, closeDst, err := openStore(ctx, *to, false)
	if err != nil {
		return fmt.Errorf("destination: %w", err)
	}
	defer closeDst()
	names, err := src.Logs(ctx)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := store.Copy(ctx, src, dst, names, nil); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "copied %d logs in %s; leaves are byte-identical, so every checkpoint stays valid\n", len(names), time.Since(start).Round(time.Millisecond))
	// The keyring goes along, still wrapped by the KEK, so the destination's payloads open with the same KEK.
	srcKeys, err := keyStoreOf(src, *from, true)
	if err != nil || srcKeys == nil {
		return err
	}
	dstKeys, err := keyStoreOf(dst, *to, false)
	if err != nil {
		return err
	}
	n, err := seal.CopyKeys(ctx, srcKeys, dstKeys)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "copied %d key(s), still wrapped by the key-encryption key\n", n)
	return nil
}

// isPostgres reports whether where is a PostgreSQL URL rather than a directory.
func isPostgres(where string) bool {
	return strings.HasPrefix(where, "postgres://") || strings.HasPrefix(where, "postgresql://")
}

// keyStoreOf returns where a store's installation keeps its KEK-wrapped keys: the database's table, or the data
// directory's keyring (nil for a source directory without one).
func keyStoreOf(st store.Store, where string, source bool) (seal.KeyStore, error) {
	if ps, ok := st.(*pg.Store); ok {
		return ps.Keys(), nil
	}
	dir := defaultPaths(where, "", "").keyring()
	if _, err := os.Stat(dir); source && errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return seal.NewFileKeyStore(dir)
}

// openStore opens a data directory's embedded store (locked; read-only for a source) or a PostgreSQL store.
// Every checkpoint of the history is kept on the way in, so a copy loses none.
func openStore(ctx context.Context, where string, source bool) (store.Store, func(), error) {
	if isPostgres(where) {
		st, err := pg.Open(ctx, where, pg.Options{HistoryInterval: time.Microsecond})
		if err != nil {
			return nil, nil, err
		}
		return st, func() { st.Close() }, nil
	}
	if _, _, err := loadConfig(defaultPaths(where, "", ""), "", false); err != nil {
		return nil, nil, err
	}
	unlock, err := lockData(where)
	if err != nil {
		return nil, nil, err
	}
	st, err := local.Open(where, local.Options{ReadOnly: source, HistoryInterval: time.Microsecond})
	if err != nil {
		unlock()
		return nil, nil, err
	}
	return st, func() { st.Close(); unlock() }, nil
}
