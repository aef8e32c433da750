package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cairn-ai/cairn/internal/atomicfile"
	"github.com/cairn-ai/cairn/internal/seal"
	"github.com/cairn-ai/cairn/internal/store"
	"github.com/cairn-ai/cairn/internal/store/pg"
)

const keysUsage = `usage: cairn keys rotate --data DIR [--kek OLD] --new-kek NEW [--keyring DIR | --store postgres://…]
       cairn keys copy --from KEYRING-DIR|postgres://… --to KEYRING-DIR|postgres://…`

// cmdKeys administers the keys of a stopped instance.
func cmdKeys(args []string, stdout, stderr io.Writer) error {
	switch {
	case len(args) > 0 && args[0] == "rotate":
		return keysRotate(args[1:], stdout, stderr)
	case len(args) > 0 && args[0] == "rotate-signing":
		return keysRotateSigning(args[1:], stdout, stderr)
	case len(args) > 0 && args[0] == "copy":
		return keysCopy(args[1:], stdout, stderr)
	}
	fmt.Fprintln(stderr, keysUsage)
	fmt.Fprintln(stderr, rotateSigningUsage)
	return errUsage
}

// keysCopy copies the KEK-wrapped keys from a keyring directory or a PostgreSQL store to another, as they are:
// nothing is unwrapped, so it needs no KEK. It moves the keys of nodes that shared a keyring directory into
// their database (and back).
func keysCopy(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("keys copy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	from := fs.String("from", "", "source: a keyring directory (e.g. DATA/keys/periods) or postgres://…")
	to := fs.String("to", "", "destination: a keyring directory or postgres://…")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *from == "" || *to == "" || fs.NArg() != 0 {
		fmt.Fprintln(stderr, keysUsage)
		return errUsage
	}
	ctx := context.Background()
	open := func(where string, source bool) (seal.KeyStore, func(), error) {
		if isPostgres(where) {
			st, err := pg.Open(ctx, where, pg.Options{})
			if err != nil {
				return nil, nil, err
			}
			return st.Keys(), func() { st.Close() }, nil
		}
		if _, err := os.Stat(where); source && err != nil {
			return nil, nil, fmt.Errorf("keyring: %w", err)
		}
		ks, err := seal.NewFileKeyStore(where)
		return ks, func() {}, err
	}
	src, closeSrc, err := open(*from, true)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	defer closeSrc()
	dst, closeDst, err := open(*to, false)
	if err != nil {
		return fmt.Errorf("destination: %w", err)
	}
	defer closeDst()
	n, err := seal.CopyKeys(ctx, src, dst)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "copied %d key(s), still wrapped by the key-encryption key\n", n)
	return nil
}

// checkKeysMoved refuses to serve a database that holds events but no keys: its keys are still in a keyring
// directory (nodes before keys moved into the database shared one). Serving it would make new instance secrets
// (other pseudonyms, other idempotency digests) and leave the earlier payloads unopenable.
func checkKeysMoved(ctx context.Context, st store.Store, ks *pg.KeyStore) error {
	if empty, err := ks.Empty(ctx); err != nil || !empty {
		return err
	}
	names, err := st.Logs(ctx)
	if err != nil {
		return err
	}
	for _, name := range names {
		lg, err := st.Open(ctx, name)
		if err != nil {
			return err
		}
		if lg.Size() > 0 {
			return fmt.Errorf("the database holds events but no keys: they are in a keyring directory; copy them in with 'cairn keys copy --from DIR --to postgres://…' (DIR as --keyring was, e.g. DATA/keys/periods), or start with --keyring DIR")
		}
	}
	return nil
}

