package verify

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/store"
	"github.com/cairn-ai/cairn/internal/store/local"
)

func leafHash(i int) tlog.Hash { return tlog.RecordHash([]byte{byte(i), byte(i >> 8), 'x'}) }

// TestEdgeRoot checks the verifier's compact right edge against two independent RFC 6962 implementations
// (x/mod tlog and transparency-dev/merkle compact ranges) for every tree size up to 1,000, and that an edge
// carried through the remembered state's JSON continues to the same roots.
func TestEdgeRoot(t *testing.T) {
	const maxSize = 1000
	hashes := make([]tlog.Hash, maxSize)
	for i := range hashes {
		hashes[i] = leafHash(i)
	}
	var stored []tlog.Hash
	reader := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = stored[x]
		}
		return out, nil
	})
	rf := compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
	cr := rf.NewEmptyRange(0)
	var e edge
	if e.root() != (tlog.Hash{}) {
		t.Error("empty edge has a non-zero root")
	}
	for n := 1; n <= maxSize; n++ {
		h := hashes[n-1]
		e.push(h)
		hs, err := tlog.StoredHashesForRecordHash(int64(n-1), h, reader)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, hs...)
		want, err := tlog.TreeHash(int64(n), reader)
		if err != nil {
			t.Fatal(err)
		}
		if got := e.root(); got != want {
			t.Fatalf("size %d: edge root %v, tlog.TreeHash %v", n, got, want)
		}
		if err := cr.Append(h[:], nil); err != nil {
			t.Fatal(err)
		}
		root, err := cr.GetRootHash(nil)
		if err != nil {
			t.Fatal(err)
		}
		if tlog.Hash(root) != want {
			t.Fatalf("size %d: merkle/compact root differs from tlog", n)
		}
		// The edge holds one perfect subtree per set bit of n, largest first.
		if len(e.hashes) != popcount(n) || !slices.IsSortedFunc(e.heights, func(a, b int) int { return b - a }) {
			t.Fatalf("size %d: edge heights %v", n, e.heights)
		}
		if n%97 == 0 {
			// Through the remembered state and back, then continue to the end.
			b, err := json.Marshal(LogState{Size: uint64(n), Edge: e.hashes, EdgeHeights: e.heights})
			if err != nil {
				t.Fatal(err)
			}
			var ls LogState
			if err := json.Unmarshal(b, &ls); err != nil {
				t.Fatal(err)
			}
			e2 := edge{hashes: ls.Edge, heights: ls.EdgeHeights}
			for _, h := range hashes[n:] {
				e2.push(h)
			}
			full := edge{}
			for _, h := range hashes {
				full.push(h)
			}
			if e2.root() != full.root() {
				t.Fatalf("edge resumed at %d from JSON ends at another root", n)
			}
		}
	}
}

func popcount(n int) int {
	c := 0
	for ; n > 0; n &= n - 1 {
		c++
	}
	return c
}

// testLog builds a local store with one log of n entries (with envelopes, without payloads) and a signed
// checkpoint of its full size.
type testLog struct {
	st     *local.Store
	lg     store.Log
	signer note.Signer
	vkey   string
	next   int
}

const testOrigin = "example.test/cairn/verify"

