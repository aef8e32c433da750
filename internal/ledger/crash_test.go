package ledger_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/seal"
	"github.com/cairn-ai/cairn/internal/store"
	"github.com/cairn-ai/cairn/internal/store/local"
	"github.com/cairn-ai/cairn/internal/store/local/crashfs"
	"github.com/cairn-ai/cairn/internal/verify"
)

// Crash tests: the ledger runs on a local store over crashfs, which forgets everything not yet fsync'd when
// it "loses power". After each crash the store is reopened on the durable state and every acknowledged event
// must be there exactly once, at the index it was acknowledged with, and the log must verify.

const (
	crashOrigin = "test.example/cairn"
	crashData   = "/data"
	crashSystem = "s"
)

var crashQuiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type crashEnv struct {
	t    *testing.T
	keys *seal.Keyring
	sk   ed25519.PrivateKey
	pub  ed25519.PublicKey
	// store options for the next open
	flush    time.Duration
	segBytes int64
}

func newCrashEnv(t *testing.T) *crashEnv {
	t.Helper()
	k := make([]byte, 32)
	rand.Read(k)
	kek, err := seal.NewKEK(k)
	if err != nil {
		t.Fatal(err)
	}
	// Period keys live on the real disk: they are fsync'd before use, so a crash of the store cannot lose one.
	keys, err := seal.OpenKeyring(t.TempDir(), kek)
	if err != nil {
		t.Fatal(err)
	}
	pub, sk, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &crashEnv{t: t, keys: keys, sk: sk, pub: pub, flush: 10 * time.Millisecond}
}

// open opens a store and a ledger on fsys.
func (e *crashEnv) open(fsys *crashfs.FS) (*ledger.Ledger, *local.Store, error) {
	st, err := local.Open(crashData, local.Options{FS: fsys, SegmentBytes: e.segBytes, FlushInterval: e.flush, HistoryInterval: time.Millisecond, Logger: crashQuiet})
	if err != nil {
		return nil, nil, err
	}
	l, err := ledger.Open(context.Background(), ledger.Config{Origin: crashOrigin, CheckpointInterval: 2 * time.Millisecond, Logger: crashQuiet}, st, e.keys, e.sk)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return l, st, nil
}

func (e *crashEnv) mustOpen(fsys *crashfs.FS) (*ledger.Ledger, *local.Store) {
	e.t.Helper()
	l, st, err := e.open(fsys)
	if err != nil {
		e.t.Fatalf("open after crash: %v", err)
	}
	return l, st
}

func (e *crashEnv) register(l *ledger.Ledger) {
	e.t.Helper()
	if _, _, err := l.Register(context.Background(), []byte(`{"id":"s","name":"n","intended_purpose":"p","provider":"q"}`), "tester"); err != nil {
		e.t.Fatalf("register: %v", err)
	}
}

// verify checks the whole store offline, as cairn verify --full does.
func (e *crashEnv) verify(st store.Store) {
	e.t.Helper()
	rep, err := verify.Store(context.Background(), st, verify.Options{
		VKey: func(sys string) string {
			vk, _ := ledger.VerifierKey(crashOrigin+"/"+sys, e.pub)
			return vk
		},
		Full: true,
	})
	if err != nil {
		e.t.Fatalf("verify: %v", err)
	}
	if !rep.OK() {
		e.t.Fatalf("verify failed after %d entries: %v", rep.Checked, rep.Failures)
	}
}

// crashEvents returns n client events with fresh UUIDv7 ids.
func crashEvents(n int) [][]byte {
	raws := make([][]byte, n)
	for i := range raws {
		id := event.NewV7(time.Now())
		raws[i] = fmt.Appendf(nil, `{"id":%q,"type":"inference","model":{"name":"m","version":"1"},"payload":{"output":%d}}`, id.String(), i)
	}
	return raws
}

func crashAppend(lg *ledger.Log, raws [][]byte) ([]ledger.Receipt, error) {
	items := make([]*ledger.Prepared, len(raws))
	for i, raw := range raws {
		ev, err := event.Parse(i, raw, time.Now(), event.DefaultLimits, false)
		if err != nil {
			return nil, fmt.Errorf("parse: %w", err)
		}
		if items[i], err = lg.Prepare(ev, "tester"); err != nil {
			return nil, fmt.Errorf("prepare: %w", err)
		}
	}
	return lg.Append(context.Background(), items)
}

