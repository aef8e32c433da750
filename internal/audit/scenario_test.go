package audit_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-ai/cairn/internal/audit"
	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/registry"
	"github.com/cairn-ai/cairn/internal/seal"
	"github.com/cairn-ai/cairn/internal/store/local"
)

// world is a ledger on a simulated clock with the system "credit" registered.
type world struct {
	t     *testing.T
	l     *ledger.Ledger
	lg    *ledger.Log
	reg   *registry.Registry
	clock atomic.Pointer[time.Time]
}

func newWorld(t *testing.T, start time.Time) *world {
	t.Helper()
	w := &world{t: t, reg: registry.New(nil)}
	w.clock.Store(&start)
	k := make([]byte, 32)
	rand.Read(k)
	kek, _ := seal.NewKEK(k)
	keys, err := seal.OpenKeyring(t.TempDir(), kek)
	if err != nil {
		t.Fatal(err)
	}
	_, sk, _ := ed25519.GenerateKey(rand.Reader)
	st, err := local.Open(t.TempDir(), local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := ledger.Config{Origin: "test.example/cairn", CheckpointInterval: 2 * time.Millisecond, Now: func() time.Time { return *w.clock.Load() }}
	if w.l, err = ledger.Open(context.Background(), cfg, st, keys, sk); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.l.Close() })
	def := `{"id":"credit","name":"Credit scoring","intended_purpose":"creditworthiness","provider":"Acme","field_policy":{"default":"keep","domain":"customers","fields":{"subject":{"action":"pseudonym"}}}}`
	if _, _, err := w.l.Register(context.Background(), []byte(def), "admin"); err != nil {
		t.Fatal(err)
	}
	w.lg, _ = w.l.Log("credit")
	return w
}

func (w *world) now() time.Time { return *w.clock.Load() }

func (w *world) set(t time.Time) { w.clock.Store(&t) }

// add appends raw events (one request) as actor and returns their receipts.
func (w *world) add(actor string, raws ...string) []ledger.Receipt {
	w.t.Helper()
	var ps []*ledger.Prepared
	for i, raw := range raws {
		ev, err := event.Parse(i, []byte(raw), w.now(), event.DefaultLimits, false)
		if err != nil {
			w.t.Fatalf("parse %s: %v", raw, err)
		}
		p, err := w.lg.Prepare(ev, actor)
		if err != nil {
			w.t.Fatal(err)
		}
		ps = append(ps, p)
	}
	rs, err := w.lg.Append(context.Background(), ps)
	if err != nil {
		w.t.Fatal(err)
	}
	return rs
}

func (w *world) follow() {
	w.t.Helper()
	if err := w.reg.CatchUp(context.Background(), "credit", w.lg.Store()); err != nil {
		w.t.Fatal(err)
	}
}

