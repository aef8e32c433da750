package ledger_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/seal"
	"github.com/cairn-ai/cairn/internal/store/local"
)

const origin = "test.example/cairn"

type env struct {
	t     *testing.T
	dir   string
	keys  *seal.Keyring
	sk    ed25519.PrivateKey
	clock atomic.Pointer[time.Time]
	cfg   ledger.Config
	l     *ledger.Ledger
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir()}
	k := make([]byte, 32)
	rand.Read(k)
	kek, _ := seal.NewKEK(k)
	var err error
	if e.keys, err = seal.OpenKeyring(t.TempDir(), kek); err != nil {
		t.Fatal(err)
	}
	_, e.sk, _ = ed25519.GenerateKey(rand.Reader)
	e.cfg = ledger.Config{Origin: origin, CheckpointInterval: 5 * time.Millisecond}
	e.open()
	return e
}

// setClock makes the ledger's clock return t from now on.
func (e *env) setClock(t time.Time) {
	e.clock.Store(&t)
	e.cfg.Now = func() time.Time { return *e.clock.Load() }
}

func (e *env) open() {
	e.t.Helper()
	st, err := local.Open(e.dir, local.Options{})
	if err != nil {
		e.t.Fatal(err)
	}
	if e.l, err = ledger.Open(context.Background(), e.cfg, st, e.keys, e.sk); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { e.l.Close() })
}

func (e *env) reopen() {
	e.t.Helper()
	if err := e.l.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.open()
}

func (e *env) register(id string) *ledger.Log {
	e.t.Helper()
	def := fmt.Sprintf(`{"id":%q,"name":"Credit scoring","intended_purpose":"creditworthiness","provider":"Acme"}`, id)
	if _, _, err := e.l.Register(context.Background(), []byte(def), "admin"); err != nil {
		e.t.Fatal(err)
	}
	lg, err := e.l.Log(id)
	if err != nil {
		e.t.Fatal(err)
	}
	return lg
}

func (e *env) now() time.Time {
	if e.cfg.Now != nil {
		return e.cfg.Now()
	}
	return time.Now()
}

// prepare parses and prepares raw events for lg.
func (e *env) prepare(lg *ledger.Log, raws ...string) []*ledger.Prepared {
	e.t.Helper()
	var out []*ledger.Prepared
	for i, raw := range raws {
		ev, err := event.Parse(i, []byte(raw), e.now(), event.DefaultLimits, false)
		if err != nil {
			e.t.Fatalf("parse %s: %v", raw, err)
		}
		p, err := lg.Prepare(ev, "tester")
		if err != nil {
			e.t.Fatalf("prepare: %v", err)
		}
		out = append(out, p)
	}
	return out
}

func inference(id string, output int) string {
	idPart := ""
	if id != "" {
		idPart = fmt.Sprintf(`"id":%q,`, id)
	}
	return fmt.Sprintf(`{%s"type":"inference","model":{"name":"credit","version":"3"},"attrs":{"confidence":0.5},"payload":{"subject":"p-1","output":%d}}`, idPart, output)
}

