package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/index"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/retention"
	"github.com/cairn-ai/cairn/internal/seal"
	"github.com/cairn-ai/cairn/internal/store"
	"github.com/cairn-ai/cairn/internal/store/local"
	"github.com/cairn-ai/cairn/internal/store/pg"
	"github.com/cairn-ai/cairn/internal/vault"
)

const retentionUsage = `usage:
  cairn retention run     --data DIR [--dry-run] [--json] [--archive DIR]   archive and destroy what is due
  cairn retention report  --data DIR [--json]                                schedules, holds, destruction record
  cairn retention hold    --data DIR --system S --id ID [--event UUID]... [--from T] [--to T] [--type T]... [--reason-ref R]
  cairn retention release --data DIR --system S --id ID
The server must be stopped (inside 'cairn serve' the worker runs every --retention-interval).`

// cmdRetention runs retention on a stopped instance.
func cmdRetention(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, retentionUsage)
		return errUsage
	}
	sub := args[0]
	fs := flag.NewFlagSet("retention "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./cairn-data", "data directory (the server must be stopped)")
	storeURL := fs.String("store", os.Getenv("CAIRN_STORE"), "the PostgreSQL store (postgres://…; env CAIRN_STORE) instead of DATA/logs")
	kekPath := fs.String("kek", "", "key-encryption key file (env CAIRN_KEK_FILE; default DATA/keys/kek)")
	keyringDir := fs.String("keyring", os.Getenv("CAIRN_KEYRING"), "directory of the KEK-wrapped period keys (env CAIRN_KEYRING; default DATA/keys/periods)")
	archiveDir := fs.String("archive", os.Getenv("CAIRN_ARCHIVE"), "archive directory (env CAIRN_ARCHIVE; default DATA/archive)")
	actor := fs.String("actor", "", "principal recorded on the events (default cli:$USER)")
	jsonOut := fs.Bool("json", false, "print JSON")
	var dryRun *bool
	var sys, id, reasonRef, from, to *string
	var events, types listFlag
	switch sub {
	case "run":
		dryRun = fs.Bool("dry-run", false, "show exactly what would be archived and destroyed; change nothing")
	case "report":
	case "hold", "release":
		sys = fs.String("system", "", "the system")
		id = fs.String("id", "", "the hold's id (a matter reference: letters, digits, '.', '_', '-')")
		if sub == "hold" {
			reasonRef = fs.String("reason-ref", "", "reference of the matter (incident or case number; no personal data)")
			from = fs.String("from", "", "hold events recorded at or after this time (RFC 3339)")
			to = fs.String("to", "", "hold events recorded before this time (RFC 3339)")
			fs.Var(&events, "event", "hold this event id (repeatable)")
			fs.Var(&types, "type", "hold only events of this type (repeatable)")
		}
	default:
		fmt.Fprintln(stderr, retentionUsage)
		return errUsage
	}
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() != 0 {
		fmt.Fprintln(stderr, retentionUsage)
		return errUsage
	}
	if sys != nil && (*sys == "" || *id == "") {
		return errors.New("--system and --id are required")
	}
	if *actor == "" {
		*actor = cliActor()
	}
	inst, err := openInstance(*data, *storeURL, *kekPath, *keyringDir)
	if err != nil {
		return err
	}
	defer inst.close()
	if *archiveDir == "" {
		*archiveDir = filepath.Join(inst.p.data, "archive")
	}
	rcfg := retention.Config{Ledger: inst.l, Keys: inst.keys, Archive: retention.Dir{Path: *archiveDir}, Index: inst.x, Actor: *actor}
	if _, err := os.Stat(inst.p.vault()); err == nil && *storeURL == "" {
		if vk, _, err := vault.LoadKey(inst.p.vaultKeyPath(""), false); err == nil {
			if vlt, err := vault.Open(inst.p.vault(), vk); err == nil {
				defer vlt.Close()
				rcfg.Subjects = vaultSubjects{inst.l, vlt}
			}
		}
	}
	w := retention.NewWorker(rcfg)
	ctx := context.Background()
	switch sub {
	case "run":
		rep, err := w.Run(ctx, *dryRun)
		if rep != nil {
			writeRun(stdout, rep, *jsonOut)
		}
		return err
	case "report":
		rep, err := w.Report(ctx)
		if err != nil {
			return err
		}
		if *jsonOut {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(rep)
		}
		rep.WriteText(stdout)
		return nil
	case "hold":
		h := retention.Hold{ID: *id, Types: types, ReasonRef: *reasonRef}
		for _, s := range events {
			u, err := event.ParseUUID(s)
			if err != nil {
				return fmt.Errorf("--event %q: not an event id", s)
			}
			h.Events = append(h.Events, u)
		}
		for _, f := range []struct {
			name string
			v    string
			t    *time.Time
		}{{"--from", *from, &h.From}, {"--to", *to, &h.To}} {
			if f.v == "" {
				continue
			}
			if *f.t, err = time.Parse(time.RFC3339, f.v); err != nil {
				return fmt.Errorf("%s: want an RFC 3339 time", f.name)
			}
		}
		r, err := w.PlaceHold(ctx, *sys, h, *actor)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "hold %s placed on %s (event %s, index %d)\n", *id, *sys, r.ID, r.Index)
	case "release":
		r, err := w.ReleaseHold(ctx, *sys, *id, *actor)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "hold %s on %s released (event %s, index %d); what it kept goes at the next run if its period has ended\n", *id, *sys, r.ID, r.Index)
	}
	return nil
}

