// Package storetest is the conformance suite of the storage contract (package store). Every backend runs it:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) (store.Store, func() store.Store) { ... })
//	}
//
// It checks behaviour, not implementation: atomic durable batches, exact reads, stored hashes usable by
// golang.org/x/mod/sumdb/tlog, stale-batch rejection, checkpoints and their history, and reopening.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/store"
)

// Run runs the conformance suite. open returns a fresh, empty store and a function that reopens a store over
// the same data (called after the first store was closed).
func Run(t *testing.T, open func(t *testing.T) (store.Store, func() store.Store)) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store, reopen func() store.Store)
	}{
		{"CreateOpenList", testCreateOpenList},
		{"AppendRead", testAppendRead},
		{"StaleBatch", testStale},
		{"TreeHashes", testTreeHashes},
		{"LastOfType", testLastOfType},
		{"Checkpoints", testCheckpoints},
		{"Reopen", testReopen},
		{"ConcurrentReads", testConcurrentReads},
		{"LargeRecord", testLargeRecord},
		{"Erase", testErase},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, reopen := open(t)
			tc.fn(t, s, reopen)
		})
	}
}

// Entries makes n synthetic entries starting at index start.
func Entries(start uint64, n int, typ string) []store.Entry {
	out := make([]store.Entry, n)
	for i := range out {
		e := &out[i]
		e.Index = start + uint64(i)
		e.ID = event.NewV7(time.Now())
		e.Recorded = time.Now().UnixNano()
		e.Type = typ
		rand.Read(e.Salt[:])
		rand.Read(e.ContentKey[:])
		e.Envelope = fmt.Appendf(nil, `{"id":"%s","n":%d}`, e.ID, e.Index)
		if i%3 != 0 {
			e.Sealed = make([]byte, 50+i%200)
			rand.Read(e.Sealed)
		}
		e.Digest = event.Digest(e.Salt[:], e.Envelope)
	}
	return out
}

// Append appends entries to lg with correctly computed stored hashes.
func Append(ctx context.Context, lg store.Log, entries []store.Entry) error {
	start := lg.Size()
	for i := range entries {
		entries[i].Index = start + uint64(i)
	}
	b := &store.Batch{Start: start, Entries: entries}
	if err := store.HashBatch(lg, b); err != nil {
		return err
	}
	return lg.Append(ctx, b)
}

func create(t *testing.T, s store.Store, name string) store.Log {
	t.Helper()
	lg, err := s.Create(context.Background(), name)
	if err != nil {
		t.Fatalf("Create(%q): %v", name, err)
	}
	return lg
}

func testCreateOpenList(t *testing.T, s store.Store, _ func() store.Store) {
	ctx := context.Background()
	create(t, s, "alpha")
	create(t, s, "beta")
	if _, err := s.Create(ctx, "alpha"); !errors.Is(err, store.ErrExists) {
		t.Errorf("Create of an existing log: got %v, want ErrExists", err)
	}
	if _, err := s.Open(ctx, "missing"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Open of a missing log: got %v, want ErrNotFound", err)
	}
	names, err := s.Logs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, n := range names {
		got[n] = true
	}
	if len(names) != 2 || !got["alpha"] || !got["beta"] {
		t.Errorf("Logs = %v, want alpha and beta", names)
	}
	lg, err := s.Open(ctx, "alpha")
	if err != nil || lg.Size() != 0 {
		t.Errorf("Open(alpha) = size %v, %v; want an empty log", lg, err)
	}
}

func equalEntry(t *testing.T, got *store.Entry, want *store.Entry) {
	t.Helper()
	if got.Index != want.Index || got.ID != want.ID || got.Recorded != want.Recorded || got.Type != want.Type ||
		got.Digest != want.Digest || got.Salt != want.Salt || got.ContentKey != want.ContentKey ||
		!bytes.Equal(got.Envelope, want.Envelope) || !bytes.Equal(got.Sealed, want.Sealed) ||
		(got.Sealed == nil) != (want.Sealed == nil) {
		t.Errorf("entry %d read back differs from what was appended", want.Index)
	}
}