// book keeps what was acknowledged and what was in flight when the power failed.
type crashBook struct {
	mu       sync.Mutex
	acked    map[event.UUID]uint64
	inflight [][][]byte // batches sent and not answered with success
}

func newCrashBook() *crashBook { return &crashBook{acked: map[event.UUID]uint64{}} }

func (b *crashBook) ack(t *testing.T, rs []ledger.Receipt, retried bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, r := range rs {
		if r.Duplicate && !retried {
			t.Errorf("fresh id %s answered as a duplicate of %d", r.ID, r.Index)
		}
		if old, ok := b.acked[r.ID]; ok && old != r.Index {
			t.Errorf("id %s acknowledged at %d and at %d", r.ID, old, r.Index)
		}
		b.acked[r.ID] = r.Index
	}
}

// check asserts every acknowledged event is at its index, then retries the batches that were in flight: each
// event must come back as a duplicate at an index holding it, or be appended now.
func (b *crashBook) check(t *testing.T, lg *ledger.Log) {
	t.Helper()
	ctx := context.Background()
	n := lg.Store().Size()
	for id, idx := range b.acked {
		if idx >= n {
			t.Fatalf("acknowledged event %s at %d is missing: the log holds %d entries", id, idx, n)
		}
		e, err := lg.Entry(ctx, idx)
		if err != nil {
			t.Fatalf("entry %d: %v", idx, err)
		}
		if e.ID != id {
			t.Fatalf("entry %d is %s, but %s was acknowledged there", idx, e.ID, id)
		}
	}
	retry := b.inflight
	b.inflight = nil
	for _, raws := range retry {
		rs, err := crashAppend(lg, raws)
		if err != nil {
			t.Fatalf("retry of an unacknowledged batch after recovery: %v", err)
		}
		for _, r := range rs {
			if r.Duplicate {
				e, err := lg.Entry(ctx, r.Index)
				if err != nil || e.ID != r.ID {
					t.Fatalf("retry of %s answered duplicate at %d, which does not hold it (%v)", r.ID, r.Index, err)
				}
			}
		}
		b.ack(t, rs, true)
	}
}

