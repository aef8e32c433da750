package main

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", for the token vault in PostgreSQL

	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/seal"
	"github.com/cairn-ai/cairn/internal/store"
	"github.com/cairn-ai/cairn/internal/store/local"
	"github.com/cairn-ai/cairn/internal/store/pg"
	"github.com/cairn-ai/cairn/internal/vault"
)

// ledgerOptions say where an instance's keys and logs are and how its ledger runs.
type ledgerOptions struct {
	origin     string // checkpoint origin for a new instance
	keyringDir string // default DATA/keys/periods, or the database's keys with storeURL
	storeURL   string // PostgreSQL instead of DATA/logs
	vaultKey   string // token vault key file (default DATA/keys/vault.key)
	vaultStore string // token vault in PostgreSQL instead of DATA/vault
	cpInterval time.Duration
	dedup      time.Duration
	logger     *slog.Logger
}

// openedLedger is a running instance's ledger with what was opened for it.
type openedLedger struct {
	l     *ledger.Ledger
	cfg   instanceConfig
	keys  *seal.Keyring
	vault *vault.Vault // nil: this instance runs without a token vault
}

// openLedger opens (creating on first start) an instance's configuration, keys, store, token vault and ledger,
// saying on stdout which keys it created, and records offline administration in _admin. The caller holds the
// data directory's lock and closes the ledger and the vault. `serve` and `proxy --data` both start here.
func openLedger(ctx context.Context, p paths, o ledgerOptions, stdout io.Writer) (*openedLedger, error) {
	if o.logger == nil {
		o.logger = slog.Default()
	}
	cfg, created, err := loadConfig(p, o.origin, true)
	if err != nil {
		return nil, err
	}
	sk, skNew, err := ledger.LoadSigningKey(p.signingKey, true)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(p.publicKey()); skNew || created || errors.Is(err, fs.ErrNotExist) {
		if err := writePublicKey(p, sk.Public().(ed25519.PublicKey)); err != nil {
			return nil, err
		}
	}
	if err := checkNotRetired(p, sk.Public().(ed25519.PublicKey)); err != nil {
		return nil, err
	}
	kek, kekNew, err := seal.LoadKEK(p.kek, true)
	if err != nil {
		return nil, err
	}
	if skNew {
		fmt.Fprintf(stdout, "created signing key:      %s (public key: %s)\n", p.signingKey, p.publicKey())
	}
	if kekNew {
		fmt.Fprintf(stdout, "created key-encryption key: %s\n", p.kek)
	}
	if skNew || kekNew {
		fmt.Fprintln(stdout, "in production keep the signing key and the KEK outside the data directory (--signing-key, --kek)")
	}
	var (
		st store.Store
		ks seal.KeyStore
	)
	if o.storeURL != "" {
		var ps *pg.Store
		if ps, err = pg.Open(ctx, o.storeURL, pg.Options{Logger: o.logger}); err == nil {
			// Nodes over one database share its keyring (wrapped by the KEK they share), unless --keyring says otherwise.
			st, ks = ps, ps.Keys()
		}
	} else {
		st, err = local.Open(p.data, local.Options{Logger: o.logger})
	}
	if err != nil {
		return nil, err
	}
	if o.keyringDir != "" || ks == nil {
		kr := p.keyring()
		if o.keyringDir != "" {
			kr = o.keyringDir
		}
		if ks, err = seal.NewFileKeyStore(kr); err != nil {
			st.Close()
			return nil, err
		}
	}
	if ps, ok := ks.(*pg.KeyStore); ok {
		if err := checkKeysMoved(ctx, st, ps); err != nil {
			st.Close()
			return nil, err
		}
	}
	keys := seal.NewKeyring(ks, kek)
	// The token vault: a file of the data directory, or — for nodes sharing a PostgreSQL store, which must share
	// one vault — a PostgreSQL schema of its own. Nodes over PostgreSQL without --vault-store run without a vault,
	// and refuse vault policies.
	lcfg := ledger.Config{Origin: cfg.Origin, CheckpointInterval: o.cpInterval, DedupWindow: o.dedup, Logger: o.logger}
	vlt, err := openVault(p, o.vaultKey, o.vaultStore, o.storeURL != "", stdout)
	if err != nil {
		st.Close()
		return nil, err
	}
	if vlt != nil {
		lcfg.Vault = vlt
	}
	l, err := ledger.Open(ctx, lcfg, st, keys, sk)
	if err != nil {
		st.Close()
		if vlt != nil {
			vlt.Close()
		}
		return nil, err
	}
	if n, err := recordPendingAdmin(ctx, p, l); err != nil {
		l.Close()
		if vlt != nil {
			vlt.Close()
		}
		return nil, err
	} else if n > 0 {
		o.logger.Info("recorded offline administration in _admin", "records", n)
	}
	return &openedLedger{l: l, cfg: cfg, keys: keys, vault: vlt}, nil
}

// openVault opens the token vault: in PostgreSQL when vaultStore is set, else in DATA/vault unless the logs are in
// PostgreSQL (several nodes cannot share a file). The key is created on first use.
func openVault(p paths, keyFlag, vaultStore string, sharedStore bool, stdout io.Writer) (*vault.Vault, error) {
	if vaultStore == "" && sharedStore {
		return nil, nil
	}
	keyPath := p.vaultKeyPath(keyFlag)
	vk, vkNew, err := vault.LoadKey(keyPath, true)
	if err != nil {
		return nil, err
	}
	if vkNew {
		fmt.Fprintf(stdout, "created token vault key:  %s\n", keyPath)
	}
	if vaultStore == "" {
		return vault.Open(p.vault(), vk)
	}
	db, err := sql.Open("pgx", vaultStore)
	if err != nil {
		return nil, err
	}
	v, err := vault.OpenPostgres(db, vk)
	if err != nil {
		db.Close()
		return nil, err
	}
	return v, nil
}
