package bench

import (
	"bytes"
	"context"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/store/pg/pgtest"
)

func TestEvents(t *testing.T) {
	now := time.Now()
	for _, withID := range []bool{true, false} {
		raw := AppendEvent(nil, 123456789, now, withID)
		want := EventSize
		if !withID {
			want -= 44
		}
		if len(raw) != want {
			t.Errorf("withID=%v: event is %d bytes, want %d", withID, len(raw), want)
		}
		ev, err := event.Parse(0, raw, now, event.DefaultLimits, false)
		if err != nil {
			t.Fatalf("withID=%v: %v\n%s", withID, err, raw)
		}
		if ev.IDGiven != withID || ev.Payload == nil || ev.Model == nil {
			t.Errorf("withID=%v: parsed %+v", withID, ev)
		}
	}
	body, n := AppendBatch(nil, 3, 1, now, true)
	if n != 3*EventSize {
		t.Errorf("batch of 3 holds %d bytes of events", n)
	}
	count := 0
	if err := event.Split(body, event.DefaultLimits, func(i int, raw []byte) error {
		count++
		_, err := event.Parse(i, raw, now, event.DefaultLimits, false)
		return err
	}); err != nil || count != 3 {
		t.Fatalf("split: %d events, %v", count, err)
	}
	if _, err := event.Parse(0, AppendSmallEvent(nil, 42), now, event.DefaultLimits, false); err != nil {
		t.Fatal(err)
	}
}

// TestRun runs every scenario briefly: the machinery works end to end and reports something for each.
func TestRun(t *testing.T) {
	if testing.Short() {
		t.Skip("runs servers and fsyncs for a few seconds")
	}
	o := Defaults
	o.Dir = t.TempDir()
	o.Runs = 1
	o.Warmup, o.Duration = 100*time.Millisecond, 300*time.Millisecond
	o.Writers = []int{1, 8}
	o.BatchWriters, o.BatchEvents = 4, 10
	o.HTTPClients, o.HTTPBatch, o.SingleClients = 2, 50, 4
	o.ProofLeaves, o.ProofQueries, o.HTTPProofQueries = 5000, 200, 20
	r, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Append) != 3 || len(r.HTTP) != 2 || r.Proofs == nil || r.Disk == nil {
		t.Fatalf("report lacks scenarios: %+v", r)
	}
	for _, s := range r.Append {
		if s.Median.Events == 0 || s.Median.Ack.N == 0 || s.Median.CPU.TotalUs <= 0 {
			t.Errorf("%s: %+v", s.Name, s.Median)
		}
	}
	for _, s := range r.HTTP {
		if s.Median.Load.Events == 0 || s.Median.Index == nil || !s.Median.Index.CaughtUp {
			t.Errorf("%s: %+v", s.Name, s.Median)
		}
	}
	if r.Proofs.Leaves < 5000 || r.Proofs.Inclusion.N != 200 || r.Proofs.HTTPConsistency == nil {
		t.Errorf("proofs: %+v", r.Proofs)
	}
	if r.Disk.Segments == 0 || r.Disk.SegmentsRatio < 1 {
		t.Errorf("disk: %+v", r.Disk)
	}
	var out testWriter
	WriteTable(&out, r)
	if len(out) == 0 {
		t.Error("empty table")
	}
}

type testWriter []byte

func (w *testWriter) Write(p []byte) (int, error) { *w = append(*w, p...); return len(p), nil }

// TestRunScale runs the scale-out scenarios briefly: the embedded store always; PostgreSQL with one and three
// nodes when CAIRN_TEST_PG is set (under CI it must be). Every (node, system) pair gets load, and the database
// figures are reported.
func TestRunScale(t *testing.T) {
	if testing.Short() {
		t.Skip("runs servers for a few seconds")
	}
	o := Defaults
	o.Dir = t.TempDir()
	o.Runs = 1
	o.Warmup, o.Duration = 100*time.Millisecond, 400*time.Millisecond
	o.Scenarios = []string{"scale"}
	o.ScaleNodes, o.ScaleSystems, o.ScaleClients, o.ScaleBatch = []int{1, 3}, []int{1, 3}, 3, 20
	want := 2 // embedded: 1 node × {1, 3} systems
	if os.Getenv("CAIRN_TEST_PG") != "" || os.Getenv("CI") != "" {
		o.ScalePG = pgtest.URL(t)
		want += 2 + 3 // PostgreSQL: 1 node × {1, 3}; 3 nodes × 1 system; 3 nodes × 3 systems, with and without routing
	}
	r, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Scale) != want || len(r.Append)+len(r.HTTP) != 0 || r.Proofs != nil {
		t.Fatalf("report has %d scale scenarios (want %d) and others: %+v", len(r.Scale), want, r)
	}
	for _, s := range r.Scale {
		m := s.Median
		if m.Load.Events == 0 || m.Load.Request.N == 0 || m.ServerCPU.TotalUs <= 0 {
			t.Errorf("%s: %+v", s.Name, m)
		}
		if m.Systems > 1 {
			if len(m.Load.PerSystem) != m.Systems || slices.Contains(m.Load.PerSystem, 0) {
				t.Errorf("%s: per-system rates %v", s.Name, m.Load.PerSystem)
			}
		}
		if m.Store == "postgres" && (m.DatabaseCPU == nil || m.DatabaseBytes < 1000 || m.WALBytes <= 0) {
			t.Errorf("%s: database figures missing: %+v", s.Name, m)
		}
	}
	var out testWriter
	WriteTable(&out, r)
	if !bytes.Contains(out, []byte("scale-out")) {
		t.Errorf("table lacks the scale-out section:\n%s", out)
	}
}
