package ledger

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/seal"
	"github.com/cairn-ai/cairn/internal/store/local"
)

type rv struct {
	keydir string
	clock  atomic.Pointer[time.Time]
	l      *Ledger
}

func newRV(t *testing.T, now time.Time) *rv {
	r := &rv{keydir: t.TempDir()}
	r.clock.Store(&now)
	k := make([]byte, 32)
	rand.Read(k)
	kek, _ := seal.NewKEK(k)
	keys, err := seal.OpenKeyring(r.keydir, kek)
	if err != nil {
		t.Fatal(err)
	}
	_, sk, _ := ed25519.GenerateKey(rand.Reader)
	st, err := local.Open(t.TempDir(), local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Origin: "test.example/cairn", CheckpointInterval: 5 * time.Millisecond,
		Now: func() time.Time { return *r.clock.Load() }}
	if r.l, err = Open(context.Background(), cfg, st, keys, sk); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.l.Close() })
	def := `{"id":"s","name":"Credit scoring","intended_purpose":"creditworthiness","provider":"Acme"}`
	if _, _, err := r.l.Register(context.Background(), []byte(def), "admin"); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rv) prep(t *testing.T, lg *Log, raws ...string) []*Prepared {
	var out []*Prepared
	for i, raw := range raws {
		ev, err := event.Parse(i, []byte(raw), *r.clock.Load(), event.DefaultLimits, false)
		if err != nil {
			t.Fatalf("parse %s: %v", raw, err)
		}
		p, err := lg.Prepare(ev, "tester")
		if err != nil {
			t.Fatalf("prepare: %v", err)
		}
		out = append(out, p)
	}
	return out
}

func withPayload(id string, out int) string {
	idp := ""
	if id != "" {
		idp = fmt.Sprintf(`"id":%q,`, id)
	}
	return fmt.Sprintf(`{%s"type":"inference","model":{"name":"credit","version":"3"},"attrs":{"confidence":0.5},"payload":{"subject":"p-1","output":%d}}`, idp, out)
}

func noPayload(id string) string {
	return fmt.Sprintf(`{"id":%q,"type":"inference","model":{"name":"credit","version":"3"},"attrs":{"error_code":"timeout"}}`, id)
}

// Regression (review): undoing a request removes, by id, an entry that belongs to an EARLIER request of the same batch
// (the undone request only held a duplicate of it). The earlier request is still acknowledged with an index
// that now belongs to another event, and the id is forgotten for idempotency.
func TestReviewUndoRemovesOtherRequestsEntry(t *testing.T) {
	r := newRV(t, time.Date(2026, 11, 30, 23, 59, 59, 0, time.UTC))
	lg, _ := r.l.Log("s")
	ctx := context.Background()
	x := event.NewV7(*r.clock.Load()).String()
	// r1: X (no payload, so no re-seal needed) followed by Z (no payload).
	z := event.NewV7(*r.clock.Load()).String()
	r1 := &request{items: r.prep(t, lg, noPayload(x), noPayload(z)), done: make(chan struct{})}
	// r2: a retry of X (same content) plus an event with a payload sealed in November.
	r2 := &request{items: r.prep(t, lg, noPayload(x), withPayload("", 1)), done: make(chan struct{})}
	// Midnight passes; December's period key cannot be obtained (damaged key file / KMS error).
	dec := time.Date(2026, 12, 1, 0, 0, 0, 5e6, time.UTC)
	r.clock.Store(&dec)
	p := filepath.Join(r.keydir, "s", "log", "2026-12.key")
	os.MkdirAll(filepath.Dir(p), 0o700)
	os.WriteFile(p, []byte("garbage"), 0o600)

	// Drive the pipeline as the sequencer would with both requests in one batch (the sequencer is idle).
	b := lg.build([]*request{r1, r2})
	lg.pending.Add(4)
	lg.commitQ <- b
	<-r1.done
	<-r2.done
	if r2.err == nil {
		t.Fatalf("r2 should fail")
	}
	if r1.err != nil {
		t.Fatalf("r1 failed: %v", r1.err)
	}
	t.Logf("r1 acknowledged: %+v", r1.res)
	for _, rc := range r1.res {
		e, err := lg.Entry(ctx, rc.Index)
		if err != nil || e.ID != rc.ID {
			got := "nothing"
			if e != nil {
				got = e.ID.String()
			}
			t.Errorf("acknowledged %s at index %d, but the store holds %s there (err %v)", rc.ID, rc.Index, got, err)
		}
	}
	if _, ok := lg.dedup[r1.items[0].ev.ID]; !ok {
		t.Errorf("acknowledged id %s is not remembered for idempotency", x)
	}
}

