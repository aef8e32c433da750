package pg_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/store"
	"github.com/cairn-ai/cairn/internal/store/pg"
	"github.com/cairn-ai/cairn/internal/store/pg/pgtest"
	"github.com/cairn-ai/cairn/internal/store/storetest"
)

// testURL returns the PostgreSQL the tests run against (pgtest.URL).
func testURL(tb testing.TB) string { return pgtest.URL(tb) }

// newSchema creates an empty schema for one test, dropped with everything in it when the test ends.
func newSchema(tb testing.TB, url string) string {
	_, schema, _ := pgtest.Schema(tb, "cairn_test_")
	return schema
}

// openStore opens a store over a fresh schema, migrated, closed when the test ends.
func openStore(tb testing.TB, opts pg.Options) (*pg.Store, string, pg.Options) {
	tb.Helper()
	url := testURL(tb)
	opts.Schema = newSchema(tb, url)
	opts.Migrate = true
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := pg.Open(context.Background(), url, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s, url, opts
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) (store.Store, func() store.Store) {
		s, url, opts := openStore(t, pg.Options{HistoryInterval: time.Nanosecond}) // keep every checkpoint
		opts.Migrate = false                                                       // reopening only checks the version
		return s, func() store.Store {
			s2, err := pg.Open(context.Background(), url, opts)
			if err != nil {
				t.Fatal(err)
			}
			return s2
		}
	})
}

func TestMigrations(t *testing.T) {
	ms, err := pg.Migrations()
	if err != nil || len(ms) == 0 {
		t.Fatalf("embedded migrations: %d, %v", len(ms), err)
	}
	if pg.SchemaVersion() != len(ms) {
		t.Errorf("SchemaVersion = %d, want %d", pg.SchemaVersion(), len(ms))
	}
}

func TestSchemaVersion(t *testing.T) {
	ctx := context.Background()
	url := testURL(t)
	opts := pg.Options{Schema: newSchema(t, url), Logger: slog.New(slog.DiscardHandler)}
	if _, err := pg.Open(ctx, url, opts); !errors.Is(err, pg.ErrSchema) {
		t.Fatalf("Open of an empty schema: got %v, want ErrSchema", err)
	}
	// Several nodes migrating at once: one applies, the others find nothing to do.
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if err := pg.Migrate(ctx, url, opts); err != nil {
				t.Errorf("Migrate: %v", err)
			}
		})
	}
	wg.Wait()
	s, err := pg.Open(ctx, url, opts)
	if err != nil {
		t.Fatalf("Open after Migrate: %v", err)
	}
	s.Close()
	// A schema newer than this code: refuse to run, and refuse to migrate.
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "INSERT INTO "+pgx.Identifier{opts.Schema, "cairn_migrations"}.Sanitize()+" (version, name) VALUES ($1, 'future')", pg.SchemaVersion()+1); err != nil {
		t.Fatal(err)
	}
	if _, err := pg.Open(ctx, url, opts); !errors.Is(err, pg.ErrSchema) {
		t.Errorf("Open of a newer schema: got %v, want ErrSchema", err)
	}
	if err := pg.Migrate(ctx, url, opts); !errors.Is(err, pg.ErrSchema) {
		t.Errorf("Migrate of a newer schema: got %v, want ErrSchema", err)
	}
}