func testAppendRead(t *testing.T, s store.Store, _ func() store.Store) {
	ctx := context.Background()
	lg := create(t, s, "log")
	var all []store.Entry
	for _, n := range []int{1, 7, 256, 300} {
		es := Entries(lg.Size(), n, "inference")
		if err := Append(ctx, lg, es); err != nil {
			t.Fatalf("Append %d: %v", n, err)
		}
		all = append(all, es...)
	}
	if lg.Size() != uint64(len(all)) {
		t.Fatalf("Size = %d, want %d", lg.Size(), len(all))
	}
	for i := range all {
		got, err := lg.Entry(ctx, uint64(i))
		if err != nil {
			t.Fatalf("Entry(%d): %v", i, err)
		}
		equalEntry(t, got, &all[i])
	}
	if _, err := lg.Entry(ctx, uint64(len(all))); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Entry past the end: got %v, want ErrNotFound", err)
	}
	var seen []uint64
	if err := lg.Entries(ctx, 5, 270, func(e *store.Entry) error {
		equalEntry(t, e, &all[e.Index])
		seen = append(seen, e.Index)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 265 || seen[0] != 5 || seen[len(seen)-1] != 269 {
		t.Errorf("Entries(5, 270) visited %d entries from %v", len(seen), seen[:1])
	}
	stop := errors.New("stop")
	if err := lg.Entries(ctx, 0, 10, func(*store.Entry) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("Entries did not stop at the callback's error: %v", err)
	}
}

func testStale(t *testing.T, s store.Store, _ func() store.Store) {
	ctx := context.Background()
	lg := create(t, s, "log")
	if err := Append(ctx, lg, Entries(0, 3, "inference")); err != nil {
		t.Fatal(err)
	}
	b := &store.Batch{Start: 1, Entries: Entries(1, 1, "inference")}
	if err := lg.Append(ctx, b); !errors.Is(err, store.ErrStale) {
		t.Errorf("Append at a stale start: got %v, want ErrStale", err)
	}
	if lg.Size() != 3 {
		t.Errorf("a rejected batch changed the size to %d", lg.Size())
	}
	bad := &store.Batch{Start: 3, Entries: Entries(3, 2, "inference")} // no hashes
	if err := lg.Append(ctx, bad); err == nil {
		t.Errorf("Append with missing stored hashes succeeded")
	}
	if lg.Size() != 3 {
		t.Errorf("a rejected batch changed the size to %d", lg.Size())
	}
}

func testTreeHashes(t *testing.T, s store.Store, _ func() store.Store) {
	ctx := context.Background()
	lg := create(t, s, "log")
	var leaves [][]byte
	for i := 0; i < 5; i++ {
		es := Entries(lg.Size(), 123, "inference")
		for j := range es {
			leaves = append(leaves, es[j].AppendLeaf(nil))
		}
		if err := Append(ctx, lg, es); err != nil {
			t.Fatal(err)
		}
	}
	// An independent in-memory tree over the same leaves must have the same root at every size.
	var mem []tlog.Hash
	r := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = mem[x]
		}
		return out, nil
	})
	for i, l := range leaves {
		hs, err := tlog.StoredHashes(int64(i), l, r)
		if err != nil {
			t.Fatal(err)
		}
		mem = append(mem, hs...)
		if i%97 == 0 || i == len(leaves)-1 {
			want, _ := tlog.TreeHash(int64(i+1), r)
			got, err := tlog.TreeHash(int64(i+1), lg)
			if err != nil || got != want {
				t.Fatalf("tree hash at size %d differs from an independent computation (%v)", i+1, err)
			}
		}
	}
	if _, err := lg.ReadHashes([]int64{int64(len(mem))}); err == nil {
		t.Errorf("ReadHashes past the end succeeded")
	}
}

