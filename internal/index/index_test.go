package index

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/store"
	"github.com/cairn-ai/cairn/internal/store/local"
	"github.com/cairn-ai/cairn/internal/store/storetest"
)

// appendEntries appends entries to lg in batches, computing the tree's stored hashes as the ledger does.
func appendEntries(tb testing.TB, lg store.Log, entries []store.Entry) {
	tb.Helper()
	for len(entries) > 0 {
		n := min(len(entries), 1000)
		if err := storetest.Append(context.Background(), lg, entries[:n]); err != nil {
			tb.Fatal(err)
		}
		entries = entries[n:]
	}
}

var (
	types  = []string{"model.inference", "model.decision", "human.review", "human.override", "system.alert"}
	models = []*event.Model{
		nil,
		{Name: "gpt-x", Version: "1"},
		{Name: "gpt-x", Version: "2"},
		{Name: "llama", Version: "3", Digest: "sha256:" + fmt.Sprintf("%064x", 7)},
	}
	deployments = []string{"", "eu-prod", "us-prod", "staging"}
	actors      = []string{"svc:api", "user:alice", "user:bob", ""}
	baseTime    = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
)

// gen makes synthetic entries and, independently of the index, the rows they should index as.
type gen struct {
	system   string
	rng      *rand.Rand
	recorded int64
}

func newGen(system string, seed uint64) *gen {
	return &gen{system: system, rng: rand.New(rand.NewPCG(seed, 1)), recorded: baseTime.UnixNano()}
}

func (g *gen) make(n int) ([]store.Entry, []Row) {
	entries := make([]store.Entry, n)
	rows := make([]Row, n)
	for i := range entries {
		// Recorded times never decrease, with ties; client times wander around them.
		g.recorded += int64(g.rng.IntN(3)) * int64(time.Millisecond)
		at := time.Unix(0, g.recorded+int64(g.rng.IntN(int(2*time.Hour)))-int64(time.Hour)).UTC()
		env := event.Envelope{
			ID:         event.NewV7(time.Unix(0, g.recorded)),
			System:     g.system,
			Type:       types[g.rng.IntN(len(types))],
			Time:       at,
			Actor:      actors[g.rng.IntN(len(actors))],
			Model:      models[g.rng.IntN(len(models))],
			Deployment: deployments[g.rng.IntN(len(deployments))],
		}
		if g.rng.IntN(3) == 0 {
			env.Attrs = []byte(`{"k":1,"tag":"x"}`)
		}
		if g.rng.IntN(4) == 0 {
			env.Refs = []event.UUID{event.NewV7(at)}
		}
		if g.rng.IntN(2) == 0 {
			env.Payload = &event.PayloadRef{Digest: sha256.Sum256([]byte{byte(i)}), Size: 100 + i, Key: "pk-2026-03", KeyCommit: sha256.Sum256([]byte("k"))}
		}
		e := store.Entry{ID: env.ID, Recorded: g.recorded, Type: env.Type}
		binary.LittleEndian.PutUint64(e.Salt[:], g.rng.Uint64())
		r := Row{ID: env.ID.String(), Type: env.Type, Recorded: time.Unix(0, g.recorded).UTC()}
		switch g.rng.IntN(40) {
		case 0: // destroyed by retention: leaf fields only
		case 1: // damaged envelope: indexed by its leaf fields only
			e.Envelope = []byte(`{"not":"an envelope"`)
		default:
			buf := env.AppendHead(nil)
			buf = event.AppendRecorded(buf, g.recorded)
			e.Envelope = env.AppendTail(buf)
			r.Time = at
			if env.Model != nil {
				r.ModelName, r.ModelVersion = env.Model.Name, env.Model.Version
			}
			r.Deployment, r.Actor = env.Deployment, env.Actor
		}
		e.Digest = event.Digest(e.Salt[:], e.Envelope)
		entries[i], rows[i] = e, r
	}
	return entries, rows
}

// fixture is a store with logs and the rows each should index as.
type fixture struct {
	st   *local.Store
	logs map[string]store.Log
	gens map[string]*gen
	want map[string][]Row
}