func TestRegister(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	def := `{"id":"credit","name":"Credit","intended_purpose":"scoring","provider":"Acme"}`
	idx, appended, err := e.l.Register(ctx, []byte(def), "admin")
	if err != nil || idx != 0 || !appended {
		t.Fatalf("first Register = %d, %v, %v; want index 0 appended", idx, appended, err)
	}
	// The same definition with its members reordered is the same canonical definition: nothing appended.
	same := `{"provider":"Acme","name":"Credit","id":"credit","intended_purpose":"scoring"}`
	if idx, appended, err := e.l.Register(ctx, []byte(same), "admin"); err != nil || appended || idx != 0 {
		t.Errorf("unchanged Register = %d, %v, %v; want index 0, nothing appended", idx, appended, err)
	}
	changed := `{"id":"credit","name":"Credit v2","intended_purpose":"scoring","provider":"Acme"}`
	if idx, appended, err := e.l.Register(ctx, []byte(changed), "admin"); err != nil || !appended || idx != 1 {
		t.Errorf("changed Register = %d, %v, %v; want index 1 appended", idx, appended, err)
	}
	lg, _ := e.l.Log("credit")
	ent, _ := lg.Entry(ctx, 0)
	ent1, _ := lg.Entry(ctx, 1)
	if ent.Type != "system.registered" || ent1.Type != "system.updated" {
		t.Errorf("types = %s, %s", ent.Type, ent1.Type)
	}
	e.reopen()
	lg, _ = e.l.Log("credit")
	if d := lg.Definition(); d == nil || d.Name != "Credit v2" || d.Index != 1 {
		t.Errorf("definition after reopen = %+v", d)
	}
	if _, _, err := e.l.Register(ctx, []byte(`{"id":"Bad Id","name":"x","intended_purpose":"y","provider":"z"}`), "admin"); err == nil {
		t.Errorf("a definition with a bad id was accepted")
	}
	if _, err := e.l.Log("nope"); !errors.Is(err, ledger.ErrUnknownSystem) {
		t.Errorf("unknown system: %v", err)
	}
}

func TestIdempotency(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	lg := e.register("s")
	id := event.NewV7(time.Now()).String()
	r1, err := lg.Append(ctx, e.prepare(lg, inference(id, 1)))
	if err != nil {
		t.Fatal(err)
	}
	// A retry with the same id and the same content answers the original index.
	r2, err := lg.Append(ctx, e.prepare(lg, inference(id, 1)))
	if err != nil || !r2[0].Duplicate || r2[0].Index != r1[0].Index {
		t.Fatalf("retry = %+v, %v; want duplicate of index %d", r2, err, r1[0].Index)
	}
	size, _ := lg.Tree()
	// The same id with different content is a conflict, and nothing of that request is stored.
	other := event.NewV7(time.Now()).String()
	_, err = lg.Append(ctx, e.prepare(lg, inference(other, 7), inference(id, 2)))
	var ce *ledger.ConflictError
	if !errors.As(err, &ce) || ce.Event != 1 {
		t.Fatalf("conflict = %v; want ConflictError for event 1", err)
	}
	if n, _ := lg.Tree(); n != size {
		t.Errorf("a rejected request changed the log from %d to %d entries", size, n)
	}
	// The other event of the rejected request was not stored, so it can be appended now.
	r3, err := lg.Append(ctx, e.prepare(lg, inference(other, 7)))
	if err != nil || r3[0].Duplicate || r3[0].Index != size {
		t.Errorf("append after the rejected request = %+v, %v", r3, err)
	}
	// Two events with one id in one request: one entry, two receipts.
	dup := event.NewV7(time.Now()).String()
	r4, err := lg.Append(ctx, e.prepare(lg, inference(dup, 3), inference(dup, 3)))
	if err != nil || r4[0].Index != r4[1].Index || !r4[1].Duplicate {
		t.Errorf("same id twice in a request = %+v, %v", r4, err)
	}
	// Idempotency survives a restart.
	e.reopen()
	lg, _ = e.l.Log("s")
	r5, err := lg.Append(ctx, e.prepare(lg, inference(id, 1)))
	if err != nil || !r5[0].Duplicate || r5[0].Index != r1[0].Index {
		t.Errorf("retry after restart = %+v, %v", r5, err)
	}
}

func TestIDWindow(t *testing.T) {
	e := newEnv(t)
	lg := e.register("s")
	for name, ts := range map[string]time.Time{
		"old":    time.Now().Add(-time.Hour),
		"future": time.Now().Add(time.Hour),
	} {
		raw := inference(event.NewV7(ts).String(), 1)
		ev, err := event.Parse(0, []byte(raw), time.Now(), event.DefaultLimits, false)
		if err != nil {
			t.Fatal(err)
		}
		_, err = lg.Prepare(ev, "tester")
		var ee *event.Error
		if !errors.As(err, &ee) || ee.Field != "/id" {
			t.Errorf("%s id: Prepare = %v, want an error on /id", name, err)
		}
	}
}