func testLastOfType(t *testing.T, s store.Store, _ func() store.Store) {
	ctx := context.Background()
	lg := create(t, s, "log")
	Append(ctx, lg, Entries(0, 3, "a"))
	Append(ctx, lg, Entries(3, 2, "b"))
	Append(ctx, lg, Entries(5, 1, "a"))
	for typ, want := range map[string]uint64{"a": 5, "b": 4} {
		i, ok, err := lg.LastOfType(ctx, typ)
		if err != nil || !ok || i != want {
			t.Errorf("LastOfType(%s) = %d, %v, %v; want %d", typ, i, ok, err, want)
		}
	}
	if _, ok, _ := lg.LastOfType(ctx, "c"); ok {
		t.Errorf("LastOfType of an absent type reported one")
	}
}

func testCheckpoints(t *testing.T, s store.Store, _ func() store.Store) {
	ctx := context.Background()
	lg := create(t, s, "log")
	if cp, err := lg.Checkpoint(ctx); err != nil || cp != nil {
		t.Errorf("Checkpoint of a new log = %q, %v; want none", cp, err)
	}
	if err := lg.SetCheckpoint(ctx, 1, []byte("cp1\n")); err != nil {
		t.Fatal(err)
	}
	if err := lg.SetCheckpoint(ctx, 2, []byte("cp2\n")); err != nil {
		t.Fatal(err)
	}
	cp, err := lg.Checkpoint(ctx)
	if err != nil || string(cp) != "cp2\n" {
		t.Errorf("Checkpoint = %q, %v; want the latest", cp, err)
	}
	var hist []string
	lg.Checkpoints(ctx, func(n uint64, note []byte) error {
		hist = append(hist, fmt.Sprintf("%d:%s", n, note))
		return nil
	})
	if len(hist) == 0 || hist[0] != "1:cp1\n" {
		t.Errorf("history = %q; want the first checkpoint kept", hist)
	}
}

func testReopen(t *testing.T, s store.Store, reopen func() store.Store) {
	ctx := context.Background()
	lg := create(t, s, "log")
	es := Entries(0, 1000, "inference")
	if err := Append(ctx, lg, es[:600]); err != nil {
		t.Fatal(err)
	}
	if err := Append(ctx, lg, es[600:]); err != nil {
		t.Fatal(err)
	}
	root, _ := tlog.TreeHash(1000, lg)
	lg.SetCheckpoint(ctx, 1000, []byte("cp\n"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := reopen()
	defer s2.Close()
	lg2, err := s2.Open(ctx, "log")
	if err != nil {
		t.Fatal(err)
	}
	if lg2.Size() != 1000 {
		t.Fatalf("reopened size = %d, want 1000", lg2.Size())
	}
	if r2, err := tlog.TreeHash(1000, lg2); err != nil || r2 != root {
		t.Errorf("reopened tree differs")
	}
	for _, i := range []uint64{0, 599, 600, 999} {
		e, err := lg2.Entry(ctx, i)
		if err != nil {
			t.Fatal(err)
		}
		equalEntry(t, e, &es[i])
	}
	if cp, _ := lg2.Checkpoint(ctx); string(cp) != "cp\n" {
		t.Errorf("reopened checkpoint = %q", cp)
	}
	if err := Append(ctx, lg2, Entries(1000, 5, "inference")); err != nil || lg2.Size() != 1005 {
		t.Errorf("append after reopen: %v, size %d", err, lg2.Size())
	}
}

func testConcurrentReads(t *testing.T, s store.Store, _ func() store.Store) {
	ctx := context.Background()
	lg := create(t, s, "log")
	Append(ctx, lg, Entries(0, 10, "inference"))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for r := 0; r < 4; r++ {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				n := lg.Size()
				if _, err := lg.Entry(ctx, n-1); err != nil {
					t.Errorf("reading the last entry of a size-%d log: %v", n, err)
					return
				}
				if _, err := tlog.TreeHash(int64(n), lg); err != nil {
					t.Errorf("tree hash at size %d: %v", n, err)
					return
				}
			}
		})
	}
	for i := 0; i < 50; i++ {
		if err := Append(ctx, lg, Entries(lg.Size(), 1+i%40, "inference")); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}