// keysRotate makes a new key-encryption key and re-wraps every key of the keyring under it. Leaves, envelopes
// and payloads are untouched: only the KEK-wrapped key files change, each atomically, so an interrupted
// rotation is completed by running the same command again with both KEK files present.
func keysRotate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("keys rotate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "", "data directory (the server must be stopped)")
	kekPath := fs.String("kek", "", "current key-encryption key file (env CAIRN_KEK_FILE; default DATA/keys/kek)")
	newKEK := fs.String("new-kek", "", "file to create the new key-encryption key in (must not exist, unless completing an interrupted rotation)")
	keyringDir := fs.String("keyring", os.Getenv("CAIRN_KEYRING"), "directory of the KEK-wrapped keys (env CAIRN_KEYRING; default DATA/keys/periods)")
	storeURL := fs.String("store", os.Getenv("CAIRN_STORE"), "rotate the keys kept in this PostgreSQL store (postgres://…; env CAIRN_STORE) instead of a keyring directory; stop every node first")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *data == "" || *newKEK == "" || fs.NArg() != 0 {
		fmt.Fprintln(stderr, keysUsage)
		return errUsage
	}
	abs, err := filepath.Abs(*data)
	if err != nil {
		return err
	}
	p := defaultPaths(abs, "", *kekPath)
	if _, _, err := loadConfig(p, "", false); err != nil {
		return err
	}
	unlock, err := lockData(abs)
	if err != nil {
		return err
	}
	defer unlock()
	var (
		ks    seal.KeyStore
		where string
	)
	switch {
	case *storeURL != "" && *keyringDir == "":
		st, err := pg.Open(context.Background(), *storeURL, pg.Options{})
		if err != nil {
			return err
		}
		defer st.Close()
		ks, where = st.Keys(), "the database"
	default:
		kr := p.keyring()
		if *keyringDir != "" {
			kr = *keyringDir
		}
		if _, err := os.Stat(kr); err != nil {
			return fmt.Errorf("keyring: %w", err)
		}
		if ks, err = seal.NewFileKeyStore(kr); err != nil {
			return err
		}
		where = kr
	}
	oldAbs, _ := filepath.Abs(p.kek)
	newAbs, _ := filepath.Abs(*newKEK)
	if oldAbs == newAbs {
		return errors.New("--new-kek must name a new file, not the current KEK")
	}
	old, _, err := seal.LoadKEK(p.kek, false)
	if err != nil {
		return err
	}
	ctx := context.Background()
	next, key, err := loadNewKEK(ctx, *newKEK, ks)
	if err != nil {
		return err
	}
	defer clear(key)
	// Check that the old KEK opens every key before making anything, so a wrong --kek leaves no trace.
	if err := seal.CheckRewrapStore(ctx, ks, old, next); err != nil {
		return err
	}
	if key != nil {
		// The new KEK is on disk before any key is wrapped by it.
		if err := writeKEKFile(*newKEK, key); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "created key-encryption key: %s (%s)\n", *newKEK, next.ID())
	} else {
		fmt.Fprintf(stdout, "completing the rotation to %s (%s)\n", *newKEK, next.ID())
	}
	n, err := seal.RewrapStore(ctx, ks, old, next)
	if err != nil {
		return fmt.Errorf("%w (nothing is lost: run the same command again to finish; both KEK files are still needed)", err)
	}
	fmt.Fprintf(stdout, "rewrapped %d key(s) from %s to %s in %s\n", n, old.ID(), next.ID(), where)
	if n > 0 || key != nil {
		if err := queueAdmin(p, cliActor(), map[string]any{"action": "kek_rotated", "kek_id": next.ID(), "count": n}); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "next: point --kek (or CAIRN_KEK_FILE) at %s, check with 'cairn verify --data %s --decrypt --kek %s' and start the server with it; then delete the old KEK %s and every copy of it\n",
		*newKEK, *data, *newKEK, p.kek)
	return nil
}

// loadNewKEK returns the new KEK: a fresh one (with its key, to be written to path) when path does not exist, or
// the one in path when it is the new KEK of an interrupted rotation (some key of the keyring is already wrapped
// by it). Any other existing file is refused: a KEK file is never overwritten.
func loadNewKEK(ctx context.Context, path string, ks seal.KeyStore) (seal.KEK, []byte, error) {
	if _, err := os.Lstat(path); err == nil {
		k, _, err := seal.LoadKEK(path, false)
		if err != nil {
			return nil, nil, fmt.Errorf("%s exists and is not a key-encryption key; refusing to overwrite it", path)
		}
		if ok, err := seal.WrapsAny(ctx, ks, k.ID()); err != nil {
			return nil, nil, err
		} else if !ok {
			return nil, nil, fmt.Errorf("%s already exists; refusing to overwrite it (if an earlier rotation stopped before rewrapping any key, remove it and run again)", path)
		}
		return k, nil, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, err
	}
	key := make([]byte, 32)
	rand.Read(key)
	k, err := seal.NewKEK(key)
	if err != nil {
		return nil, nil, err
	}
	return k, key, nil
}

// writeKEKFile writes key to path (mode 0600) durably, failing if path exists: a complete, synced temporary
// file is linked into place, so path is never overwritten nor seen half-written.
func writeKEKFile(path string, key []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp := filepath.Join(dir, "."+filepath.Base(path)+".new")
	os.Remove(tmp)
	if err := atomicfile.Write(tmp, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		return fmt.Errorf("create key-encryption key: %w", err)
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		return fmt.Errorf("create key-encryption key: %w", err)
	}
	return atomicfile.SyncDir(dir)
}