func ts(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

type deployed struct {
	at      time.Time
	env     string
	version string // "" for a retirement
}

// TestTabletopAudit is the scenario of the issue: three model versions over simulated months, each trained,
// registered, evaluated, approved by a second person and deployed; thousands of inferences; some overrides.
func TestTabletopAudit(t *testing.T) {
	start := time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)
	w := newWorld(t, start)
	var deps []deployed
	type inf struct {
		id      string
		index   uint64
		version string
		at      time.Time
	}
	var infs []inf
	datasets := map[string]string{} // version → dataset event id
	overridden := map[string]bool{} // inference id → overridden
	for v := 1; v <= 3; v++ {
		ver := fmt.Sprint(v)
		month := start.AddDate(0, 2*(v-1), 0)
		w.set(month)
		d := w.add("data-eng", fmt.Sprintf(`{"type":"dataset.version","time":%q,"attrs":{"name":"applications","version":"2026-%02d","digest":"sha256:%064x","rows":%d}}`, ts(month), month.Month(), v, 10000*v))[0]
		datasets[ver] = d.ID.String()
		run := w.add("alice", fmt.Sprintf(`{"type":"training.run","refs":[%q],"attrs":{"run_id":"run-%d","status":"finished","params":{"C":"1.0"},"metrics":{"auc":0.8}}}`, d.ID, v))[0]
		mv := w.add("alice", fmt.Sprintf(`{"type":"model.version","model":{"name":"credit","version":%q,"digest":"sha256:%064x"},"refs":[%q],"attrs":{"run_id":"run-%d","format":"sklearn"}}`, ver, 100+v, run.ID, v))[0]
		_ = mv
		w.set(month.Add(24 * time.Hour))
		ev := w.add("carol", fmt.Sprintf(`{"type":"evaluation","model":{"name":"credit","version":%q},"attrs":{"metrics":{"auc":0.81},"thresholds":{"auc":0.75},"passed":true}}`, ver))[0]
		ap := w.add("bob", fmt.Sprintf(`{"type":"approval","model":{"name":"credit","version":%q},"refs":[%q],"attrs":{"decision":"approve"},"payload":{"justification":"meets thresholds"}}`, ver, ev.ID))[0]
		w.set(month.Add(48 * time.Hour))
		dep := w.now()
		w.add("ops", fmt.Sprintf(`{"type":"deployment","model":{"name":"credit","version":%q},"deployment":"prod","refs":[%q],"attrs":{"action":"deployed","config_digest":"sha256:cfg%d"}}`, ver, ap.ID, v))
		deps = append(deps, deployed{dep, "prod", ver})
		// A month and a half of traffic: 1,000 inferences in requests of 250, a few overridden.
		for b := 0; b < 4; b++ {
			w.set(dep.Add(time.Duration(b+1) * 240 * time.Hour))
			var raws []string
			for i := 0; i < 250; i++ {
				raws = append(raws, fmt.Sprintf(`{"type":"inference","model":{"name":"credit","version":%q},"deployment":"prod","attrs":{"confidence":0.7},"payload":{"subject":"applicant-%d-%d-%d","output":{"score":%d}}}`, ver, v, b, i, 500+i))
			}
			for _, r := range w.add("svc-scoring", raws...) {
				infs = append(infs, inf{r.ID.String(), r.Index, ver, w.now()})
			}
			last := infs[len(infs)-1]
			w.add("reviewer-svc", fmt.Sprintf(`{"type":"oversight","refs":[%q],"attrs":{"action":"overridden"},"payload":{"overseer":"reviewer-7","new_output":{"score":300},"reason":"income misread"}}`, last.id))
			overridden[last.id] = true
		}
	}
	// Staging got version 2 and was then retired; the retirement was entered a week after it happened.
	w.set(start.AddDate(0, 3, 0))
	w.add("ops", fmt.Sprintf(`{"type":"deployment","model":{"name":"credit","version":"2"},"deployment":"staging","attrs":{"action":"deployed"},"refs":[%q]}`, firstApproval(t, w, "2")))
	deps = append(deps, deployed{w.now(), "staging", "2"})
	retiredAt := start.AddDate(0, 4, 0)
	w.set(retiredAt.Add(7 * 24 * time.Hour))
	w.add("ops", fmt.Sprintf(`{"type":"deployment","time":%q,"model":{"name":"credit","version":"2"},"deployment":"staging","attrs":{"action":"retired"}}`, ts(retiredAt)))
	deps = append(deps, deployed{retiredAt, "staging", ""})
	w.set(start.AddDate(0, 8, 0))
	w.follow()

	// live?at= one nanosecond before and after every deployment event, in every environment.
	for _, d := range deps {
		before := liveVersion(t, w, d.env, d.at.Add(-time.Nanosecond))
		after := liveVersion(t, w, d.env, d.at.Add(time.Nanosecond))
		exact := liveVersion(t, w, d.env, d.at)
		want := d.version
		if want == "" {
			want = "retired"
		}
		if after != want || exact != want {
			t.Errorf("%s at %s+1ns = %q (at it: %q), want %q", d.env, d.at, after, exact, want)
		}
		if before == want {
			t.Errorf("%s at %s-1ns = %q: the deployment took effect early", d.env, d.at, before)
		}
	}
	// The retirement rests on an event recorded a week after it happened: the answer says so.
	l, err := w.reg.LiveIn("credit", "staging", retiredAt.Add(time.Hour))
	if err != nil || l.State != "retired" || !slices.Contains(l.RecordedLater, l.Deployment) {
		t.Errorf("staging just after the back-dated retirement: %+v %v, want retired, resting on a late record", l, err)
	}
	if l, _ := w.reg.LiveIn("credit", "prod", start.AddDate(0, 5, 0)); len(l.RecordedLater) != 0 {
		t.Errorf("prod answer rests on late records: %v", l.RecordedLater)
	}

	// Reconstruct an overridden decision from three months before "now".
	threeMonthsAgo := w.now().AddDate(0, -3, 0)
	var target inf
	for _, in := range infs {
		if overridden[in.id] && !in.at.After(threeMonthsAgo) {
			target = in
		}
	}
	if target.id == "" {
		t.Fatal("no overridden inference three months back")
	}
	src := audit.Source{Ledger: w.l, Registry: w.reg}
	r, bundle, err := src.Reconstruct(context.Background(), "credit", target.index, "auditor-1", true)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Verified || r.Live == nil || r.Live.Version != target.version || r.ModelMatchesLive == nil || !*r.ModelMatchesLive {
		t.Fatalf("reconstruction of %s (version %s): verified=%v live=%+v", target.id, target.version, r.Verified, r.Live)
	}
	if r.Live.Approval == nil || r.Live.Approval.Actor != "bob" || r.Live.ConfigDigest != "sha256:cfg"+target.version {
		t.Errorf("live approval/config: %+v", r.Live)
	}
	if r.Lineage == nil || len(r.Lineage.Datasets) != 1 || r.Lineage.Datasets[0].ID != datasets[target.version] || r.Lineage.Run == nil || r.Lineage.Inferences != 1000 {
		t.Errorf("lineage: %+v", r.Lineage)
	}
	if len(r.Oversight) != 1 || r.Oversight[0].Attr("action") != "overridden" || !strings.Contains(string(r.Oversight[0].Payload), "reviewer-7") {
		t.Errorf("oversight: %+v", r.Oversight)
	}
	// The payload was pseudonymised at capture, and is disclosed to the auditor.
	if !strings.Contains(string(r.Payload), `"score"`) || strings.Contains(string(r.Payload), "applicant-") {
		t.Errorf("payload: %s", r.Payload)
	}
	// The read was recorded before the payload left.
	w.follow()
	vb, err := audit.VerifyBundle(bundle, w.l.VerifierKey("credit"))
	if err != nil {
		t.Fatal(err)
	}
	if vb.Events[0].Envelope.ID != target.id || vb.System != "credit" || len(vb.Events) != r.Evidence {
		t.Errorf("bundle subject %s, want %s", vb.Events[0].Envelope.ID, target.id)
	}
	var types []string
	for _, e := range vb.Events {
		types = append(types, e.Envelope.Type)
	}
	for _, want := range []string{"inference", "oversight", "deployment", "approval", "model.version", "training.run", "dataset.version", "evaluation"} {
		if !strings.Contains(strings.Join(types, ","), want) {
			t.Errorf("bundle lacks a %s event: %v", want, types)
		}
	}
	// Another key does not verify it; altering any byte makes it fail.
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	otherKey, _ := ledger.VerifierKey("test.example/cairn/credit", other.Public().(ed25519.PublicKey))
	if _, err := audit.VerifyBundle(bundle, otherKey); err == nil {
		t.Error("bundle verified under another key")
	}
	for i := range bundle {
		b := append([]byte(nil), bundle...)
		b[i] ^= 0x01
		if _, err := audit.VerifyBundle(b, ""); err == nil {
			t.Fatalf("bundle with byte %d altered (%q → %q) verified: %s", i, bundle[i], b[i], bundle[max(0, i-120):min(len(bundle), i+60)])
		}
	}
	var pretty map[string]any
	if err := json.Unmarshal(bundle, &pretty); err != nil {
		t.Fatal(err)
	}
	t.Logf("bundle: %d bytes, %d events", len(bundle), len(vb.Events))
}

func firstApproval(t *testing.T, w *world, ver string) string {
	t.Helper()
	w.follow()
	lin, err := w.reg.Lineage("credit", "credit", ver)
	if err != nil || len(lin.Approvals) == 0 {
		t.Fatalf("no approval of %s: %v", ver, err)
	}
	return lin.Approvals[0].ID
}

func liveVersion(t *testing.T, w *world, env string, at time.Time) string {
	t.Helper()
	l, err := w.reg.LiveIn("credit", env, at)
	if err != nil {
		return ""
	}
	if l.State == "retired" {
		return "retired"
	}
	return l.Version
}