// checkAll reads the whole log: ids are unique and every acknowledged one is where it was acknowledged.
func (b *crashBook) checkAll(t *testing.T, lg *ledger.Log) {
	t.Helper()
	seen := map[event.UUID]uint64{}
	n := lg.Store().Size()
	err := lg.Store().Entries(context.Background(), 0, n, func(e *store.Entry) error {
		if old, ok := seen[e.ID]; ok {
			return fmt.Errorf("id %s appears at %d and %d", e.ID, old, e.Index)
		}
		seen[e.ID] = e.Index
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(seen)) != n {
		t.Fatalf("read %d entries of %d", len(seen), n)
	}
	for id, idx := range b.acked {
		if got, ok := seen[id]; !ok || got != idx {
			t.Fatalf("acknowledged %s at %d; the log has it at %d (%v)", id, idx, got, ok)
		}
	}
}

// writers runs g goroutines appending batches of 1–maxBatch fresh events until an append fails (the crash).
func crashWriters(t *testing.T, lg *ledger.Log, b *crashBook, g, maxBatch int, seed uint64) *sync.WaitGroup {
	var wg sync.WaitGroup
	for w := range g {
		wg.Go(func() {
			rng := mrand.New(mrand.NewPCG(seed, uint64(w)))
			for {
				raws := crashEvents(1 + rng.IntN(maxBatch))
				rs, err := crashAppend(lg, raws)
				if err != nil {
					if strings.HasPrefix(err.Error(), "parse") || strings.HasPrefix(err.Error(), "prepare") {
						t.Errorf("writer: %v", err)
					}
					b.mu.Lock()
					b.inflight = append(b.inflight, raws)
					b.mu.Unlock()
					return
				}
				b.ack(t, rs, false)
			}
		})
	}
	return &wg
}

// crashAfter arms fsys to crash at its k-th changing operation from now; with rare, only operations on the
// rarely written files (state, checkpoints, directories) count. where records the operation.
func crashAfter(fsys *crashfs.FS, k int64, rare bool, where *string) {
	var ops atomic.Int64
	fsys.SetHook(func(op crashfs.Op, name string) {
		if b := path.Base(name); rare && (b == "hashes" || b == "locator" || strings.HasSuffix(b, ".seg")) {
			return
		}
		if ops.Add(1) == k {
			b := path.Base(name)
			if strings.HasSuffix(b, ".seg") {
				b = "*.seg"
			}
			*where = op.String() + " " + b
			fsys.Crash()
		}
	})
}

// TestCrashRandom crashes the machine at a random operation while many goroutines append, reopens the store
// on what was durable, and checks every acknowledged event; the same store lives through every round.
func TestCrashRandom(t *testing.T) {
	rounds := 50
	if testing.Short() {
		rounds = 10
	}
	for _, torn := range []bool{false, true} {
		name := "strict"
		if torn {
			name = "torn"
		}
		t.Run(name, func(t *testing.T) {
			runCrashRounds(t, rounds, torn)
		})
	}
}

func runCrashRounds(t *testing.T, rounds int, torn bool) {
	crashPoints := map[string]int{}
	e := newCrashEnv(t)
	b := newCrashBook()
	fsys := crashfs.New()
	l, st := e.mustOpen(fsys)
	e.register(l)
	for round := range rounds {
		seed := uint64(round)
		if torn {
			seed += 1 << 32
		}
		rng := mrand.New(mrand.NewPCG(seed, 0))
		lg, err := l.Log(crashSystem)
		if err != nil {
			t.Fatal(err)
		}
		var where string
		if rng.IntN(2) == 0 {
			crashAfter(fsys, 10+rng.Int64N(800), false, &where)
		} else {
			crashAfter(fsys, 1+rng.Int64N(40), true, &where)
		}
		wg := crashWriters(t, lg, b, 8, 10, seed)
		deadline := time.Now().Add(5 * time.Second)
		for !fsys.Crashed() && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		fsys.Crash()
		wg.Wait()
		l.Close() // fails after the crash; it must still stop every goroutine
		if where == "" {
			where = "timeout"
		}
		crashPoints[where]++

		if torn {
			fsys = fsys.DurableTorn(rng)
		} else {
			fsys = fsys.Durable()
		}
		// Vary how often projections are flushed, so crashes land before, during and after flushes.
		e.flush = []time.Duration{time.Millisecond, 10 * time.Millisecond, time.Hour}[rng.IntN(3)]
		// Small segments in some rounds, so crashes also land around a segment roll.
		e.segBytes = []int64{0, 16 << 10}[rng.IntN(2)]
		l, st = e.mustOpen(fsys)
		lg, err = l.Log(crashSystem)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		b.check(t, lg)
		if round%10 == 9 {
			e.verify(st)
		}
		if t.Failed() {
			t.Fatalf("round %d failed", round)
		}
	}
	lg, _ := l.Log(crashSystem)
	n := lg.Store().Size()
	rs, err := crashAppend(lg, crashEvents(3))
	if err != nil {
		t.Fatalf("append after recovery: %v", err)
	}
	if rs[0].Index != n {
		t.Errorf("append after recovery got index %d, want %d", rs[0].Index, n)
	}
	b.ack(t, rs, false)
	b.checkAll(t, lg)
	e.verify(st)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d acknowledged events in %d crash rounds; crashed before: %v", len(b.acked), rounds, crashPoints)
}

// crashAt arms fsys to crash just before the first operation op on a path whose base name matches (path.Match).
func crashAt(fsys *crashfs.FS, op crashfs.Op, pattern string) {
	fsys.SetHook(func(o crashfs.Op, name string) {
		if ok, _ := path.Match(pattern, path.Base(name)); ok && o == op {
			fsys.Crash()
		}
	})
}

// started opens a ledger on a fresh file system, registers the system and appends a few acknowledged batches.
func crashStarted(t *testing.T, e *crashEnv, batches int) (*crashfs.FS, *ledger.Ledger, *ledger.Log, *crashBook) {
	t.Helper()
	fsys := crashfs.New()
	l, _ := e.mustOpen(fsys)
	e.register(l)
	lg, err := l.Log(crashSystem)
	if err != nil {
		t.Fatal(err)
	}
	b := newCrashBook()
	for range batches {
		rs, err := crashAppend(lg, crashEvents(5))
		if err != nil {
			t.Fatal(err)
		}
		b.ack(t, rs, false)
	}
	return fsys, l, lg, b
}

// TestCrashBeforeSegmentSync: the power fails after a batch's frame was written but before its fsync. The
// append must fail (never acknowledged) and the batch must vanish; its events can then be appended anew.
func TestCrashBeforeSegmentSync(t *testing.T) {
	for _, torn := range []bool{false, true} {
		t.Run(fmt.Sprint("torn=", torn), func(t *testing.T) {
			e := newCrashEnv(t)
			e.flush = time.Hour
			fsys, l, lg, b := crashStarted(t, e, 3)
			n := lg.Store().Size()
			crashAt(fsys, crashfs.OpSync, "*.seg")
			raws := crashEvents(7)
			if rs, err := crashAppend(lg, raws); err == nil {
				t.Fatalf("append acknowledged %v although its fsync never happened", rs)
			}
			l.Close()
			img := fsys.Durable()
			if torn {
				img = fsys.DurableTorn(mrand.New(mrand.NewPCG(1, 2)))
			}
			l, st := e.mustOpen(img)
			defer l.Close()
			lg, _ = l.Log(crashSystem)
			if got := lg.Store().Size(); got != n && !torn {
				t.Fatalf("after recovery the log holds %d entries, want %d: the unsynced batch survived", got, n)
			}
			b.check(t, lg)
			rs, err := crashAppend(lg, raws)
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range rs {
				if !torn && (r.Duplicate || r.Index != n+uint64(i)) {
					t.Errorf("re-append %d: %+v, want a new event at %d", i, r, n+uint64(i))
				}
			}
			b.ack(t, rs, true)
			b.checkAll(t, lg)
			e.verify(st)
		})
	}
}

// TestCrashBeforeProjections: batches are durable in the segments but the power fails before, or while, the
// projections (hashes, locator) and their watermark (state) are made durable: recovery replays the segments.
func TestCrashBeforeProjections(t *testing.T) {
	for _, tc := range []struct {
		name    string
		op      crashfs.Op
		pattern string
	}{
		{"no flush", -1, ""},
		{"hashes sync", crashfs.OpSync, "hashes"},
		{"locator sync", crashfs.OpSync, "locator"},
		{"state write", crashfs.OpSync, "state.tmp"},
		{"state rename", crashfs.OpRename, "state.tmp"},
		{"state dir sync", crashfs.OpSyncDir, "s"},
		{"checkpoint write", crashfs.OpSync, "checkpoint.tmp"},
		{"checkpoint history", crashfs.OpSync, "checkpoints"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newCrashEnv(t)
			e.flush = time.Hour // no flush until armed
			fsys, l, lg, b := crashStarted(t, e, 20)
			size, root := lg.Tree()
			if tc.op < 0 {
				fsys.Crash()
			} else {
				crashAt(fsys, tc.op, tc.pattern)
				// More appends make the flusher and the checkpointer run into the armed point.
				for !fsys.Crashed() {
					rs, err := crashAppend(lg, crashEvents(2))
					if err != nil {
						if !fsys.Crashed() {
							t.Fatal(err)
						}
						break
					}
					b.ack(t, rs, false)
					if tc.pattern == "state.tmp" || tc.pattern == "hashes" || tc.pattern == "locator" || tc.pattern == "s" {
						l.Close() // Close flushes the projections
						break
					}
				}
				if !fsys.Crashed() {
					t.Fatal("never reached the crash point")
				}
				size, root = lg.Tree()
			}
			l.Close()
			l, st := e.mustOpen(fsys.Durable())
			defer l.Close()
			lg, _ = l.Log(crashSystem)
			if got, gotRoot := lg.Tree(); got < size || (got == size && gotRoot != root) {
				t.Fatalf("recovered tree %d %x, want %d %x", got, gotRoot, size, root)
			}
			b.check(t, lg)
			b.checkAll(t, lg)
			e.verify(st)
			if _, err := crashAppend(lg, crashEvents(3)); err != nil {
				t.Fatalf("append after recovery: %v", err)
			}
		})
	}
}