func TestConcurrentRequestsMixedWithConflict(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	lg := e.register("s")
	taken := event.NewV7(time.Now()).String()
	if _, err := lg.Append(ctx, e.prepare(lg, inference(taken, 1))); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	indices := map[uint64]bool{}
	conflicts := 0
	for g := 0; g < 32; g++ {
		wg.Go(func() {
			raws := []string{inference("", g), inference(event.NewV7(time.Now()).String(), g)}
			if g%4 == 0 {
				raws = append(raws, inference(taken, 99)) // conflicts: the whole request must fail
			}
			rs, err := lg.Append(ctx, e.prepare(lg, raws...))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				conflicts++
				return
			}
			for _, r := range rs {
				if indices[r.Index] {
					t.Errorf("index %d given twice", r.Index)
				}
				indices[r.Index] = true
			}
		})
	}
	wg.Wait()
	if conflicts != 8 {
		t.Errorf("%d requests failed, want the 8 conflicting ones", conflicts)
	}
	n, _ := lg.Tree()
	if want := uint64(2 + 24*2); n != want {
		t.Errorf("log has %d entries, want %d", n, want)
	}
	for i := uint64(2); i < n; i++ {
		if !indices[i] {
			t.Errorf("index %d was not acknowledged to anyone: a gap or a stored rejected event", i)
		}
	}
}