func newTestLog(t *testing.T) *testLog {
	t.Helper()
	st, err := local.Open(t.TempDir(), local.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	lg, err := st.Create(context.Background(), "sys")
	if err != nil {
		t.Fatal(err)
	}
	skey, vkey, err := note.GenerateKey(rand.Reader, testOrigin+"/sys")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return &testLog{st: st, lg: lg, signer: signer, vkey: vkey}
}

func (tl *testLog) append(t *testing.T, n int) {
	t.Helper()
	b := &store.Batch{Start: tl.lg.Size()}
	rec := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(tl.next) * time.Millisecond).UnixNano()
	for range n {
		e := store.Entry{Index: b.Start + uint64(len(b.Entries)), ID: event.NewV7(time.Unix(0, rec)), Recorded: rec, Type: "inference"}
		rand.Read(e.Salt[:])
		env := event.Envelope{ID: e.ID, System: "sys", Type: e.Type, Time: time.Unix(0, rec), Actor: "test", Model: &event.Model{Name: "m", Version: "1"}}
		e.Envelope = env.AppendHead(nil)
		e.Envelope = event.AppendRecorded(e.Envelope, rec)
		e.Envelope = env.AppendTail(e.Envelope)
		e.Digest = event.Digest(e.Salt[:], e.Envelope)
		b.Entries = append(b.Entries, e)
		tl.next++
	}
	if err := store.HashBatch(tl.lg, b); err != nil {
		t.Fatal(err)
	}
	if err := tl.lg.Append(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	size := tl.lg.Size()
	root, err := tlog.TreeHash(int64(size), tl.lg)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := note.Sign(&note.Note{Text: string(ledger.Checkpoint{Origin: testOrigin + "/sys", Size: size, Root: root}.Marshal())}, tl.signer)
	if err != nil {
		t.Fatal(err)
	}
	if err := tl.lg.SetCheckpoint(context.Background(), size, signed); err != nil {
		t.Fatal(err)
	}
}

func (tl *testLog) verify(t *testing.T, full bool, prev map[string]LogState) *Report {
	t.Helper()
	rep, err := Store(context.Background(), tl.st, Options{VKey: func(string) string { return tl.vkey }, Full: full, Prev: prev})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// TestIncrementalMatchesFull checks that continuing from remembered state reaches the same state as verifying
// everything, across batches that end at and around tile and subtree boundaries.
func TestIncrementalMatchesFull(t *testing.T) {
	tl := newTestLog(t)
	prev := map[string]LogState{}
	for _, n := range []int{1, 1, 254, 1, 1, 255, 300, 17} {
		tl.append(t, n)
		inc := tl.verify(t, false, prev)
		if !inc.OK() {
			t.Fatalf("incremental verify at size %d: %v", tl.lg.Size(), inc.Failures)
		}
		if inc.Checked != uint64(n) {
			t.Errorf("incremental verify checked %d entries, %d were new", inc.Checked, n)
		}
		full := tl.verify(t, true, prev)
		if !full.OK() {
			t.Fatalf("full verify at size %d: %v", tl.lg.Size(), full.Failures)
		}
		a, b := inc.Logs["sys"], full.Logs["sys"]
		if a.Size != b.Size || a.Root != b.Root || !slices.Equal(a.Edge, b.Edge) || a.LastRecorded != b.LastRecorded {
			t.Fatalf("size %d: incremental state %+v differs from full %+v", tl.lg.Size(), a, b)
		}
		if want, _ := tlog.TreeHash(int64(tl.lg.Size()), tl.lg); a.Root != want {
			t.Fatalf("size %d: remembered root is not the tree's", tl.lg.Size())
		}
		// Remember through the file format.
		p := filepath.Join(t.TempDir(), "state.json")
		if err := SaveState(p, inc.Logs); err != nil {
			t.Fatal(err)
		}
		var err error
		if prev, err = LoadState(p); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRememberedStateFailures checks what only the remembered state can reveal.
func TestRememberedStateFailures(t *testing.T) {
	tl := newTestLog(t)
	tl.append(t, 10)
	good := tl.verify(t, true, nil).Logs["sys"]
	for _, tc := range []struct {
		name string
		prev map[string]LogState
		want string
	}{
		{"MissingLog", map[string]LogState{"sys": good, "gone": good}, "gone: log previously verified is missing"},
		{"RolledBack", map[string]LogState{"sys": func() LogState { s := good; s.Size = 11; return s }()}, "rolled back"},
		{"CheckpointsRolledBack", map[string]LogState{"sys": func() LogState { s := good; s.CheckpointSize = 12; return s }()}, "checkpoints rolled back"},
		{"Rewritten", map[string]LogState{"sys": func() LogState { s := good; s.Root[0] ^= 1; return s }()}, "not the one verified before"},
	} {
		for _, full := range []bool{false, true} {
			rep := tl.verify(t, full, tc.prev)
			var msgs []string
			for _, f := range rep.Failures {
				msgs = append(msgs, f.String())
			}
			if !strings.Contains(strings.Join(msgs, "\n"), tc.want) {
				t.Errorf("%s (full %v): failures %q, want one containing %q", tc.name, full, msgs, tc.want)
			}
		}
	}
	// A key that is not the log's.
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	other, _ := ledger.VerifierKey(testOrigin+"/sys", pub)
	rep, err := Store(context.Background(), tl.st, Options{VKey: func(string) string { return other }, Full: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() {
		t.Error("verify with another key passes")
	}
}

// TestRetiredKeyOnlyUpToHandover checks that a signing key retired by a rotation vouches for checkpoints up to the
// handover and not one entry beyond: whoever kept the old key cannot extend the log with it.
func TestRetiredKeyOnlyUpToHandover(t *testing.T) {
	tl := newTestLog(t)
	tl.append(t, 5) // signed by the key that is then retired
	_, newVKey, _ := note.GenerateKey(rand.Reader, testOrigin+"/sys")
	run := func(maxSize uint64) *Report {
		rep, err := Store(context.Background(), tl.st, Options{VKey: func(string) string { return newVKey }, Full: true,
			Retired: func(string) []RetiredKey { return []RetiredKey{{VKey: tl.vkey, MaxSize: maxSize}} }})
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	if rep := tl.verify(t, true, nil); len(rep.Failures) != 0 {
		t.Fatalf("before rotation: %v", rep.Failures)
	}
	if rep := run(5); len(rep.Failures) != 0 {
		t.Errorf("retired key within its handover: %v", rep.Failures)
	}
	tl.append(t, 3) // the old key signs on after the handover
	rep := run(5)
	if len(rep.Failures) == 0 || !strings.Contains(rep.Failures[0].Reason, "checkpoint") {
		t.Errorf("a checkpoint the retired key signed beyond the handover was accepted: %v", rep.Failures)
	}
	if rep := run(8); len(rep.Failures) != 0 {
		t.Errorf("with the handover at 8: %v", rep.Failures)
	}
	if rep, _ := Store(context.Background(), tl.st, Options{VKey: func(string) string { return newVKey }, Full: true}); len(rep.Failures) == 0 {
		t.Error("the old key's checkpoints verified without being listed as retired")
	}
}