// lastSegment returns the path and size of the log's last segment in fsys.
func crashLastSegment(t *testing.T, fsys local.FS) (string, int64) {
	t.Helper()
	dir := path.Join(crashData, "logs", crashSystem, "segments")
	ents, err := fsys.ReadDir(dir)
	if err != nil || len(ents) == 0 {
		t.Fatalf("segments: %v %d", err, len(ents))
	}
	p := path.Join(dir, ents[len(ents)-1].Name())
	fi, err := fsys.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return p, fi.Size()
}

// edit changes a file of a durable image and makes the change durable.
func crashEdit(t *testing.T, fsys local.FS, name string, fn func(f local.File)) {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	fn(f)
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

// TestCrashTornTail: the last frame was torn (half of it reached the disk, or its length did but its data did
// not). Recovery truncates it, keeps everything before it, and appends continue after it.
func TestCrashTornTail(t *testing.T) {
	for _, how := range []string{"half written", "zeroed"} {
		t.Run(how, func(t *testing.T) {
			e := newCrashEnv(t)
			e.flush = time.Hour
			e.keys = newCrashEnv(t).keys
			fsys, l, lg, b := crashStarted(t, e, 4)
			_, before := crashLastSegment(t, fsys)
			n := lg.Store().Size()
			// One more batch, durable; then tear it in the image as if its fsync had not finished.
			if _, err := crashAppend(lg, crashEvents(6)); err != nil {
				t.Fatal(err)
			}
			fsys.Crash()
			l.Close()
			img := fsys.Durable()
			seg, after := crashLastSegment(t, img)
			crashEdit(t, img, seg, func(f local.File) {
				half := before + (after-before)/2
				if how == "half written" {
					f.Truncate(half)
				} else {
					f.WriteAt(make([]byte, after-half), half)
				}
			})
			l, st, err := e.open(img)
			if errors.Is(err, store.ErrCorrupt) && strings.Contains(err.Error(), "signed checkpoint of size") {
				// The checkpointer signed the last batch (2 ms after its ack) before the simulated crash, so the
				// tear is damage under a signed checkpoint, not a torn tail: recovery must refuse it, and did.
				t.Logf("the last batch was checkpointed before the crash; recovery refused the tear: %v", err)
				return
			}
			if err != nil {
				t.Fatalf("open after crash: %v", err)
			}
			defer l.Close()
			lg, _ = l.Log(crashSystem)
			if got := lg.Store().Size(); got != n {
				t.Fatalf("after recovery %d entries, want %d (the torn batch dropped)", got, n)
			}
			if _, size := crashLastSegment(t, img); size != before {
				t.Errorf("segment is %d bytes after recovery, want the torn tail cut at %d", size, before)
			}
			b.check(t, lg)
			rs, err := crashAppend(lg, crashEvents(2))
			if err != nil || rs[0].Index != n {
				t.Fatalf("append after recovery: %v %v", rs, err)
			}
			b.ack(t, rs, false)
			b.checkAll(t, lg)
			e.verify(st)
		})
	}
}

// TestCrashDamage: damage before the durable end is never truncated away: opening fails with ErrCorrupt.
func TestCrashDamage(t *testing.T) {
	for _, tc := range []struct {
		name string
		// where to flip a byte, as a fraction of the way through the segment data after registration
		at         float64
		checkpoint bool // wait for a checkpoint covering everything before crashing
	}{
		{"middle frame body", 0.5, false},
		{"frame header", 0, false},
		{"last frame under a signed checkpoint", 0.99, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newCrashEnv(t)
			e.flush = time.Hour // replay reads every frame
			fsys, l, lg, _ := crashStarted(t, e, 0)
			_, start := crashLastSegment(t, fsys)
			for range 5 {
				if _, err := crashAppend(lg, crashEvents(4)); err != nil {
					t.Fatal(err)
				}
			}
			if tc.checkpoint {
				crashWaitCheckpoint(t, lg)
			}
			fsys.Crash()
			l.Close()
			img := fsys.Durable()
			seg, end := crashLastSegment(t, img)
			at := start + int64(tc.at*float64(end-start))
			crashEdit(t, img, seg, func(f local.File) {
				var b [1]byte
				f.ReadAt(b[:], at)
				b[0] ^= 0x20
				f.WriteAt(b[:], at)
			})
			l, _, err := e.open(img)
			if err == nil {
				l.Close()
				t.Fatalf("open succeeded on a store damaged at offset %d", at)
			}
			if !errors.Is(err, store.ErrCorrupt) {
				t.Fatalf("open: %v, want ErrCorrupt", err)
			}
			if _, size := crashLastSegment(t, img); size != end {
				t.Errorf("the damaged segment was cut from %d to %d bytes", end, size)
			}
		})
	}
}