func newFixture(t testing.TB) *fixture {
	st, err := local.Open(t.TempDir(), local.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &fixture{st: st, logs: map[string]store.Log{}, gens: map[string]*gen{}, want: map[string][]Row{}}
}

// add appends n entries to system's log (creating it).
func (f *fixture) add(t testing.TB, system string, n int) {
	lg, ok := f.logs[system]
	if !ok {
		var err error
		if lg, err = f.st.Create(context.Background(), system); err != nil {
			t.Fatal(err)
		}
		f.logs[system] = lg
		f.gens[system] = newGen(system, uint64(len(f.gens)+1))
	}
	entries, rows := f.gens[system].make(n)
	for i := range rows {
		rows[i].Index = lg.Size() + uint64(i)
	}
	appendEntries(t, lg, entries)
	f.want[system] = append(f.want[system], rows...)
}

func openIndex(t testing.TB, path string) *Index {
	x, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	x.log = slog.New(slog.DiscardHandler) // the damaged envelopes of the test data warn
	return x
}

// matches is the test's own reading of a query.
func matches(q Query, r Row) bool {
	if len(q.Types) > 0 && !slices.Contains(q.Types, r.Type) {
		return false
	}
	if !q.From.IsZero() && (r.Time.IsZero() || r.Time.Before(q.From)) {
		return false
	}
	if !q.To.IsZero() && (r.Time.IsZero() || !r.Time.Before(q.To)) {
		return false
	}
	if !q.RecordedFrom.IsZero() && r.Recorded.Before(q.RecordedFrom) {
		return false
	}
	if !q.RecordedTo.IsZero() && !r.Recorded.Before(q.RecordedTo) {
		return false
	}
	if q.ModelName != "" && r.ModelName != q.ModelName ||
		q.ModelVersion != "" && r.ModelVersion != q.ModelVersion ||
		q.Deployment != "" && r.Deployment != q.Deployment ||
		q.Actor != "" && r.Actor != q.Actor {
		return false
	}
	return !q.HasAfter || r.Index > q.After
}

func expect(q Query, all []Row) []Row {
	limit := q.Limit
	if limit <= 0 {
		limit = 100
	}
	var out []Row
	for _, r := range all {
		if len(out) < limit && matches(q, r) {
			out = append(out, r)
		}
	}
	return out
}

func sameRow(a, b Row) bool {
	return a.Index == b.Index && a.ID == b.ID && a.Type == b.Type && a.Time.Equal(b.Time) &&
		a.Time.IsZero() == b.Time.IsZero() && a.Recorded.Equal(b.Recorded) && a.ModelName == b.ModelName &&
		a.ModelVersion == b.ModelVersion && a.Deployment == b.Deployment && a.Actor == b.Actor
}

func checkRows(t *testing.T, what string, got, want []Row) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d rows, want %d", what, len(got), len(want))
	}
	for i := range got {
		if !sameRow(got[i], want[i]) {
			t.Fatalf("%s: row %d:\n got %+v\nwant %+v", what, i, got[i], want[i])
		}
	}
}

// findAll pages through a query with the given page size.
func findAll(t *testing.T, x *Index, q Query, page int) []Row {
	t.Helper()
	q.Limit = page
	var out []Row
	for {
		rows, err := x.Find(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, rows...)
		if len(rows) < page {
			return out
		}
		q.After, q.HasAfter = rows[len(rows)-1].Index, true
	}
}

