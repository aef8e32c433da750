package ledger_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/seal"
	"github.com/cairn-ai/cairn/internal/store/pg"
)

// TestTwoNodesOneLog runs two ledgers (two "nodes") over one PostgreSQL schema, appending to one log
// concurrently: every acknowledged event is present exactly once at its index, indices are contiguous, and
// the checkpoints both nodes publish are of one tree.
func TestTwoNodesOneLog(t *testing.T) {
	ctx := context.Background()
	nodes := pgNodes(t, 2, `{"id":"s","name":"n","intended_purpose":"p","provider":"q"}`)

	var mu sync.Mutex
	acked := map[uint64]string{}
	retries := 0
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Go(func() {
			lg, _ := nodes[w%2].Log("s")
			for i := 0; i < 40; i++ {
				id := event.NewV7(time.Now()).String()
				raws := []string{inference(id, i), inference("", i)}
				for attempt := 0; ; attempt++ {
					var ps []*ledger.Prepared
					for j, raw := range raws {
						ev, _ := event.Parse(j, []byte(raw), time.Now(), event.DefaultLimits, false)
						p, err := lg.Prepare(ev, "w")
						if err != nil {
							t.Error(err)
							return
						}
						ps = append(ps, p)
					}
					rs, err := lg.Append(ctx, ps)
					if errors.Is(err, ledger.ErrBusy) && attempt < 100 {
						mu.Lock()
						retries++
						mu.Unlock()
						raws[1] = inference(id2(id), i) // the server-id event becomes idempotent on retry
						continue
					}
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					for _, r := range rs {
						if old, ok := acked[r.Index]; ok && old != r.ID.String() {
							t.Errorf("index %d acknowledged for %s and %s", r.Index, old, r.ID)
						}
						acked[r.Index] = r.ID.String()
					}
					mu.Unlock()
					break
				}
			}
		})
	}
	wg.Wait()
	lg0, _ := nodes[0].Log("s")
	n := lg0.Store().Size()
	seen := map[string]bool{}
	for i := uint64(0); i < n; i++ {
		e, err := lg0.Entry(ctx, i)
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if e.Index != i {
			t.Fatalf("entry %d has index %d", i, e.Index)
		}
		if seen[e.ID.String()] {
			t.Errorf("id %s stored twice", e.ID)
		}
		seen[e.ID.String()] = true
		if want, ok := acked[i]; ok && want != e.ID.String() {
			t.Errorf("index %d holds %s, acknowledged as %s", i, e.ID, want)
		}
	}
	if len(acked) != 8*40*2 {
		t.Errorf("%d events acknowledged, want %d", len(acked), 8*40*2)
	}
	t.Logf("%d entries, %d retries after lost races", n, retries)
	// Checkpoints from both nodes are of one tree.
	for _, l := range nodes {
		lg, _ := l.Log("s")
		deadline := time.Now().Add(5 * time.Second)
		for {
			note, size := lg.Checkpoint()
			if note != nil {
				cp, err := ledger.OpenCheckpoint(note, l.VerifierKey("s"))
				if err != nil {
					t.Fatal(err)
				}
				root, _ := tlog.TreeHash(int64(cp.Size), lg.Store())
				if root != cp.Root {
					t.Errorf("a node published a checkpoint of size %d that is not the shared tree", cp.Size)
				}
			}
			if size > 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// pgNodes opens n ledgers ("nodes") over one fresh PostgreSQL schema, sharing keys, with the system def registered
// and open on every node. They are closed when the test ends.
func pgNodes(t *testing.T, n int, def string) []*ledger.Ledger {
	t.Helper()
	url := os.Getenv("CAIRN_TEST_PG")
	if url == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("CAIRN_TEST_PG is not set in CI")
		}
		t.Skip("CAIRN_TEST_PG not set")
	}
	ctx := context.Background()
	schema := "cairn_nodes_" + randHex(6)
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	c.Close(ctx)
	t.Cleanup(func() {
		c, err := pgx.Connect(ctx, url)
		if err == nil {
			c.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
			c.Close(ctx)
		}
	})
	k := make([]byte, 32)
	rand.Read(k)
	kek, _ := seal.NewKEK(k)
	keyDir := t.TempDir() // nodes share the KEK and the period keys (a shared key store in production)
	_, sk, _ := ed25519.GenerateKey(rand.Reader)
	open := func(migrate bool) *ledger.Ledger {
		st, err := pg.Open(ctx, url, pg.Options{Schema: schema, Migrate: migrate})
		if err != nil {
			t.Fatal(err)
		}
		keys, _ := seal.OpenKeyring(keyDir, kek)
		l, err := ledger.Open(ctx, ledger.Config{Origin: "nodes.test", CheckpointInterval: 5 * time.Millisecond}, st, keys, sk)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	first := open(true)
	if _, _, err := first.Register(ctx, []byte(def), "a"); err != nil {
		t.Fatal(err)
	}
	// The other nodes open the log as it now exists (a real server opens logs as they appear).
	nodes := []*ledger.Ledger{first}
	for len(nodes) < n {
		nodes = append(nodes, open(false))
	}
	t.Cleanup(func() {
		for _, l := range nodes {
			l.Close()
		}
	})
	return nodes
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// id2 derives a second fixed UUIDv7 from the first, so a retried request sends the same ids.
func id2(id string) string {
	u, _ := event.ParseUUID(id)
	u[15] ^= 0xff
	return u.String()
}