// TestCrashTornHistory: the power failed while a checkpoint was appended to the checkpoint history. Recovery
// drops the torn record, verification passes, and later checkpoints are appended after it.
func TestCrashTornHistory(t *testing.T) {
	e := newCrashEnv(t)
	fsys, l, lg, b := crashStarted(t, e, 3)
	crashWaitCheckpoint(t, lg)
	fsys.Crash()
	l.Close()
	img := fsys.Durable()
	hist := path.Join(crashData, "logs", crashSystem, "checkpoints")
	fi, err := img.Stat(hist)
	if err != nil || fi.Size() == 0 {
		t.Fatalf("checkpoint history: %v, %d bytes", err, fi.Size())
	}
	crashEdit(t, img, hist, func(f local.File) {
		f.WriteAt([]byte{0, 0, 0, 200, 0, 0, 0, 0, 0, 0, 0, 9, 'h', 'a', 'l', 'f'}, fi.Size())
	})
	l, st := e.mustOpen(img)
	defer l.Close()
	lg, _ = l.Log(crashSystem)
	b.check(t, lg)
	e.verify(st)
	rs, err := crashAppend(lg, crashEvents(4))
	if err != nil {
		t.Fatal(err)
	}
	b.ack(t, rs, false)
	crashWaitCheckpoint(t, lg)
	e.verify(st)
}

