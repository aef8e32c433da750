package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/cairn-ai/cairn/client"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/seal"
	"github.com/cairn-ai/cairn/internal/store"
	"github.com/cairn-ai/cairn/internal/store/local"
	"github.com/cairn-ai/cairn/internal/store/pg"
	"github.com/cairn-ai/cairn/internal/verify"
)

func cmdVerify(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "bundle" {
		return verifyBundle(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "document" {
		return verifyDocument(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "proof" {
		return verifyProof(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "", "data directory to verify offline (the server must be stopped)")
	full := fs.Bool("full", false, "re-check every entry, not only those added since the last verification")
	stateFile := fs.String("state", "", "where to remember what was verified (default: under the user's state directory, outside the store)")
	pubFile := fs.String("public-key", "", "checkpoint public key file (default DATA/keys/signing.pub; keep your own copy)")
	storeURL := fs.String("store", "", "with --data: verify the logs kept in this PostgreSQL store (postgres://…) instead of DATA/logs; DATA gives the origin and public key")
	url := fs.String("url", "", "verify a remote log through its tiles API")
	sys := fs.String("system", "", "with --url: the system whose log to verify")
	vkey := fs.String("vkey", "", "with --url: the log's note verifier key (obtained out of band)")
	entries := fs.Bool("entries", false, "with --url: also fetch every entry bundle and check each leaf against the tree (needs CAIRN_TOKEN)")
	jsonOut := fs.Bool("json", false, "print the report as JSON")
	decrypt := fs.Bool("decrypt", false, "with --data: also open every sealed payload with the keys (--kek) — the operator's check")
	keyringDir := fs.String("keyring", os.Getenv("CAIRN_KEYRING"), "with --decrypt: directory of the KEK-wrapped period keys (env CAIRN_KEYRING; default DATA/keys/periods, or the database with --store)")
	kekPath := fs.String("kek", "", "with --decrypt: key-encryption key file (env CAIRN_KEK_FILE; default DATA/keys/kek); with --store the period keys are the database's")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	switch {
	case *url != "":
		if *sys == "" || *vkey == "" {
			return fmt.Errorf("--url needs --system and --vkey")
		}
		return verifyRemote(*url, *sys, *vkey, *stateFile, *entries, stdout)
	case *data != "":
		return verifyData(*data, *storeURL, *full, *stateFile, *pubFile, *jsonOut, *decrypt, *kekPath, *keyringDir, stdout)
	default:
		fmt.Fprintln(stderr, "usage: cairn verify --data DIR [--full] | --url URL --system S --vkey KEY | bundle [--vkey KEY] FILE")
		return errUsage
	}
}

func defaultState(kind, key string) string {
	dir := os.Getenv("XDG_STATE_HOME")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".local", "state")
	}
	h := sha256.Sum256([]byte(key))
	return filepath.Join(dir, "cairn", "verify", kind+"-"+hex.EncodeToString(h[:8])+".json")
}

func verifyData(data, storeURL string, full bool, stateFile, pubFile string, jsonOut, decrypt bool, kekPath, keyringDir string, stdout io.Writer) error {
	abs, err := filepath.Abs(data)
	if err != nil {
		return err
	}
	p := defaultPaths(abs, "", "")
	cfg, _, err := loadConfig(p, "", false)
	if err != nil {
		return err
	}
	pub, err := func() ([]byte, error) {
		if pubFile != "" {
			return publicKeyFile(pubFile)
		}
		return publicKey(p)
	}()
	if err != nil {
		return err
	}
	where := abs
	var st store.Store
	if storeURL != "" {
		// A shared database: nodes may be running; verification only reads.
		where = storeURL
		st, err = pg.Open(context.Background(), storeURL, pg.Options{})
	} else {
		unlock, lerr := lockData(abs)
		if lerr != nil {
			return lerr
		}
		defer unlock()
		st, err = local.Open(abs, local.Options{ReadOnly: true})
	}
	if err != nil {
		return err
	}
	defer st.Close()
	if stateFile == "" {
		stateFile = defaultState("store", cfg.Origin+"|"+where)
	}
	prev, err := verify.LoadState(stateFile)
	if err != nil {
		return err
	}
	retired, err := loadRetired(defaultPaths(abs, "", ""))
	if err != nil {
		return err
	}
	opts := verify.Options{VKey: vkeyFunc(cfg.Origin, pub), Retired: retiredFunc(cfg.Origin, retired), Full: full, Prev: prev}
	if decrypt {
		kp := defaultPaths(abs, "", kekPath)
		kek, _, err := seal.LoadKEK(kp.kek, false)
		if err != nil {
			return err
		}
		var keys *seal.Keyring
		if ps, ok := st.(*pg.Store); ok && keyringDir == "" {
			keys = seal.NewKeyring(ps.Keys(), kek) // the database's keyring, as its nodes use it
		} else {
			dir := kp.keyring()
			if keyringDir != "" {
				dir = keyringDir
			}
			if keys, err = seal.OpenKeyring(dir, kek); err != nil {
				return err
			}
		}
		opts.Open = func(system string, e *store.Entry) error {
			_, err := ledger.OpenSealed(keys, e)
			return err
		}
	}
	rep, err := verify.Store(context.Background(), st, opts)
	if err != nil {
		return err
	}
	if jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
	} else {
		for _, f := range rep.Failures {
			fmt.Fprintf(stdout, "FAIL %s\n", f)
		}
		for _, name := range slices.Sorted(maps.Keys(rep.Logs)) {
			ls := rep.Logs[name]
			fmt.Fprintf(stdout, "%s: %d entries, checkpoint %d", name, ls.Size, ls.CheckpointSize)
			if d := rep.Destroyed[name]; d > 0 {
				fmt.Fprintf(stdout, ", %d destroyed by retention record", d)
			}
			fmt.Fprintln(stdout)
		}
	}
	if !rep.OK() {
		if !jsonOut {
			fmt.Fprintf(stdout, "verification FAILED: %d problem(s), %d entries checked\n", len(rep.Failures), rep.Checked)
		}
		return exitError(1)
	}
	// Remember only a store that verified, so a later rollback below it is caught.
	merged := prev
	for k, v := range rep.Logs {
		merged[k] = v
	}
	if err := verify.SaveState(stateFile, merged); err != nil {
		return err
	}
	if !jsonOut {
		fmt.Fprintf(stdout, "verified: %d entries checked, state in %s\n", rep.Checked, stateFile)
	}
	return nil
}

func publicKeyFile(path string) ([]byte, error) { return readPublicKey(path) }

// remoteState is what a remote verification remembers: the last verified checkpoint.
type remoteState struct {
	Size uint64    `json:"size"`
	Root tlog.Hash `json:"root"`
	Note string    `json:"checkpoint"`
}

func verifyRemote(url, sys, vkey, stateFile string, entries bool, stdout io.Writer) error {
	ctx := context.Background()
	if stateFile == "" {
		stateFile = defaultState("remote", url+"|"+sys+"|"+vkey)
	}
	var prev *remoteState
	if b, err := os.ReadFile(stateFile); err == nil {
		prev = new(remoteState)
		if err := json.Unmarshal(b, prev); err != nil {
			return fmt.Errorf("state %s unreadable", stateFile)
		}
	}
	c := client.New(url, os.Getenv("CAIRN_TOKEN"))
	cp, note, err := c.Checkpoint(ctx, sys, vkey)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	tree := tlog.Tree{N: int64(cp.Size), Hash: cp.Root}
	thr := tlog.TileHashReader(tree, &client.TileReader{C: c, System: sys})
	if prev != nil {
		if cp.Size < prev.Size {
			fmt.Fprintf(stdout, "FAIL %s: the log shrank from %d to %d entries\n", sys, prev.Size, cp.Size)
			return exitError(1)
		}
		// Prove from the tiles alone that the remembered tree is a prefix of the current one.
		proof, err := tlog.ProveTree(int64(cp.Size), int64(prev.Size), thr)
		if err == nil {
			err = tlog.CheckTree(proof, int64(cp.Size), cp.Root, int64(prev.Size), prev.Root)
		}
		if err != nil {
			fmt.Fprintf(stdout, "FAIL %s: checkpoint %d is not consistent with the remembered checkpoint %d: %v\n", sys, cp.Size, prev.Size, err)
			return exitError(1)
		}
	}
	checked := 0
	if entries {
		for n := int64(0); n*256 < int64(cp.Size); n++ {
			w := int(min(256, int64(cp.Size)-n*256))
			leaves, err := c.EntryBundle(ctx, sys, n, w)
			if err != nil {
				return fmt.Errorf("entry bundle %d: %w", n, err)
			}
			idx := make([]int64, w)
			for i := range idx {
				idx[i] = tlog.StoredHashIndex(0, n*256+int64(i))
			}
			hs, err := thr.ReadHashes(idx)
			if err != nil {
				fmt.Fprintf(stdout, "FAIL %s: tiles do not match the checkpoint: %v\n", sys, err)
				return exitError(1)
			}
			for i, leaf := range leaves {
				if tlog.RecordHash(leaf) != hs[i] {
					fmt.Fprintf(stdout, "FAIL %s[%d]: leaf entry does not match the tree\n", sys, n*256+int64(i))
					return exitError(1)
				}
				checked++
			}
		}
	}
	b, _ := json.MarshalIndent(remoteState{Size: cp.Size, Root: cp.Root, Note: string(note)}, "", "  ")
	if err := os.MkdirAll(filepath.Dir(stateFile), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(stateFile, b, 0o600); err != nil {
		return err
	}
	from := "first verification"
	if prev != nil {
		from = fmt.Sprintf("consistent with remembered size %d", prev.Size)
	}
	fmt.Fprintf(stdout, "verified %s: checkpoint size %d (%s)", sys, cp.Size, from)
	if entries {
		fmt.Fprintf(stdout, ", %d leaves checked", checked)
	}
	fmt.Fprintln(stdout)
	return nil
}