func writeRun(w io.Writer, rep *retention.RunReport, jsonOut bool) {
	if jsonOut {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
		return
	}
	verb := map[string]string{"archive": "archived", "destroy": "destroyed"}
	if rep.DryRun {
		verb = map[string]string{"archive": "would archive", "destroy": "would destroy"}
	}
	for _, a := range rep.Actions {
		rec := ""
		if a.Record != 0 {
			rec = fmt.Sprintf(", record %d", a.Record)
		}
		fmt.Fprintf(w, "%s %s %s %s: %d entries, %d kept, key %s (%s%s)\n", a.System, verb[a.Kind], a.Class, a.Month, a.Count, a.Kept, a.KeyID, a.Rule, rec)
	}
	for _, s := range rep.Skipped {
		fmt.Fprintf(w, "%s skipped: %s\n", s.System, s.Reason)
	}
	if len(rep.Actions) == 0 && len(rep.Skipped) == 0 {
		fmt.Fprintln(w, "nothing due")
	}
}

// instance is a stopped installation opened for an offline command: its ledger, keys and query index.
type instance struct {
	p      paths
	l      *ledger.Ledger
	keys   *seal.Keyring
	x      *index.Index
	unlock func()
}

func openInstance(data, storeURL, kekPath, keyringDir string) (*instance, error) {
	abs, err := filepath.Abs(data)
	if err != nil {
		return nil, err
	}
	p := defaultPaths(abs, "", kekPath)
	cfg, _, err := loadConfig(p, "", false)
	if err != nil {
		return nil, err
	}
	unlock, err := lockData(abs)
	if err != nil {
		return nil, err
	}
	inst := &instance{p: p, unlock: unlock}
	ok := false
	defer func() {
		if !ok {
			inst.close()
		}
	}()
	sk, _, err := ledger.LoadSigningKey(p.signingKey, false)
	if err != nil {
		return nil, err
	}
	kek, _, err := seal.LoadKEK(p.kek, false)
	if err != nil {
		return nil, err
	}
	kr := p.keyring()
	if keyringDir != "" {
		kr = keyringDir
	}
	if inst.keys, err = seal.OpenKeyring(kr, kek); err != nil {
		return nil, err
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	var st store.Store
	if storeURL != "" {
		st, err = pg.Open(context.Background(), storeURL, pg.Options{Logger: logger})
	} else {
		st, err = local.Open(abs, local.Options{Logger: logger})
	}
	if err != nil {
		return nil, err
	}
	if inst.l, err = ledger.Open(context.Background(), ledger.Config{Origin: cfg.Origin, Logger: logger}, st, inst.keys, sk); err != nil {
		st.Close()
		return nil, err
	}
	if inst.x, err = index.Open(p.index()); err != nil {
		return nil, err
	}
	ok = true
	return inst, nil
}

func (i *instance) close() {
	if i.x != nil {
		i.x.Close()
	}
	if i.l != nil {
		i.l.Close()
	}
	i.unlock()
}
