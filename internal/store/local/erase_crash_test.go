package local_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"slices"
	"testing"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/cairn-ai/cairn/internal/store"
	"github.com/cairn-ai/cairn/internal/store/local/crashfs"
	"github.com/cairn-ai/cairn/internal/store/storetest"
)

// TestCrashDuringErase crashes at every file operation of a retention Erase and of a ReplaceSealed, with torn
// writes: after recovery the store opens, the tree is unchanged, every other entry is intact, and each change is
// wholly done or wholly undone — done whenever the call had returned.
func TestCrashDuringErase(t *testing.T) {
	ctx := context.Background()
	erase := []uint64{1, 2, 40, 41, 79}
	const rewrapped = 10
	for k := int64(1); ; k++ {
		fsys := crashfs.New()
		st, err := openCrash(t, fsys)
		if err != nil {
			t.Fatal(err)
		}
		lg, err := st.Create(ctx, "x")
		if err != nil {
			t.Fatal(err)
		}
		es := storetest.Entries(0, 80, "inference")
		for i := range es {
			if es[i].Sealed == nil {
				es[i].Sealed = []byte("sealed payload of a fixed length, re-wrapped in place")
			}
		}
		for b := 0; b < 80; b += 20 {
			if err := storetest.Append(ctx, lg, es[b:b+20]); err != nil {
				t.Fatal(err)
			}
		}
		root, _ := tlog.TreeHash(80, lg)
		repl := bytes.Repeat([]byte{0xee}, len(es[rewrapped].Sealed))
		var ops int64
		fsys.SetHook(func(crashfs.Op, string) {
			if ops++; ops == k {
				fsys.Crash()
			}
		})
		erased := lg.Erase(ctx, erase) == nil
		replaced := erased && lg.ReplaceSealed(ctx, rewrapped, repl) == nil
		if !fsys.Crashed() {
			if !erased || !replaced {
				t.Fatal("erase failed without a crash")
			}
			if k < 6 {
				t.Fatalf("only %d operations", k)
			}
			t.Logf("crashed at each of %d operations", k-1)
			return
		}
		st2, err := openCrash(t, fsys.DurableTorn(rand.New(rand.NewPCG(uint64(k), 7))))
		if err != nil {
			t.Fatalf("crash at operation %d: reopen: %v", k, err)
		}
		lg2, err := st2.Open(ctx, "x")
		if err != nil {
			t.Fatalf("crash at operation %d: open: %v", k, err)
		}
		if r, err := tlog.TreeHash(80, lg2); err != nil || r != root {
			t.Fatalf("crash at operation %d: tree changed: %v", k, err)
		}
		var gone int
		err = lg2.Entries(ctx, 0, 80, func(e *store.Entry) error {
			want := es[e.Index]
			switch {
			case slices.Contains(erase, e.Index) && e.Envelope == nil:
				if e.Sealed != nil || e.Salt != ([16]byte{}) {
					t.Errorf("crash at operation %d: entry %d half erased", k, e.Index)
				}
				gone++
			case e.Index == rewrapped && bytes.Equal(e.Sealed, repl):
				if !erased {
					t.Errorf("crash at operation %d: re-wrap applied before the erase", k)
				}
			case !bytes.Equal(e.Envelope, want.Envelope) || !bytes.Equal(e.Sealed, want.Sealed) || e.Salt != want.Salt:
				t.Errorf("crash at operation %d: entry %d damaged", k, e.Index)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("crash at operation %d: read: %v", k, err)
		}
		if gone != 0 && gone != len(erase) || erased && gone == 0 {
			t.Errorf("crash at operation %d: %d of %d entries erased (erase returned: %v)", k, gone, len(erase), erased)
		}
		if replaced {
			if e, _ := lg2.Entry(ctx, rewrapped); !bytes.Equal(e.Sealed, repl) {
				t.Errorf("crash at operation %d: an acknowledged re-wrap was lost", k)
			}
		}
		st2.Close()
	}
}