func crashWaitCheckpoint(t *testing.T, lg *ledger.Log) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for _, n := lg.Checkpoint(); n != lg.Store().Size(); _, n = lg.Checkpoint() {
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint covers the log")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestCrashDamageBelowWatermark: recovery replays only the frames after the projections' durable watermark,
// so damage to an envelope below it does not stop Open; cairn verify finds it.
func TestCrashDamageBelowWatermark(t *testing.T) {
	e := newCrashEnv(t)
	e.flush = time.Millisecond
	fsys, l, lg, _ := crashStarted(t, e, 6)
	n := lg.Store().Size()
	state := path.Join(crashData, "logs", crashSystem, "state")
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(crashRead(t, fsys, state), fmt.Sprintf(`"size":%d,`, n)) {
		if time.Now().After(deadline) {
			t.Fatalf("projections never flushed: state %s", crashRead(t, fsys, state))
		}
		time.Sleep(time.Millisecond)
	}
	fsys.Crash()
	l.Close()
	img := fsys.Durable()
	seg, size := crashLastSegment(t, img)
	b := []byte(crashRead(t, img, seg))
	at := bytes.Index(b[size/2:], []byte(`"type":"inference"`))
	if at < 0 {
		t.Fatal("no envelope in the second half of the segment")
	}
	crashEdit(t, img, seg, func(f local.File) { f.WriteAt([]byte("X"), size/2+int64(at)+9) })
	l, st, err := e.open(img)
	if err != nil {
		if !errors.Is(err, store.ErrCorrupt) {
			t.Fatalf("open: %v", err)
		}
		return
	}
	defer l.Close()
	rep, err := verify.Store(context.Background(), st, verify.Options{
		VKey: func(sys string) string { vk, _ := ledger.VerifierKey(crashOrigin+"/"+sys, e.pub); return vk },
		Full: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() {
		t.Fatal("verify passed a store with a damaged envelope")
	}
}

func crashRead(t *testing.T, fsys local.FS, name string) string {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, fi.Size())
	if _, err := f.ReadAt(b, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return string(b)
}