// Regression (review): one request carrying the same client id twice with DIFFERENT content is acknowledged (the second
// as a duplicate of the first) instead of answering 409.
func TestReviewSameIDDifferentContentInOneRequest(t *testing.T) {
	r := newRV(t, time.Now())
	lg, _ := r.l.Log("s")
	x := event.NewV7(time.Now()).String()
	rs, err := lg.Append(context.Background(), r.prep(t, lg, withPayload(x, 1), withPayload(x, 2)))
	var ce *ConflictError
	if err == nil || !errorsAs(err, &ce) {
		t.Errorf("same id, different content in one request: receipts %+v, err %v; want ConflictError", rs, err)
	}
}

func errorsAs(err error, ce **ConflictError) bool {
	c, ok := err.(*ConflictError)
	if ok {
		*ce = c
	}
	return ok
}

// Regression (review): Append after (or racing with) Close can enqueue a request nobody will ever sequence: select picks
// the queue send at random even though quit is closed, and the caller waits on r.done forever.
func TestReviewAppendAfterCloseHangs(t *testing.T) {
	r := newRV(t, time.Now())
	lg, _ := r.l.Log("s")
	ps := make([][]*Prepared, 20)
	for i := range ps {
		ps[i] = r.prep(t, lg, withPayload("", i))
	}
	r.l.Close()
	hung := 0
	for i := range ps {
		ch := make(chan error, 1)
		go func() { _, err := lg.Append(context.Background(), ps[i]); ch <- err }()
		select {
		case <-ch:
		case <-time.After(200 * time.Millisecond):
			hung++
		}
	}
	if hung > 0 {
		t.Errorf("%d of %d Append calls after Close never returned", hung, len(ps))
	}
}

// Regression (review): the id window is checked at Prepare time, the dedup map expires at build time with only a
// one-minute grace. A retry that waits in the queue longer than that (stalled fsync / PostgreSQL) is appended
// a second time.
func TestReviewRetryDelayedInQueueDuplicates(t *testing.T) {
	t0 := time.Now()
	r := newRV(t, t0)
	lg, _ := r.l.Log("s")
	ctx := context.Background()
	x := event.NewV7(t0.Add(-9*time.Minute - 30*time.Second)).String()
	r1, err := lg.Append(ctx, r.prep(t, lg, withPayload(x, 1)))
	if err != nil {
		t.Fatal(err)
	}
	retry := r.prep(t, lg, withPayload(x, 1)) // accepted by Prepare at t0
	t1 := t0.Add(2 * time.Minute)             // ...then waits two minutes behind a stalled commit
	r.clock.Store(&t1)
	r2, err := lg.Append(ctx, retry)
	// Either recognised as the original, or refused because it can no longer be recognised — never appended twice.
	var ee *event.Error
	switch {
	case errors.As(err, &ee) && ee.Field == "/id":
	case err == nil && r2[0].Duplicate && r2[0].Index == r1[0].Index:
	default:
		t.Errorf("retry of %s = %+v, %v; original %+v: the event was appended twice", x, r2, err, r1[0])
	}
}
