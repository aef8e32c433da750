package local_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/cairn-ai/cairn/internal/store"
	"github.com/cairn-ai/cairn/internal/store/local"
	"github.com/cairn-ai/cairn/internal/store/local/crashfs"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func openCrash(t *testing.T, fsys *crashfs.FS) (*local.Store, error) {
	t.Helper()
	return local.Open("/data", local.Options{FS: fsys, FlushInterval: time.Hour, Logger: quiet})
}

// TestCrashDuringCreate crashes at every operation of creating a store and a log, and of its first append:
// after recovery the log is either absent or complete and openable, and an acknowledged append is kept.
func TestCrashDuringCreate(t *testing.T) {
	ctx := context.Background()
	for k := int64(1); ; k++ {
		fsys := crashfs.New()
		var ops int64
		fsys.SetHook(func(crashfs.Op, string) {
			if ops++; ops == k {
				fsys.Crash()
			}
		})
		acked := false
		st, err := openCrash(t, fsys)
		if err == nil {
			var lg store.Log
			if lg, err = st.Create(ctx, "x"); err == nil {
				b := benchBatch(0, 3)
				if err = lg.Append(ctx, b); err == nil {
					acked = true
				}
			}
			st.Close()
		}
		if !fsys.Crashed() {
			if err != nil {
				t.Fatal(err)
			}
			if k < 5 {
				t.Fatalf("only %d operations", k)
			}
			return // crashed at every operation
		}
		st, err = openCrash(t, fsys.Durable())
		if err != nil {
			t.Fatalf("crash at operation %d: reopen: %v", k, err)
		}
		logs, err := st.Logs(ctx)
		if err != nil {
			t.Fatalf("crash at operation %d: %v", k, err)
		}
		if len(logs) == 0 {
			if acked {
				t.Fatalf("crash at operation %d: the log of an acknowledged append is gone", k)
			}
			if _, err := st.Create(ctx, "x"); err != nil {
				t.Fatalf("crash at operation %d: create again: %v", k, err)
			}
			st.Close()
			continue
		}
		lg, err := st.Open(ctx, "x")
		if err != nil {
			t.Fatalf("crash at operation %d: the log is listed but does not open: %v", k, err)
		}
		if acked && lg.Size() != 3 {
			t.Fatalf("crash at operation %d: acknowledged append lost: size %d", k, lg.Size())
		}
		if _, err := st.Create(ctx, "x"); !errors.Is(err, store.ErrExists) {
			t.Fatalf("crash at operation %d: create of an existing log: %v", k, err)
		}
		b := benchBatch(lg.Size(), 2)
		if err := lg.Append(ctx, b); err != nil {
			t.Fatalf("crash at operation %d: append after recovery: %v", k, err)
		}
		st.Close()
	}
}

// TestReplayRebuildsProjections appends without ever flushing the projections, crashes, and checks that the
// stored hashes and entries come back from the segments alone.
func TestReplayRebuildsProjections(t *testing.T) {
	ctx := context.Background()
	fsys := crashfs.New()
	st, err := openCrash(t, fsys)
	if err != nil {
		t.Fatal(err)
	}
	lg, err := st.Create(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	var leaves [][]byte
	for i := range 5 {
		b := benchBatch(lg.Size(), 10+i)
		// The store keeps the hashes it is given; give it the real ones so the rebuilt ones can be compared.
		b.Hashes = b.Hashes[:0]
		if err := store.HashBatch(lg, b); err != nil {
			t.Fatal(err)
		}
		for j := range b.Entries {
			leaves = append(leaves, b.Entries[j].AppendLeaf(nil))
		}
		if err := lg.Append(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	n := lg.Size()
	want, err := tlog.TreeHash(int64(n), lg)
	if err != nil {
		t.Fatal(err)
	}
	fsys.Crash()
	st.Close()
	st, err = openCrash(t, fsys.Durable())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	lg, err = st.Open(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	if lg.Size() != n {
		t.Fatalf("size %d after recovery, want %d", lg.Size(), n)
	}
	if got, err := tlog.TreeHash(int64(n), lg); err != nil || got != want {
		t.Fatalf("tree after recovery %x (%v), want %x", got, err, want)
	}
	for i, leaf := range leaves {
		e, err := lg.Entry(ctx, uint64(i))
		if err != nil || string(e.AppendLeaf(nil)) != string(leaf) {
			t.Fatalf("entry %d after recovery: %v", i, err)
		}
	}
}

// TestReadOnlyLeavesTornTail: a read-only open (verification) ignores a torn tail without cutting it; a
// writable open cuts it.
func TestReadOnlyLeavesTornTail(t *testing.T) {
	ctx := context.Background()
	fsys := crashfs.New()
	st, err := openCrash(t, fsys)
	if err != nil {
		t.Fatal(err)
	}
	lg, err := st.Create(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	if err := lg.Append(ctx, benchBatch(0, 4)); err != nil {
		t.Fatal(err)
	}
	if err := lg.SetCheckpoint(ctx, 4, []byte("note\n")); err != nil {
		t.Fatal(err)
	}
	fsys.Crash()
	st.Close()
	img := fsys.Durable()
	seg := "/data/logs/x/segments/00000000.seg"
	hist := "/data/logs/x/checkpoints"
	grow := func(name string, junk []byte) int64 {
		f, err := img.OpenFile(name, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fi, _ := f.Stat()
		f.WriteAt(junk, fi.Size())
		f.Sync()
		return fi.Size()
	}
	size := func(name string) int64 {
		fi, err := img.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	segEnd := grow(seg, []byte("CRN1 half a frame header"))
	histEnd := grow(hist, []byte{0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 5, 'n'})

	ro, err := local.Open("/data", local.Options{FS: img, ReadOnly: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	lg, err = ro.Open(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	if lg.Size() != 4 {
		t.Errorf("read-only size %d, want 4", lg.Size())
	}
	var cps int
	if err := lg.Checkpoints(ctx, func(uint64, []byte) error { cps++; return nil }); err != nil || cps != 1 {
		t.Errorf("read-only checkpoint history: %d records, %v", cps, err)
	}
	if err := lg.Append(ctx, benchBatch(4, 1)); err == nil {
		t.Error("read-only append succeeded")
	}
	ro.Close()
	if size(seg) == segEnd || size(hist) == histEnd {
		t.Fatalf("read-only open cut a torn tail")
	}

	rw, err := openCrash(t, img)
	if err != nil {
		t.Fatal(err)
	}
	defer rw.Close()
	if _, err := rw.Open(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if size(seg) != segEnd || size(hist) != histEnd {
		t.Errorf("writable open left the torn tails: segment %d bytes (want %d), history %d (want %d)", size(seg), segEnd, size(hist), histEnd)
	}
}