func TestFind(t *testing.T) {
	f := newFixture(t)
	f.add(t, "sys-a", 3000)
	f.add(t, "sys-b", 700)
	f.add(t, "sys-a", 1200) // a second append: rows continue where the first ended
	x := openIndex(t, filepath.Join(t.TempDir(), "index.db"))
	defer x.Close()
	ctx := context.Background()
	for s, lg := range f.logs {
		if err := x.CatchUp(ctx, s, lg); err != nil {
			t.Fatal(err)
		}
		if wm, err := x.Watermark(s); err != nil || wm != lg.Size() {
			t.Fatalf("%s: watermark %d, %v; want %d", s, wm, err, lg.Size())
		}
	}
	all := f.want["sys-a"]
	rec := func(i int) time.Time { return all[i].Recorded }
	queries := []Query{
		{},
		{Types: []string{"human.review"}},
		{Types: []string{"human.review", "system.alert"}},
		{Types: []string{"no.such.type"}},
		{From: baseTime.Add(30 * time.Minute)},
		{To: baseTime.Add(30 * time.Minute)},
		{From: baseTime, To: baseTime.Add(time.Hour)},
		{RecordedFrom: rec(1000)},
		{RecordedTo: rec(1000)},
		{RecordedFrom: rec(500), RecordedTo: rec(2500)},
		{RecordedFrom: rec(2500), RecordedTo: rec(500)},
		{RecordedFrom: rec(len(all) - 1).Add(time.Nanosecond)},
		{RecordedTo: rec(0)},
		{RecordedFrom: rec(0).Add(-time.Hour), RecordedTo: rec(len(all) - 1).Add(time.Hour)},
		{ModelName: "gpt-x"},
		{ModelName: "gpt-x", ModelVersion: "2"},
		{ModelVersion: "3"},
		{Deployment: "eu-prod"},
		{Actor: "user:bob"},
		{Types: []string{"model.inference"}, ModelName: "llama", Deployment: "staging", From: baseTime, RecordedTo: rec(3500)},
		{After: 2000, HasAfter: true},
		{After: 0, HasAfter: true},
		{After: uint64(len(all)), HasAfter: true},
		{After: 1<<64 - 1, HasAfter: true},
	}
	rng := rand.New(rand.NewPCG(42, 42))
	pick := func(xs []string) string { return xs[rng.IntN(len(xs))] }
	for range 300 {
		var q Query
		if rng.IntN(2) == 0 {
			for range 1 + rng.IntN(2) {
				q.Types = append(q.Types, pick(types))
			}
		}
		if rng.IntN(3) == 0 {
			q.From = baseTime.Add(time.Duration(rng.IntN(int(2 * time.Hour))))
		}
		if rng.IntN(3) == 0 {
			q.To = baseTime.Add(time.Duration(rng.IntN(int(3 * time.Hour))))
		}
		if rng.IntN(3) == 0 {
			q.RecordedFrom = rec(rng.IntN(len(all)))
		}
		if rng.IntN(3) == 0 {
			q.RecordedTo = rec(rng.IntN(len(all))).Add(time.Duration(rng.IntN(3)))
		}
		if m := models[rng.IntN(len(models))]; m != nil && rng.IntN(2) == 0 {
			q.ModelName = m.Name
			if rng.IntN(2) == 0 {
				q.ModelVersion = m.Version
			}
		}
		if rng.IntN(3) == 0 {
			q.Deployment = pick(deployments)
		}
		if rng.IntN(3) == 0 {
			q.Actor = pick(actors)
		}
		if rng.IntN(3) == 0 {
			q.After, q.HasAfter = uint64(rng.IntN(len(all))), true
		}
		queries = append(queries, q)
	}
	// Every query under every plan: with the time probe as configured (narrow ranges via the time index) and
	// with it off (time ranges filtered on whatever other path the query takes).
	defer func(p int) { timeProbeLimit = p }(timeProbeLimit)
	nonEmpty := 0
	for _, probe := range []int{10000, 0} {
		timeProbeLimit = probe
		for i, q := range queries {
			q.System = "sys-a"
			want := expect(Query{Limit: 1 << 30, Types: q.Types, From: q.From, To: q.To, RecordedFrom: q.RecordedFrom,
				RecordedTo: q.RecordedTo, ModelName: q.ModelName, ModelVersion: q.ModelVersion, Deployment: q.Deployment,
				Actor: q.Actor, After: q.After, HasAfter: q.HasAfter}, all)
			if len(want) > 0 {
				nonEmpty++
			}
			// All at once.
			q.Limit = maxLimit
			got, err := x.Find(ctx, q)
			if err != nil {
				t.Fatalf("query %d %+v: %v", i, q, err)
			}
			checkRows(t, fmt.Sprintf("query %d %+v", i, q), got, want)
			// Default limit.
			q.Limit = 0
			got, err = x.Find(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			checkRows(t, fmt.Sprintf("query %d (default limit)", i), got, want[:min(len(want), 100)])
			// Paged.
			if i%10 == 0 {
				checkRows(t, fmt.Sprintf("query %d paged", i), findAll(t, x, q, 5+i%97), want)
			}
		}
	}
	if nonEmpty < len(queries) {
		t.Fatalf("only %d of %d queries match anything: the test data is too sparse", nonEmpty, len(queries))
	}

	// Systems are separate.
	checkRows(t, "sys-b", findAll(t, x, Query{System: "sys-b"}, 10000), f.want["sys-b"])
	got, err := x.Find(ctx, Query{System: "sys-c"})
	if err != nil || len(got) != 0 {
		t.Fatalf("unknown system: %v, %v", got, err)
	}
	if _, err := x.Find(ctx, Query{}); err == nil {
		t.Fatal("query without a system accepted")
	}
	if got, err := x.Find(ctx, Query{System: "sys-a", Limit: 1 << 20}); err != nil || len(got) != len(all) {
		t.Fatalf("large limit: %d rows, %v", len(got), err)
	}
	checkRows(t, "limit 1", must(x.Find(ctx, Query{System: "sys-a", Limit: 1})), all[:1])

	// ByID.
	for i := 0; i < len(all); i += 7 {
		idx, ok, err := x.ByID(ctx, "sys-a", all[i].ID)
		if err != nil || !ok || idx != all[i].Index {
			t.Fatalf("ByID(%s) = %d, %v, %v; want %d", all[i].ID, idx, ok, err, all[i].Index)
		}
	}
	for _, id := range []string{f.want["sys-b"][0].ID, event.NewV7(time.Now()).String(), "not-a-uuid", ""} {
		if idx, ok, err := x.ByID(ctx, "sys-a", id); err != nil || ok {
			t.Fatalf("ByID(%q) = %d, %v, %v; want not found", id, idx, ok, err)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestFollow(t *testing.T) {
	f := newFixture(t)
	f.add(t, "sys", 1500)
	lg := f.logs["sys"]
	x := openIndex(t, filepath.Join(t.TempDir(), "index.db"))
	defer x.Close()

	ctx, cancel := context.WithCancel(context.Background())
	wake := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() { done <- x.Follow(ctx, "sys", lg, wake) }()

	waitFor := func(n uint64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			wm, err := x.Watermark("sys")
			if err != nil {
				t.Fatal(err)
			}
			if wm == n {
				return
			}
			if wm > n || time.Now().After(deadline) {
				t.Fatalf("watermark %d, want %d", wm, n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor(1500)
	for _, n := range []int{1, 10, 7000, 3} {
		f.add(t, "sys", n)
		select {
		case wake <- struct{}{}:
		default:
		}
		waitFor(lg.Size())
	}
	checkRows(t, "followed", findAll(t, x, Query{System: "sys"}, 10000), f.want["sys"])

	// Without a wake-up, the poll picks new entries up.
	f.add(t, "sys", 20)
	waitFor(lg.Size())

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Follow returned %v after cancel", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Follow did not stop on cancel")
	}
	// Stopped: nothing more is indexed.
	n := lg.Size()
	f.add(t, "sys", 5)
	time.Sleep(3 * pollInterval)
	if wm, _ := x.Watermark("sys"); wm != n {
		t.Fatalf("watermark moved to %d after Follow stopped at %d", wm, n)
	}
	checkRows(t, "after stop", findAll(t, x, Query{System: "sys"}, 10000), f.want["sys"][:n])
}

func TestFollowClosedWake(t *testing.T) {
	f := newFixture(t)
	f.add(t, "sys", 10)
	x := openIndex(t, filepath.Join(t.TempDir(), "index.db"))
	defer x.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	wake := make(chan struct{})
	close(wake) // a closed wake channel must not make Follow spin or stop
	if err := x.Follow(ctx, "sys", f.logs["sys"], wake); err != nil {
		t.Fatal(err)
	}
	if wm, _ := x.Watermark("sys"); wm != 10 {
		t.Fatalf("watermark %d", wm)
	}
}

func TestRestart(t *testing.T) {
	f := newFixture(t)
	f.add(t, "sys", 2500)
	lg := f.logs["sys"]
	path := filepath.Join(t.TempDir(), "my index?.db")
	ctx := context.Background()

	x := openIndex(t, path)
	if err := x.CatchUp(ctx, "sys", lg); err != nil {
		t.Fatal(err)
	}
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	f.add(t, "sys", 6100)

	x = openIndex(t, path)
	defer x.Close()
	if wm, err := x.Watermark("sys"); err != nil || wm != 2500 {
		t.Fatalf("watermark after reopen %d, %v", wm, err)
	}
	// A follower interrupted mid-way, then restarted.
	ctx2, cancel := context.WithCancel(ctx)
	go func() {
		for {
			if wm, _ := x.Watermark("sys"); wm > 2500 {
				cancel()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	if err := x.Follow(ctx2, "sys", lg, nil); err != nil {
		t.Fatal(err)
	}
	if err := x.CatchUp(ctx, "sys", lg); err != nil {
		t.Fatal(err)
	}
	if wm, err := x.Watermark("sys"); err != nil || wm != lg.Size() {
		t.Fatalf("watermark %d, %v; want %d", wm, err, lg.Size())
	}
	var count int
	if err := x.r.QueryRow(`SELECT count(*) FROM events WHERE system = 'sys'`).Scan(&count); err != nil || count != int(lg.Size()) {
		t.Fatalf("%d rows, %v; want %d", count, err, lg.Size())
	}
	checkRows(t, "resumed", findAll(t, x, Query{System: "sys"}, 10000), f.want["sys"])
}

func TestResetRebuild(t *testing.T) {
	f := newFixture(t)
	f.add(t, "sys", 3000)
	f.add(t, "other", 100)
	x := openIndex(t, filepath.Join(t.TempDir(), "index.db"))
	defer x.Close()
	ctx := context.Background()
	for s, lg := range f.logs {
		if err := x.CatchUp(ctx, s, lg); err != nil {
			t.Fatal(err)
		}
	}
	before := findAll(t, x, Query{System: "sys"}, 10000)
	checkRows(t, "before", before, f.want["sys"])

	if err := x.Reset("sys"); err != nil {
		t.Fatal(err)
	}
	if wm, err := x.Watermark("sys"); err != nil || wm != 0 {
		t.Fatalf("watermark after reset %d, %v", wm, err)
	}
	if got := findAll(t, x, Query{System: "sys"}, 10000); len(got) != 0 {
		t.Fatalf("%d rows after reset", len(got))
	}
	if _, ok, _ := x.ByID(ctx, "sys", before[0].ID); ok {
		t.Fatal("ByID finds a reset row")
	}
	checkRows(t, "other system untouched", findAll(t, x, Query{System: "other"}, 10000), f.want["other"])

	if err := x.CatchUp(ctx, "sys", f.logs["sys"]); err != nil {
		t.Fatal(err)
	}
	checkRows(t, "rebuilt", findAll(t, x, Query{System: "sys"}, 10000), before)
}

// A Reset while a follower runs: the follower starts over and the index ends complete, without duplicates.
func TestResetWhileFollowing(t *testing.T) {
	f := newFixture(t)
	f.add(t, "sys", 11000)
	lg := f.logs["sys"]
	x := openIndex(t, filepath.Join(t.TempDir(), "index.db"))
	defer x.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- x.Follow(ctx, "sys", lg, nil) }()
	for i := 0; i < 3; i++ {
		time.Sleep(20 * time.Millisecond)
		if err := x.Reset("sys"); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if wm, _ := x.Watermark("sys"); wm == lg.Size() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("follower did not catch up after reset")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	checkRows(t, "after reset", findAll(t, x, Query{System: "sys"}, 10000), f.want["sys"])
	// The limit is capped.
	if got, err := x.Find(context.Background(), Query{System: "sys", Limit: 1 << 20}); err != nil || len(got) != maxLimit {
		t.Fatalf("limit not capped: %d rows, %v", len(got), err)
	}
}

// Several writers of one system (a follower and reindex runs, say) never duplicate rows or report errors.
func TestConcurrentCatchUp(t *testing.T) {
	f := newFixture(t)
	f.add(t, "sys", 100)
	lg := f.logs["sys"]
	x := openIndex(t, filepath.Join(t.TempDir(), "index.db"))
	defer x.Close()
	ctx := context.Background()
	stop := make(chan struct{})
	errs := make(chan error, 3)
	for range 3 {
		go func() {
			for {
				select {
				case <-stop:
					errs <- x.CatchUp(ctx, "sys", lg)
					return
				default:
				}
				if err := x.CatchUp(ctx, "sys", lg); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for range 30 {
		f.add(t, "sys", 1+len(f.want["sys"])%300)
		time.Sleep(time.Millisecond)
	}
	close(stop)
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	checkRows(t, "concurrent", findAll(t, x, Query{System: "sys"}, 10000), f.want["sys"])
}

func TestAhead(t *testing.T) {
	f := newFixture(t)
	f.add(t, "sys", 50)
	x := openIndex(t, filepath.Join(t.TempDir(), "index.db"))
	defer x.Close()
	ctx := context.Background()
	if err := x.CatchUp(ctx, "sys", f.logs["sys"]); err != nil {
		t.Fatal(err)
	}
	// The same name, another (shorter) log.
	g := newFixture(t)
	g.add(t, "sys", 10)
	if err := x.CatchUp(ctx, "sys", g.logs["sys"]); !errors.Is(err, ErrAhead) {
		t.Fatalf("CatchUp = %v, want ErrAhead", err)
	}
	if err := x.Follow(ctx, "sys", g.logs["sys"], nil); !errors.Is(err, ErrAhead) {
		t.Fatalf("Follow = %v, want ErrAhead", err)
	}
}

// BenchmarkCatchUp indexes a log of realistic entries from scratch and reports rows/s (wall clock) and rows per
// CPU-second (all goroutines, GC included), which is steadier on a shared machine.
func BenchmarkCatchUp(b *testing.B) {
	const n = 100_000
	f := newFixture(b)
	for range n / 10_000 {
		f.add(b, "sys", 10_000)
	}
	lg := f.logs["sys"]
	dir := b.TempDir()
	ctx := context.Background()
	var cpu time.Duration
	i := 0
	for b.Loop() {
		i++
		x := openIndex(b, filepath.Join(dir, fmt.Sprintf("index-%d.db", i)))
		c := cpuTime()
		if err := x.CatchUp(ctx, "sys", lg); err != nil {
			b.Fatal(err)
		}
		cpu += cpuTime() - c
		if err := x.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "rows/s")
	if cpu > 0 {
		b.ReportMetric(float64(n*b.N)/cpu.Seconds(), "rows/cpu-s")
	}
}

// TestPlans checks that each query takes the intended access path, and that the ordered paths need no sort.
func TestPlans(t *testing.T) {
	f := newFixture(t)
	f.add(t, "sys", 500)
	x := openIndex(t, filepath.Join(t.TempDir(), "index.db"))
	defer x.Close()
	ctx := context.Background()
	if err := x.CatchUp(ctx, "sys", f.logs["sys"]); err != nil {
		t.Fatal(err)
	}
	far := baseTime.Add(100 * time.Hour)
	for _, c := range []struct {
		q    Query
		want []string // in the plan, in order
		sort bool
	}{
		{Query{}, []string{"PRIMARY KEY"}, false},
		{Query{After: 7, HasAfter: true}, []string{"PRIMARY KEY (system=? AND idx>?)"}, false},
		{Query{Types: []string{"a"}}, []string{"events_type (system=? AND type=?)"}, false},
		{Query{Types: []string{"a", "b", "a"}, Actor: "x", After: 3, HasAfter: true},
			[]string{"MERGE", "events_type (system=? AND type=? AND idx>?)", "events_type (system=? AND type=? AND idx>?)"}, false},
		{Query{ModelName: "m", ModelVersion: "v", Types: []string{"a"}}, []string{"events_model (system=? AND model_name=? AND model_version=?)"}, false},
		{Query{Deployment: "d"}, []string{"events_deployment (system=? AND deployment=?)"}, false},
		{Query{Deployment: "d", Types: []string{"a"}}, []string{"events_type"}, false},
		{Query{From: far, Types: []string{"a"}}, []string{"events_time (system=? AND time>?)"}, true},
		{Query{RecordedFrom: baseTime, RecordedTo: far}, []string{"PRIMARY KEY (system=? AND idx>? AND idx<?)"}, false},
	} {
		c.q.System = "sys"
		tx, err := x.r.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		query, args, err := x.plan(ctx, tx, c.q)
		if err != nil {
			t.Fatal(err)
		}
		rs, err := tx.Query(`EXPLAIN QUERY PLAN `+query, args...)
		if err != nil {
			t.Fatalf("%+v: %v\n%s", c.q, err, query)
		}
		var plan []string
		for rs.Next() {
			var id, parent, notused int
			var detail string
			if err := rs.Scan(&id, &parent, &notused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rs.Close()
		tx.Rollback()
		all := strings.Join(plan, "\n")
		at := 0
		for _, w := range c.want {
			i := strings.Index(all[at:], w)
			if i < 0 {
				t.Errorf("%+v: plan lacks %q:\n%s", c.q, w, all)
				break
			}
			at += i + len(w)
		}
		if strings.Contains(all, "TEMP B-TREE") != c.sort {
			t.Errorf("%+v: sort %v, want %v:\n%s", c.q, !c.sort, c.sort, all)
		}
	}
}
