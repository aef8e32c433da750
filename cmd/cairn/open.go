package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"time"

	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/seal"
	"github.com/cairn-ai/cairn/internal/store"
	"github.com/cairn-ai/cairn/internal/store/local"
	"github.com/cairn-ai/cairn/internal/store/pg"
)

// ledgerOptions say where an instance's keys and logs are and how its ledger runs.
type ledgerOptions struct {
	origin     string // checkpoint origin for a new instance
	keyringDir string // default DATA/keys/periods
	storeURL   string // PostgreSQL instead of DATA/logs
	cpInterval time.Duration
	dedup      time.Duration
	logger     *slog.Logger
}

// openLedger opens (creating on first start) an instance's configuration, keys, store and ledger, saying on
// stdout which keys it created. The caller holds the data directory's lock and closes the ledger.
func openLedger(ctx context.Context, p paths, o ledgerOptions, stdout io.Writer) (*ledger.Ledger, instanceConfig, error) {
	l, cfg, _, err := openLedgerKeys(ctx, p, o, stdout)
	return l, cfg, err
}

// openLedgerKeys is openLedger that also returns the keyring, for derived secrets.
func openLedgerKeys(ctx context.Context, p paths, o ledgerOptions, stdout io.Writer) (*ledger.Ledger, instanceConfig, *seal.Keyring, error) {
	cfg, _, err := loadConfig(p, o.origin, true)
	if err != nil {
		return nil, cfg, nil, err
	}
	sk, skNew, err := ledger.LoadSigningKey(p.signingKey, true)
	if err != nil {
		return nil, cfg, nil, err
	}
	if _, err := os.Stat(p.publicKey()); skNew || errors.Is(err, fs.ErrNotExist) {
		if err := writePublicKey(p, sk.Public().(ed25519.PublicKey)); err != nil {
			return nil, cfg, nil, err
		}
	}
	kek, kekNew, err := seal.LoadKEK(p.kek, true)
	if err != nil {
		return nil, cfg, nil, err
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
	kr := p.keyring()
	if o.keyringDir != "" {
		kr = o.keyringDir
	}
	keys, err := seal.OpenKeyring(kr, kek)
	if err != nil {
		return nil, cfg, nil, err
	}
	var st store.Store
	if o.storeURL != "" {
		st, err = pg.Open(ctx, o.storeURL, pg.Options{Logger: o.logger})
	} else {
		st, err = local.Open(p.data, local.Options{Logger: o.logger})
	}
	if err != nil {
		return nil, cfg, nil, err
	}
	l, err := ledger.Open(ctx, ledger.Config{Origin: cfg.Origin, CheckpointInterval: o.cpInterval, DedupWindow: o.dedup, Logger: o.logger}, st, keys, sk)
	if err != nil {
		st.Close()
		return nil, cfg, nil, err
	}
	return l, cfg, keys, nil
}