func testLargeRecord(t *testing.T, s store.Store, _ func() store.Store) {
	ctx := context.Background()
	lg := create(t, s, "log")
	es := Entries(0, 2, "inference")
	es[1].Sealed = make([]byte, 3<<20)
	rand.Read(es[1].Sealed)
	if err := Append(ctx, lg, es); err != nil {
		t.Fatal(err)
	}
	got, err := lg.Entry(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	equalEntry(t, got, &es[1])
}

// testErase: retention erases envelopes and payloads of chosen entries and re-wraps sealed payloads in place;
// leaves, the tree and every other entry stay exactly as they were, across a reopen, and appends go on.
func testErase(t *testing.T, s store.Store, reopen func() store.Store) {
	ctx := context.Background()
	lg := create(t, s, "log")
	es := Entries(0, 300, "inference")
	for k := 0; k < 300; k += 100 { // several batches, so erases span frames
		if err := Append(ctx, lg, es[k:k+100]); err != nil {
			t.Fatal(err)
		}
	}
	root, err := tlog.TreeHash(300, lg)
	if err != nil {
		t.Fatal(err)
	}
	erase := []uint64{1, 2, 5, 99, 100, 101, 250, 299}
	if err := lg.Erase(ctx, erase); err != nil {
		t.Fatalf("Erase: %v", err)
	}
	if err := lg.Erase(ctx, erase[:3]); err != nil {
		t.Fatalf("Erase of erased entries: %v", err)
	}
	if err := lg.Erase(ctx, []uint64{300}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Erase beyond the log: got %v, want ErrNotFound", err)
	}
	// Re-wrap one kept payload: same length, new bytes.
	var kept uint64 = 4 // 4%3 != 0: has a sealed payload
	repl := bytes.Clone(es[kept].Sealed)
	for i := range repl[:20] {
		repl[i] ^= 0xa5
	}
	if err := lg.ReplaceSealed(ctx, kept, repl); err != nil {
		t.Fatalf("ReplaceSealed: %v", err)
	}
	if err := lg.ReplaceSealed(ctx, kept, repl[:len(repl)-1]); err == nil {
		t.Errorf("ReplaceSealed with a shorter payload succeeded")
	}
	if err := lg.ReplaceSealed(ctx, 3, make([]byte, 10)); err == nil { // 3%3 == 0: no payload
		t.Errorf("ReplaceSealed of an entry without payload succeeded")
	}
	if err := lg.ReplaceSealed(ctx, 2, make([]byte, 10)); err == nil {
		t.Errorf("ReplaceSealed of an erased entry succeeded")
	}
	es[kept].Sealed = repl
	check := func(lg store.Log) {
		t.Helper()
		if r, err := tlog.TreeHash(300, lg); err != nil || r != root {
			t.Errorf("tree changed by Erase: %v", err)
		}
		n := 0
		err := lg.Entries(ctx, 0, 300, func(e *store.Entry) error {
			want := es[e.Index]
			if slices.Contains(erase, e.Index) {
				n++
				if e.Envelope != nil || e.Sealed != nil || e.Salt != ([16]byte{}) || e.ContentKey != ([16]byte{}) {
					t.Errorf("entry %d: erased, but envelope %v, sealed %v, salt or content key kept", e.Index, e.Envelope != nil, e.Sealed != nil)
				}
				if e.ID != want.ID || e.Recorded != want.Recorded || e.Type != want.Type || e.Digest != want.Digest {
					t.Errorf("entry %d: leaf fields changed by Erase", e.Index)
				}
				return nil
			}
			equalEntry(t, e, &want)
			return nil
		})
		if err != nil || n != len(erase) {
			t.Errorf("Entries after Erase: %v, %d erased seen", err, n)
		}
	}
	check(lg)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := reopen()
	defer s2.Close()
	lg2, err := s2.Open(ctx, "log")
	if err != nil {
		t.Fatal(err)
	}
	check(lg2)
	if err := Append(ctx, lg2, Entries(300, 5, "inference")); err != nil || lg2.Size() != 305 {
		t.Errorf("append after erase and reopen: %v, size %d", err, lg2.Size())
	}
}
