package main

import (
	"bytes"
	"context"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/cairn-ai/cairn/client"
	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/seal"
	"github.com/cairn-ai/cairn/internal/store/pg/pgtest"
)

// TestNodesKillMidIngest is the multi-node acceptance test of the PostgreSQL store: three `cairn serve
// --store postgres://…` processes over one schema, each with its own data directory (no shared keyring: period
// keys and secrets live in the database), sharing only the signing key and the KEK. Writers post batches to
// all three nodes for three systems at once; one node is SIGKILLed mid-ingest and the batches it never
// answered are retried, with the same ids, on another node. Meanwhile every node's published checkpoints are
// collected. Afterwards: every acknowledged event is in the database exactly once, at the index it was
// acknowledged with; indices are contiguous; every collected checkpoint verifies and all of them are of one
// tree (consistency proofs); `cairn verify --store` passes, also opening every payload; and after `cairn keys
// rotate --store` every payload opens with the new KEK alone.
func TestNodesKillMidIngest(t *testing.T) {
	url, schema, pgURL := pgtest.Schema(t, "cairn_nodes_")
	bin := filepath.Join(cliBinary(t), "cairn")
	dir := t.TempDir()
	ctx := context.Background()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	db, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	env, run := cleanEnv(bin, dir)
	must := func(args ...string) string {
		t.Helper()
		out, err := run(args...)
		if err != nil {
			t.Fatalf("cairn %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	must("migrate", "--store", url, "--schema", schema)

	// The shared secrets live outside every data directory; the first node creates them.
	secrets := filepath.Join(dir, "secrets")
	signingKey, kek := filepath.Join(secrets, "signing.key"), filepath.Join(secrets, "kek")
	if err := os.MkdirAll(secrets, 0o700); err != nil {
		t.Fatal(err)
	}
	const origin = "nodes.test/cairn"
	nodes := make([]*killServer, 3)
	tokens := make([]string, 3)
	for i := range nodes {
		data := filepath.Join(dir, fmt.Sprintf("node%d", i))
		nodes[i] = startCairn(t, bin, env, "serve", "--data", data, "--store", pgURL, "--listen", "127.0.0.1:0",
			"--origin", origin, "--signing-key", signingKey, "--kek", kek, "--checkpoint-interval", "10ms")
		tok, err := os.ReadFile(filepath.Join(data, "admin.token"))
		if err != nil {
			t.Fatal(err)
		}
		tokens[i] = strings.TrimSpace(string(tok))
	}
	if _, err := os.Stat(filepath.Join(dir, "node0", "keys", "periods")); err == nil {
		t.Error("a node over PostgreSQL made a keyring directory; its keys belong in the database")
	}

	systems := []string{"alpha", "beta", "gamma"}
	for _, sys := range systems {
		body := fmt.Sprintf(`{"id":%q,"name":"x","intended_purpose":"y","provider":"z"}`, sys)
		if st, b, err := nodes[0].post(tokens[0], "/v1/systems", []byte(body)); err != nil || st != http.StatusCreated {
			t.Fatalf("register %s: %d %s %v", sys, st, b, err)
		}
	}

	pub, err := publicKey(defaultPaths(filepath.Join(dir, "node0"), "", ""))
	if err != nil {
		t.Fatal(err)
	}
	vkey := vkeyFunc(origin, pub)

	// Collect every node's published checkpoints while the writers run, each verified with the public key.
	cps := &cpBook{seen: map[string]map[string]ledger.Checkpoint{}}
	stopCP := make(chan struct{})
	var cpWG sync.WaitGroup
	for i := range nodes {
		cpWG.Go(func() {
			c := client.New(nodes[i].url, "")
			for {
				for _, sys := range systems {
					if cp, note, err := c.Checkpoint(ctx, sys, vkey(sys)); err == nil {
						cps.add(sys, cp, note)
					} else if !strings.Contains(err.Error(), "connection refused") && !strings.Contains(err.Error(), "no checkpoint") && !strings.Contains(err.Error(), "404") {
						t.Logf("checkpoint of %s from node %d: %v", sys, i, err)
					}
				}
				select {
				case <-stopCP:
					return
				case <-time.After(5 * time.Millisecond):
				}
			}
		})
	}

	// Writers: two per node and system.
	books := map[string]*killBook{}
	for _, sys := range systems {
		books[sys] = &killBook{system: sys, acked: map[string]uint64{}}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range nodes {
		for si, sys := range systems {
			for w := range 2 {
				rng := mrand.New(mrand.NewPCG(seed, uint64(i*100+si*10+w)))
				wg.Go(func() { books[sys].write(t, nodes[i], tokens[i], rng, stop) })
			}
		}
	}
	time.Sleep(1500 * time.Millisecond)
	nodes[2].kill(t) // mid-ingest: its writers lose their in-flight batches
	time.Sleep(1000 * time.Millisecond)
	close(stop)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	// Unanswered batches go again, with the same ids, to a surviving node: each event is appended now or
	// answered as the duplicate of what the dead node committed. Then one more batch on node 0 for every
	// system brings node 0 to the shared tree (it catches up when it loses the race).
	for _, sys := range systems {
		books[sys].retry(t, nodes[0], tokens[0])
		id := event.NewV7(time.Now()).String()
		body := fmt.Sprintf(`[{"id":%q,"type":"inference","model":{"name":"m","version":"1"},"payload":{"output":1}}]`, id)
		books[sys].send(t, nodes[0], tokens[0], []byte(body), []string{id}, false)
	}
	time.Sleep(200 * time.Millisecond) // let the last checkpoints be published and collected
	close(stopCP)
	cpWG.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// Every acknowledged event is in the database once, at its index; indices are contiguous.
	var total, retried, dups int
	for _, sys := range systems {
		var size int64
		if err := db.QueryRow(ctx, "SELECT size FROM "+pgx.Identifier{schema, "logs"}.Sanitize()+" WHERE name = $1", sys).Scan(&size); err != nil {
			t.Fatal(err)
		}
		rows, err := db.Query(ctx, "SELECT e.idx, e.id FROM "+pgx.Identifier{schema, "entries"}.Sanitize()+" e JOIN "+
			pgx.Identifier{schema, "logs"}.Sanitize()+" l ON l.id = e.log WHERE l.name = $1 ORDER BY e.idx", sys)
		if err != nil {
			t.Fatal(err)
		}
		at := map[string]int64{}
		var (
			idx  int64
			id   pgtype.UUID
			want int64
		)
		_, err = pgx.ForEachRow(rows, []any{&idx, &id}, func() error {
			if idx != want {
				return fmt.Errorf("%s: entry %d follows %d: indices are not contiguous", sys, idx, want-1)
			}
			want++
			s := event.UUID(id.Bytes).String()
			if j, ok := at[s]; ok {
				return fmt.Errorf("%s: event %s is stored twice, at %d and %d", sys, s, j, idx)
			}
			at[s] = idx
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if want != size {
			t.Fatalf("%s: %d entries stored, the log's size says %d", sys, want, size)
		}
		k := books[sys]
		for key, index := range k.acked {
			if got, ok := at[key]; !ok || uint64(got) != index {
				t.Errorf("%s: acknowledged event %s at %d; stored at %d (%v)", sys, key, index, got, ok)
			}
		}
		total, retried, dups = total+len(k.acked), retried+k.retried, dups+k.dups
		t.Logf("%s: %d entries, %d acknowledged events", sys, size, len(k.acked))
	}
	t.Logf("%d events acknowledged, %d retried after the kill (%d of them found already stored)", total, retried, dups)
	if retried == 0 {
		t.Log("the kill left no batch unanswered this time (the retry path went untested)")
	}

	// Every pair of collected checkpoints is consistent: sorted by size, each is proven a prefix of the next
	// (and equal sizes have equal roots), which by transitivity covers every pair; the proofs come from node 0.
	c0 := client.New(nodes[0].url, tokens[0])
	for _, sys := range systems {
		list := cps.sorted(sys)
		if len(list) < 3 {
			t.Errorf("%s: only %d distinct checkpoints collected", sys, len(list))
		}
		for i := 1; i < len(list); i++ {
			if err := c0.Consistency(ctx, sys, list[i-1], list[i]); err != nil {
				t.Fatalf("%s: checkpoints of size %d and %d are not of one tree: %v", sys, list[i-1].Size, list[i].Size, err)
			}
		}
		t.Logf("%s: %d distinct checkpoints from %d notes, all consistent", sys, len(list), cps.notes(sys))
	}

	// The database verifies from scratch while nodes 0 and 1 still run; then, with them stopped, the keys
	// rotate in the database and every payload opens with the new KEK alone.
	data0 := filepath.Join(dir, "node0")
	if out := must("verify", "--data", data0, "--store", pgURL, "--full", "--decrypt", "--kek", kek, "--state", filepath.Join(dir, "v1.json")); !strings.Contains(out, "verified:") {
		t.Fatalf("verify:\n%s", out)
	}
	nodes[0].term(t)
	nodes[1].term(t)
	newKEK := filepath.Join(secrets, "kek2")
	if out := must("keys", "rotate", "--data", data0, "--kek", kek, "--new-kek", newKEK, "--store", pgURL); !strings.Contains(out, "in the database") {
		t.Errorf("keys rotate --store:\n%s", out)
	}
	must("verify", "--data", data0, "--store", pgURL, "--full", "--decrypt", "--kek", newKEK, "--state", filepath.Join(dir, "v2.json"))
	if out, err := run("verify", "--data", data0, "--store", pgURL, "--full", "--decrypt", "--kek", kek, "--state", filepath.Join(dir, "v3.json")); err == nil {
		t.Errorf("payloads still open with the old KEK after rotation:\n%s", out)
	}
	oldKEK, _, err := seal.LoadKEK(kek, false)
	if err != nil {
		t.Fatal(err)
	}
	var keys, stale int
	if err := db.QueryRow(ctx, "SELECT count(*), count(*) FILTER (WHERE kek = $1) FROM "+pgx.Identifier{schema, "wrapped_keys"}.Sanitize(), oldKEK.ID()).Scan(&keys, &stale); err != nil {
		t.Fatal(err)
	}
	if keys < len(systems) || stale != 0 {
		t.Errorf("the database holds %d keys, %d of them still wrapped by the old KEK", keys, stale)
	}
}

// cpBook collects published checkpoints per system, by note.
type cpBook struct {
	mu   sync.Mutex
	seen map[string]map[string]ledger.Checkpoint
}

func (b *cpBook) add(sys string, cp ledger.Checkpoint, note []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.seen[sys] == nil {
		b.seen[sys] = map[string]ledger.Checkpoint{}
	}
	b.seen[sys][string(note)] = cp
}

func (b *cpBook) notes(sys string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.seen[sys])
}

// sorted returns the system's checkpoints by size, one per distinct (size, root).
func (b *cpBook) sorted(sys string) []ledger.Checkpoint {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []ledger.Checkpoint
	for _, cp := range b.seen[sys] {
		out = append(out, cp)
	}
	slices.SortFunc(out, func(a, b ledger.Checkpoint) int {
		if a.Size != b.Size {
			return int(int64(a.Size) - int64(b.Size))
		}
		return bytes.Compare(a.Root[:], b.Root[:])
	})
	return slices.CompactFunc(out, func(a, b ledger.Checkpoint) bool { return a.Size == b.Size && a.Root == b.Root })
}

// TestKeysMovedIntoDatabase: nodes that kept their keys in a shared keyring directory (--keyring) are not started
// over the database's (empty) key table by mistake — which would make new secrets and leave earlier payloads
// unopenable — and `cairn keys copy` moves the keys in, after which a node without --keyring reads every payload.
func TestKeysMovedIntoDatabase(t *testing.T) {
	url, schema, pgURL := pgtest.Schema(t, "cairn_keys_")
	bin := filepath.Join(cliBinary(t), "cairn")
	dir := t.TempDir()
	env, run := cleanEnv(bin, dir)
	if out, err := run("migrate", "--store", url, "--schema", schema); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	data, keyring := filepath.Join(dir, "data"), filepath.Join(dir, "shared-keyring")
	serve := []string{"serve", "--data", data, "--store", pgURL, "--listen", "127.0.0.1:0", "--origin", "keys.test/cairn"}
	srv := startCairn(t, bin, env, append(serve, "--keyring", keyring)...)
	tok, _ := os.ReadFile(filepath.Join(data, "admin.token"))
	token := strings.TrimSpace(string(tok))
	if st, b, err := srv.post(token, "/v1/systems", []byte(`{"id":"credit","name":"x","intended_purpose":"y","provider":"z"}`)); err != nil || st != http.StatusCreated {
		t.Fatalf("register: %d %s %v", st, b, err)
	}
	body := `[{"type":"inference","model":{"name":"m","version":"1"},"payload":{"subject":"s","output":1}}]`
	if st, b, err := srv.post(token, "/v1/systems/credit/events", []byte(body)); err != nil || st != http.StatusOK {
		t.Fatalf("ingest: %d %s %v", st, b, err)
	}
	srv.term(t)

	// Without --keyring the node would use the database's keys, which are not there yet: refused.
	if out, err := run(serve...); err == nil || !strings.Contains(out, "cairn keys copy") {
		t.Fatalf("serve over a database whose keys are elsewhere = %v:\n%s", err, out)
	}
	out, err := run("keys", "copy", "--from", keyring, "--to", pgURL)
	if err != nil || !strings.Contains(out, "key(s), still wrapped") || strings.Contains(out, "copied 0 ") {
		t.Fatalf("keys copy: %v\n%s", err, out)
	}
	srv = startCairn(t, bin, env, serve...)
	srv.term(t)
	if out, err := run("verify", "--data", data, "--store", pgURL, "--full", "--decrypt", "--state", filepath.Join(dir, "v.json")); err != nil {
		t.Fatalf("verify --decrypt with the database's keys: %v\n%s", err, out)
	}
}

// cleanEnv returns the environment additions that keep the caller's CAIRN_* settings out of a test's commands
// (verify state under dir), and a runner of bin with them.
func cleanEnv(bin, dir string) ([]string, func(args ...string) (string, error)) {
	env := []string{"XDG_STATE_HOME=" + filepath.Join(dir, "state"), "CAIRN_KEYRING=", "CAIRN_STORE=", "CAIRN_KEK_FILE=", "CAIRN_SIGNING_KEY_FILE="}
	return env, func(args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
}
