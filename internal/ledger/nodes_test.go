package ledger_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/seal"
	"github.com/cairn-ai/cairn/internal/store"
	"github.com/cairn-ai/cairn/internal/store/pg"
	"github.com/cairn-ai/cairn/internal/store/pg/pgtest"
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
	lg1, _ := nodes[1].Log("s")
	t.Logf("%d entries, %d client retries, %d+%d batches sequenced again after lost races", n, retries, lg0.LostRaces(), lg1.LostRaces())
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

// nodeKeys makes the keys every node of an installation shares: a KEK and a signing key.
func nodeKeys(t *testing.T) (seal.KEK, ed25519.PrivateKey) {
	k := make([]byte, 32)
	rand.Read(k)
	kek, err := seal.NewKEK(k)
	if err != nil {
		t.Fatal(err)
	}
	_, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return kek, sk
}

// pgNodes opens n ledgers ("nodes") over one fresh PostgreSQL schema, sharing keys, with the system def registered
// and open on every node. They are closed when the test ends.
func pgNodes(t *testing.T, n int, def string) []*ledger.Ledger {
	t.Helper()
	ctx := context.Background()
	url, schema, _ := pgtest.Schema(t, "cairn_nodes_")
	// Nodes share the KEK and signing key; the period keys and secrets they share through the database.
	kek, sk := nodeKeys(t)
	open := func(migrate bool) *ledger.Ledger {
		st, err := pg.Open(ctx, url, pg.Options{Schema: schema, Migrate: migrate})
		if err != nil {
			t.Fatal(err)
		}
		keys := seal.NewKeyring(st.Keys(), kek)
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

// racingStore wraps a store so that, while armed, every Append of its logs first lets "another node" append:
// the wrapped append then finds the log moved on (store.ErrStale), as when two nodes race.
type racingStore struct {
	store.Store
	before func()
}

func (s racingStore) Open(ctx context.Context, name string) (store.Log, error) {
	l, err := s.Store.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	return racingLog{Log: l, before: s.before}, nil
}

type racingLog struct {
	store.Log
	before func()
}

func (l racingLog) Shared() bool { return true }

func (l racingLog) Append(ctx context.Context, b *store.Batch) error {
	l.before()
	return l.Log.Append(ctx, b)
}

// TestLostRaceIsSequencedAgain makes node A lose races to node B deterministically. A request whose batch lost
// is sequenced again by A on the caught-up log, without the client seeing it, and lands after B's event; one that
// keeps losing is answered ErrBusy after a bounded number of attempts, with nothing of it stored.
func TestLostRaceIsSequencedAgain(t *testing.T) {
	ctx := context.Background()
	url, schema, _ := pgtest.Schema(t, "cairn_nodes_")
	kek, sk := nodeKeys(t)
	cfg := ledger.Config{Origin: "nodes.test", CheckpointInterval: 5 * time.Millisecond}
	open := func(wrap func(store.Store) store.Store) *ledger.Ledger {
		st, err := pg.Open(ctx, url, pg.Options{Schema: schema, Migrate: true})
		if err != nil {
			t.Fatal(err)
		}
		l, err := ledger.Open(ctx, cfg, wrap(st), seal.NewKeyring(st.Keys(), kek), sk)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	b := open(func(s store.Store) store.Store { return s })
	if _, _, err := b.Register(ctx, []byte(`{"id":"s","name":"n","intended_purpose":"p","provider":"q"}`), "a"); err != nil {
		t.Fatal(err)
	}
	lgB, _ := b.Log("s")
	prepare := func(lg *ledger.Log, id string) []*ledger.Prepared {
		ev, err := event.Parse(0, []byte(inference(id, 1)), time.Now(), event.DefaultLimits, false)
		if err != nil {
			t.Fatal(err)
		}
		p, err := lg.Prepare(ev, "w")
		if err != nil {
			t.Fatal(err)
		}
		return []*ledger.Prepared{p}
	}
	var (
		interfere atomic.Int32 // appends of A that B gets ahead of
		bIDs      []string
	)
	a := open(func(s store.Store) store.Store {
		return racingStore{Store: s, before: func() {
			if interfere.Add(-1) < 0 {
				interfere.Store(0)
				return
			}
			id := event.NewV7(time.Now()).String()
			if _, err := lgB.Append(ctx, prepare(lgB, id)); err != nil {
				t.Errorf("node B: %v", err)
			}
			bIDs = append(bIDs, id)
		}}
	})
	lgA, err := a.Log("s")
	if err != nil {
		t.Fatal(err)
	}

	// One lost race: the request is sequenced again and acknowledged after B's event.
	interfere.Store(1)
	idA := event.NewV7(time.Now()).String()
	rs, err := lgA.Append(ctx, prepare(lgA, idA))
	if err != nil {
		t.Fatalf("append after one lost race = %v, want it sequenced again", err)
	}
	if lgA.LostRaces() != 1 {
		t.Fatalf("LostRaces = %d, want 1", lgA.LostRaces())
	}
	if len(bIDs) != 1 || rs[0].Index != 2 {
		t.Fatalf("A's event acknowledged at %d, want 2 (after the registration and B's event)", rs[0].Index)
	}
	for i, want := range []string{bIDs[0], idA} {
		e, err := lgA.Entry(ctx, uint64(i+1))
		if err != nil || e.ID.String() != want {
			t.Fatalf("entry %d = %v, %v; want %s", i+1, e, err, want)
		}
	}

	// A request that keeps losing is answered ErrBusy, and nothing of it is stored.
	interfere.Store(1000)
	idLoser := event.NewV7(time.Now()).String()
	if _, err := lgA.Append(ctx, prepare(lgA, idLoser)); !errors.Is(err, ledger.ErrBusy) {
		t.Fatalf("append that always loses = %v, want ErrBusy", err)
	}
	interfere.Store(0)
	n := lgB.Store().Size()
	if int(n) != 1+len(bIDs)+1 {
		t.Fatalf("log has %d entries, want %d (registration, B's %d, A's one)", n, 2+len(bIDs), len(bIDs))
	}
	for i := uint64(0); i < n; i++ {
		if e, _ := lgA.Entry(ctx, i); e != nil && e.ID.String() == idLoser {
			t.Fatalf("the losing request's event is stored at %d", i)
		}
	}
	// Its id is free: sent again (no race now), it is appended once.
	rs, err = lgA.Append(ctx, prepare(lgA, idLoser))
	if err != nil || rs[0].Duplicate || rs[0].Index != n {
		t.Fatalf("resend of the loser = %+v, %v", rs, err)
	}
}
