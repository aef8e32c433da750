package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/cairn-ai/cairn/internal/atomicfile"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/seal"
	"github.com/cairn-ai/cairn/internal/store"
	"github.com/cairn-ai/cairn/internal/store/local"
	"github.com/cairn-ai/cairn/internal/store/pg"
	"github.com/cairn-ai/cairn/internal/verify"
)

// retiredKey is a checkpoint signing key that a rotation retired, as DATA/keys/signing-retired.json lists it.
type retiredKey struct {
	PublicKey string    `json:"public_key"` // base64 Ed25519 public key
	Retired   time.Time `json:"retired"`
	// Handover is, per log, the size of the checkpoint both the retired and the new key signed; the retired key
	// is trusted for checkpoints up to it, never beyond.
	Handover map[string]uint64 `json:"handover"`
}

func (p paths) retiredKeys() string { return filepath.Join(p.data, "keys", "signing-retired.json") }

func loadRetired(p paths) ([]retiredKey, error) {
	b, err := os.ReadFile(p.retiredKeys())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rs []retiredKey
	if err := json.Unmarshal(b, &rs); err != nil {
		return nil, fmt.Errorf("%s: %w", p.retiredKeys(), err)
	}
	return rs, nil
}

// retiredFunc gives verify the retired keys of each log.
func retiredFunc(origin string, rs []retiredKey) func(string) []verify.RetiredKey {
	return func(system string) []verify.RetiredKey {
		var out []verify.RetiredKey
		for _, r := range rs {
			pub, err := base64.StdEncoding.DecodeString(r.PublicKey)
			size, ok := r.Handover[system]
			if err != nil || len(pub) != ed25519.PublicKeySize || !ok {
				continue
			}
			vk, _ := ledger.VerifierKey(origin+"/"+system, pub)
			out = append(out, verify.RetiredKey{VKey: vk, MaxSize: size})
		}
		return out
	}
}

// checkNotRetired refuses to start with a signing key that a rotation retired: checkpoints it signed now would be
// beyond every handover, and a verifier rightly rejects them.
func checkNotRetired(p paths, pub ed25519.PublicKey) error {
	rs, err := loadRetired(p)
	if err != nil {
		return err
	}
	enc := base64.StdEncoding.EncodeToString(pub)
	for _, r := range rs {
		if r.PublicKey == enc {
			return fmt.Errorf("the signing key %s was retired on %s; start with the new one (--signing-key)", p.signingKey, r.Retired.Format(time.DateOnly))
		}
	}
	return nil
}

const rotateSigningUsage = `usage: cairn keys rotate-signing --data DIR [--signing-key OLD] --new-signing-key NEW [--kek F] [--store postgres://…]`