func TestCheckpointHistorySampling(t *testing.T) {
	ctx := context.Background()
	s, _, _ := openStore(t, pg.Options{HistoryInterval: time.Hour})
	lg, err := s.Create(ctx, "log")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []uint64{1, 2, 3, 2} {
		if err := lg.SetCheckpoint(ctx, n, []byte{byte('0' + n)}); err != nil {
			t.Fatal(err)
		}
	}
	if cp, err := lg.Checkpoint(ctx); err != nil || string(cp) != "3" {
		t.Errorf("Checkpoint = %q, %v; want the largest tree's, 3", cp, err)
	}
	var hist []uint64
	if err := lg.Checkpoints(ctx, func(n uint64, _ []byte) error { hist = append(hist, n); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(hist) != 1 || hist[0] != 1 {
		t.Errorf("history = %v; want only the first checkpoint within the interval", hist)
	}
}

// TestTwoNodes runs two stores ("nodes") over one database, each with writers appending to one log and retrying
// on ErrStale. Every entry must be stored once, at contiguous indices, under a tree that matches an
// independent computation over the leaves.
func TestTwoNodes(t *testing.T) {
	ctx := context.Background()
	a, url, opts := openStore(t, pg.Options{})
	b, err := pg.Open(ctx, url, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := a.Create(ctx, "shared"); err != nil {
		t.Fatal(err)
	}
	const writersPerNode, batches = 3, 25
	var (
		mu       sync.Mutex
		appended = map[event.UUID]store.Entry{}
		stale    int
		wg       sync.WaitGroup
	)
	for _, node := range []*pg.Store{a, b} {
		lg, err := node.Open(ctx, "shared")
		if err != nil {
			t.Fatal(err)
		}
		for w := range writersPerNode {
			wg.Go(func() {
				for i := range batches {
					es := storetest.Entries(0, 1+(w*7+i*13)%40, "inference")
					for {
						err := storetest.Append(ctx, lg, es)
						if errors.Is(err, store.ErrStale) {
							mu.Lock()
							stale++
							mu.Unlock()
							continue
						}
						if err != nil {
							t.Errorf("append: %v", err)
							return
						}
						break
					}
					mu.Lock()
					for _, e := range es {
						appended[e.ID] = e
					}
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	t.Logf("%d entries appended by %d writers on 2 nodes; %d appends retried after ErrStale", len(appended), 2*writersPerNode, stale)

	lg, err := b.Open(ctx, "shared")
	if err != nil {
		t.Fatal(err)
	}
	n := lg.Size()
	if n != uint64(len(appended)) {
		t.Fatalf("Size = %d, want %d", n, len(appended))
	}
	var (
		mem  []tlog.Hash
		next uint64
		seen = map[event.UUID]bool{}
	)
	r := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = mem[x]
		}
		return out, nil
	})
	err = lg.Entries(ctx, 0, n, func(e *store.Entry) error {
		if e.Index != next {
			t.Fatalf("entry %d where %d was expected", e.Index, next)
		}
		next++
		want, ok := appended[e.ID]
		if !ok || seen[e.ID] {
			t.Fatalf("entry %d (%s): appended %v, seen before %v", e.Index, e.ID, ok, seen[e.ID])
		}
		seen[e.ID] = true
		if e.Digest != want.Digest || e.Recorded != want.Recorded || string(e.Envelope) != string(want.Envelope) {
			t.Fatalf("entry %d differs from what was appended", e.Index)
		}
		hs, err := tlog.StoredHashes(int64(e.Index), e.AppendLeaf(nil), r)
		if err != nil {
			return err
		}
		mem = append(mem, hs...)
		if e.Index%53 == 0 || e.Index == n-1 {
			want, _ := tlog.TreeHash(int64(e.Index+1), r)
			got, err := tlog.TreeHash(int64(e.Index+1), lg)
			if err != nil || got != want {
				t.Fatalf("tree hash at size %d differs from an independent computation (%v)", e.Index+1, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if next != n {
		t.Fatalf("Entries visited %d entries, want %d", next, n)
	}
}

// TestDeadConnection kills the appending connection's backend just before COMMIT: nothing of the batch may be
// visible, and the same batch can then be appended.
func TestDeadConnection(t *testing.T) {
	ctx := context.Background()
	s, url, _ := openStore(t, pg.Options{})
	lg, err := s.Create(ctx, "log")
	if err != nil {
		t.Fatal(err)
	}
	if err := storetest.Append(ctx, lg, storetest.Entries(0, 10, "inference")); err != nil {
		t.Fatal(err)
	}
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	pg.SetBeforeCommit(s, func(ctx context.Context, tx pgx.Tx) error {
		pid := tx.Conn().PgConn().PID()
		var ok bool
		if err := admin.QueryRow(ctx, "SELECT pg_terminate_backend($1, 5000)", pid).Scan(&ok); err != nil || !ok {
			t.Errorf("terminate backend %d: %v, %v", pid, ok, err)
		}
		return nil
	})
	es := storetest.Entries(10, 100, "inference")
	if err := storetest.Append(ctx, lg, es); err == nil {
		t.Fatal("Append succeeded over a killed connection")
	} else {
		t.Logf("Append over a killed connection: %v", err)
	}
	pg.SetBeforeCommit(s, nil)
	if n := lg.Size(); n != 10 {
		t.Errorf("Size after a killed append = %d, want 10", n)
	}
	if _, err := lg.Entry(ctx, 10); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Entry(10) after a killed append: %v, want ErrNotFound", err)
	}
	if _, err := lg.ReadHashes([]int64{tlog.StoredHashCount(10)}); err == nil {
		t.Errorf("a stored hash of the killed append is visible")
	}
	if err := storetest.Append(ctx, lg, es); err != nil {
		t.Fatalf("Append after the killed one: %v", err)
	}
	if n := lg.Size(); n != 110 {
		t.Errorf("Size = %d, want 110", n)
	}
}

// TestCommitOutcome checks how Append resolves a COMMIT whose reply was lost: present batch, success; absent
// batch, the error.
func TestCommitOutcome(t *testing.T) {
	ctx := context.Background()
	s, _, _ := openStore(t, pg.Options{})
	lg, err := s.Create(ctx, "log")
	if err != nil {
		t.Fatal(err)
	}
	es := storetest.Entries(0, 5, "inference")
	if err := storetest.Append(ctx, lg, es); err != nil {
		t.Fatal(err)
	}
	if err := pg.ResolveCommit(lg, &store.Batch{Start: 0, Entries: es}, io.ErrUnexpectedEOF); err != nil {
		t.Errorf("a committed batch was reported failed: %v", err)
	}
	other := storetest.Entries(0, 5, "inference")
	if err := pg.ResolveCommit(lg, &store.Batch{Start: 0, Entries: other}, io.ErrUnexpectedEOF); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("a batch that is not stored was reported committed: %v", err)
	}
	later := storetest.Entries(5, 5, "inference")
	if err := pg.ResolveCommit(lg, &store.Batch{Start: 5, Entries: later}, io.ErrUnexpectedEOF); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("a batch past the end was reported committed: %v", err)
	}
}

// TestLeaves: Leaves answers the same leaf fields as Entries, without envelopes and payloads, across pages.
func TestLeaves(t *testing.T) {
	ctx := context.Background()
	s, _, _ := openStore(t, pg.Options{})
	lg, err := s.Create(ctx, "leaves")
	if err != nil {
		t.Fatal(err)
	}
	b := benchBatch(0, 5000)
	b.Hashes = make([]tlog.Hash, tlog.StoredHashCount(5000))
	if err := lg.Append(ctx, b); err != nil {
		t.Fatal(err)
	}
	var full []store.Entry
	if err := lg.Entries(ctx, 10, 4500, func(e *store.Entry) error { full = append(full, *e); return nil }); err != nil {
		t.Fatal(err)
	}
	i := 0
	err = lg.(store.LeafReader).Leaves(ctx, 10, 4500, func(e *store.Entry) error {
		f := full[i]
		if e.Envelope != nil || e.Sealed != nil {
			t.Fatalf("Leaves answered entry %d with its envelope or payload", e.Index)
		}
		if e.Index != f.Index || e.ID != f.ID || e.Recorded != f.Recorded || e.Type != f.Type || e.Digest != f.Digest ||
			e.Salt != f.Salt || e.ContentKey != f.ContentKey {
			t.Fatalf("Leaves entry %d differs from Entries", e.Index)
		}
		i++
		return nil
	})
	if err != nil || i != len(full) || i != 4490 {
		t.Fatalf("Leaves read %d entries (Entries %d), %v", i, len(full), err)
	}
}