func waitCheckpoint(t *testing.T, lg *ledger.Log, size uint64) []byte {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if cp, n := lg.Checkpoint(); n >= size {
			return cp
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("no checkpoint of size %d within 5s", size)
	return nil
}

func TestCheckpointAndProofs(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	lg := e.register("s")
	for i := 0; i < 20; i++ {
		var raws []string
		for j := 0; j < 50; j++ {
			raws = append(raws, inference("", i*50+j))
		}
		if _, err := lg.Append(ctx, e.prepare(lg, raws...)); err != nil {
			t.Fatal(err)
		}
	}
	n, root := lg.Tree()
	signed := waitCheckpoint(t, lg, n)
	cp, err := ledger.OpenCheckpoint(signed, e.l.VerifierKey("s"))
	if err != nil {
		t.Fatal(err)
	}
	if cp.Size != n || cp.Root != root || cp.Origin != origin+"/s" {
		t.Fatalf("checkpoint %+v does not match the tree (%d, %x)", cp, n, root)
	}
	// A checkpoint opened with another log's key must fail.
	if _, err := ledger.OpenCheckpoint(signed, e.l.VerifierKey("other")); err == nil {
		t.Errorf("checkpoint verified under another origin's key")
	}
	for _, i := range []uint64{0, 1, 255, 256, 500, n - 1} {
		p, err := lg.InclusionProof(i, n)
		if err != nil {
			t.Fatal(err)
		}
		ent, _ := lg.Entry(ctx, i)
		lh := tlog.RecordHash(ent.AppendLeaf(nil))
		if err := tlog.CheckRecord(p, int64(n), root, int64(i), lh); err != nil {
			t.Errorf("inclusion of %d: %v", i, err)
		}
		if len(p) > 0 {
			p[0][0] ^= 1
			if tlog.CheckRecord(p, int64(n), root, int64(i), lh) == nil {
				t.Errorf("a flipped proof hash still verified")
			}
		}
	}
	for _, old := range []uint64{1, 256, 777} {
		oldRoot, _ := tlog.TreeHash(int64(old), lg.Store())
		p, err := lg.ConsistencyProof(old, n)
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckTree(p, int64(n), root, int64(old), oldRoot); err != nil {
			t.Errorf("consistency %d→%d: %v", old, n, err)
		}
	}
	if _, err := lg.InclusionProof(n, n+1); !errors.Is(err, ledger.ErrRange) {
		t.Errorf("proof beyond the published tree: %v", err)
	}
	// Tiles are the stored hashes; an entry bundle holds the leaves.
	tile := tlog.Tile{H: 8, L: 0, N: 1, W: 256}
	data, err := lg.TileData(tile)
	if err != nil || len(data) != 256*32 {
		t.Fatalf("tile: %d bytes, %v", len(data), err)
	}
	bundle, err := lg.EntryBundle(ctx, 1, 256)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 256; i++ {
		l := int(bundle[0])<<8 | int(bundle[1])
		h := tlog.RecordHash(bundle[2 : 2+l])
		if string(h[:]) != string(data[i*32:i*32+32]) {
			t.Fatalf("entry %d of bundle 1 does not hash to its tile", i)
		}
		if _, err := event.ParseLeaf(bundle[2 : 2+l]); err != nil {
			t.Fatalf("leaf %d: %v", i, err)
		}
		bundle = bundle[2+l:]
	}
	if _, err := lg.TileData(tlog.Tile{H: 8, L: 1, N: 0, W: 256}); !errors.Is(err, ledger.ErrRange) {
		t.Errorf("a level-1 full tile of a %d-leaf tree was served: %v", n, err)
	}
}

func TestPayloadSealedAndRecorded(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	lg := e.register("s")
	rs, err := lg.Append(ctx, e.prepare(lg, `{"type":"inference","model":{"name":"m","version":"1"},"payload":{"subject":"IBAN DE89370400440532013000","output":{"approved":false}}}`))
	if err != nil {
		t.Fatal(err)
	}
	ent, _ := lg.Entry(ctx, rs[0].Index)
	if strings.Contains(string(ent.Envelope), "DE89") || strings.Contains(string(ent.Sealed), "DE89") {
		t.Fatalf("a personal value is stored in clear")
	}
	pt, err := lg.OpenPayload(ent)
	if err != nil || !strings.Contains(string(pt), "DE89370400440532013000") {
		t.Fatalf("payload does not open: %v", err)
	}
	var envl map[string]any
	json.Unmarshal(ent.Envelope, &envl)
	if envl["actor"] != "tester" || envl["system"] != "s" {
		t.Errorf("envelope actor/system = %v/%v", envl["actor"], envl["system"])
	}
	if event.Digest(ent.Salt[:], ent.Envelope) != ent.Digest {
		t.Errorf("leaf digest does not commit to the envelope")
	}
}

func TestMonthRollbackReseals(t *testing.T) {
	e := newEnv(t)
	e.setClock(time.Date(2026, 11, 30, 23, 59, 59, 0, time.UTC))
	e.reopen()
	ctx := context.Background()
	lg := e.register("s")
	ps := e.prepare(lg, inference("", 1))
	// Sequenced after midnight: the payload must be re-sealed under December's period key.
	e.setClock(time.Date(2026, 12, 1, 0, 0, 0, 5e6, time.UTC))
	rs, err := lg.Append(ctx, ps)
	if err != nil {
		t.Fatal(err)
	}
	ent, _ := lg.Entry(ctx, rs[0].Index)
	env, _ := event.ParseEnvelope(ent.Envelope)
	if env.Payload.Key != "s/log/2026-12" || !strings.HasPrefix(env.Recorded, "2026-12-01") {
		t.Errorf("key %s for an event recorded %s", env.Payload.Key, env.Recorded)
	}
	if _, err := lg.OpenPayload(ent); err != nil {
		t.Errorf("payload: %v", err)
	}
}

func TestRecordedNeverDecreases(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	lg := e.register("s")
	e.setClock(time.Now().Add(time.Minute))
	lg.Append(ctx, e.prepare(lg, inference("", 1)))
	e.setClock(time.Now()) // the clock steps back a minute
	rs, _ := lg.Append(ctx, e.prepare(lg, inference("", 2)))
	a, _ := lg.Entry(ctx, rs[0].Index-1)
	b, _ := lg.Entry(ctx, rs[0].Index)
	if b.Recorded < a.Recorded {
		t.Errorf("recorded went backwards: %d then %d", a.Recorded, b.Recorded)
	}
}