// keysRotateSigning replaces the checkpoint signing key of a stopped instance. Every log records the rotation as
// an admin event naming its new verifier key, signed into a checkpoint by the old key; that checkpoint is then
// cosigned by the new key — the handover, by which the old key vouches for the new one. From there on the new key
// signs alone, and verifiers accept the old key only up to the handover.
func keysRotateSigning(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("keys rotate-signing", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "", "data directory (the server must be stopped)")
	signingKey := fs.String("signing-key", "", "current signing key file (env CAIRN_SIGNING_KEY_FILE; default DATA/keys/signing.key)")
	newKeyPath := fs.String("new-signing-key", "", "file to create the new signing key in (must not exist)")
	kekPath := fs.String("kek", "", "key-encryption key file (env CAIRN_KEK_FILE; default DATA/keys/kek)")
	keyringDir := fs.String("keyring", os.Getenv("CAIRN_KEYRING"), "directory of the KEK-wrapped keys (default DATA/keys/periods, or the database with --store)")
	storeURL := fs.String("store", os.Getenv("CAIRN_STORE"), "the PostgreSQL store, when the logs are there (every node stopped)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *data == "" || *newKeyPath == "" || fs.NArg() != 0 {
		fmt.Fprintln(stderr, rotateSigningUsage)
		return errUsage
	}
	abs, err := filepath.Abs(*data)
	if err != nil {
		return err
	}
	p := defaultPaths(abs, *signingKey, *kekPath)
	cfg, _, err := loadConfig(p, "", false)
	if err != nil {
		return err
	}
	if _, err := os.Lstat(*newKeyPath); err == nil {
		return fmt.Errorf("%s already exists; refusing to overwrite it", *newKeyPath)
	}
	old, _, err := ledger.LoadSigningKey(p.signingKey, false)
	if err != nil {
		return err
	}
	kek, _, err := seal.LoadKEK(p.kek, false)
	if err != nil {
		return err
	}
	ctx := context.Background()
	if *storeURL == "" {
		unlock, err := lockData(abs)
		if err != nil {
			return err
		}
		defer unlock()
	}
	// The ledger closes its store; the handover needs it again after, so it is opened twice.
	open := func() (store.Store, error) {
		if *storeURL != "" {
			return pg.Open(ctx, *storeURL, pg.Options{HistoryInterval: time.Microsecond})
		}
		return local.Open(abs, local.Options{HistoryInterval: time.Microsecond})
	}
	st, err := open()
	if err != nil {
		return err
	}
	// The keys the server uses: the database's with a PostgreSQL store, unless --keyring says otherwise.
	var keys *seal.Keyring
	if ps, ok := st.(*pg.Store); ok && *keyringDir == "" {
		keys = seal.NewKeyring(ps.Keys(), kek)
	} else {
		kr := p.keyring()
		if *keyringDir != "" {
			kr = *keyringDir
		}
		if keys, err = seal.OpenKeyring(kr, kek); err != nil {
			st.Close()
			return err
		}
	}
	// The new key exists, durably, before anything names it.
	if err := os.MkdirAll(filepath.Dir(*newKeyPath), 0o700); err != nil {
		return err
	}
	nk, _, err := ledger.LoadSigningKey(*newKeyPath, true)
	if err != nil {
		return err
	}
	newPub := nk.Public().(ed25519.PublicKey)
	l, err := ledger.Open(ctx, ledger.Config{Origin: cfg.Origin, CheckpointInterval: time.Millisecond}, st, keys, old)
	if err != nil {
		st.Close()
		return err
	}
	names, err := st.Logs(ctx)
	if err != nil {
		l.Close()
		return err
	}
	for _, name := range names {
		vk, _ := ledger.VerifierKey(l.Origin(name), newPub)
		raw, _ := json.Marshal(map[string]any{"type": "admin", "attrs": map[string]any{"action": "signing_key_rotated", "vkey": vk}})
		if _, err := l.AppendServer(ctx, name, raw, cliActor()); err != nil {
			l.Close()
			return fmt.Errorf("record the rotation in %s: %w", name, err)
		}
	}
	// Closing publishes a last checkpoint of every log under the old key, covering the rotation events.
	if err := l.Close(); err != nil {
		return err
	}
	if st, err = open(); err != nil {
		return err
	}
	defer st.Close()
	handover := map[string]uint64{}
	for _, name := range names {
		lg, err := st.Open(ctx, name)
		if err != nil {
			return err
		}
		cp, err := lg.Checkpoint(ctx)
		if err != nil {
			return err
		}
		oldVK, _ := ledger.VerifierKey(cfg.Origin+"/"+name, old.Public().(ed25519.PublicKey))
		cosigned, c, err := ledger.Cosign(cp, oldVK, nk)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := lg.SetCheckpoint(ctx, c.Size, cosigned); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		handover[name] = c.Size
		fmt.Fprintf(stdout, "%s: handover checkpoint at %d entries, new verifier key %s\n", name, c.Size, mustVKey(l.Origin(name), newPub))
	}
	rs, err := loadRetired(p)
	if err != nil {
		return err
	}
	rs = append(rs, retiredKey{PublicKey: base64.StdEncoding.EncodeToString(old.Public().(ed25519.PublicKey)), Retired: time.Now().UTC().Truncate(time.Second), Handover: handover})
	b, _ := json.MarshalIndent(rs, "", "  ")
	if err := atomicfile.Write(p.retiredKeys(), append(b, '\n'), 0o644); err != nil {
		return err
	}
	if err := writePublicKey(p, newPub); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "next: start the server with --signing-key %s (or CAIRN_SIGNING_KEY_FILE); give witnesses and auditors the new verifier keys; then destroy the old key %s and every copy of it\n", *newKeyPath, p.signingKey)
	return nil
}

func mustVKey(origin string, pub ed25519.PublicKey) string {
	vk, _ := ledger.VerifierKey(origin, pub)
	return vk
}
