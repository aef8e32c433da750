// Package docgentest builds the fixed scenario log that docgen's golden files, the gate tests and the committed
// examples are generated from: deterministic (seeded crypto randomness, a simulated clock, fixed keys), so the
// same code gives the same log, byte for byte. It is for tests only.
package docgentest

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/cryptotest"
	"time"

	"github.com/cairn-ai/cairn/internal/docgen"
	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/seal"
	"github.com/cairn-ai/cairn/internal/signature"
	"github.com/cairn-ai/cairn/internal/store/local"
)

// The scenario's fixed keys: the log's checkpoint key and the signatory's key.
var (
	LogKey       = ed25519.NewKeyFromSeed([]byte("cairn docgen scenario: log key!!"))
	SignatoryKey = ed25519.NewKeyFromSeed([]byte("cairn docgen scenario: signatory"))
)

// Start is the scenario's first moment; At the moment its documents are generated for.
var (
	Start = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	At    = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
)

// world is a ledger on a simulated clock, with deterministic randomness, holding the scenario.
type World struct {
	t     testing.TB
	L     *ledger.Ledger
	Log   *ledger.Log
	clock atomic.Pointer[time.Time]
	// mutate may rewrite a client event before it is appended (to show that changing a source changes documents).
	mutate func(string) string
	ids    map[string]ledger.Receipt // named events
}

const definition = `{"id":"credit","name":"Credit scoring","version":"2.1","provider":"Acme Bank AG",
"intended_purpose":"Assess the creditworthiness of natural persons applying for consumer loans",
"annex_iii":"5(b)","eu_database_id":"EU-DB-0000123","deployer":"Acme Bank AG retail lending",
"field_policy":{"default":"keep","domain":"applicants","fields":{"input.name":{"action":"pseudonym"},"input.iban":{"action":"drop"},"input.birth_date":{"action":"generalize","to":"year"},"subject":{"action":"pseudonym"}}},
"input_schema":{"type":"object","properties":{"subject":{"type":"string","x-personal":true},"input":{"type":"object","properties":{"name":{"type":"string","x-personal":true},"iban":{"type":"string","x-personal":true},"birth_date":{"type":"string","x-personal":true},"income":{"type":"number"},"loan_amount":{"type":"number"}}}}},
"oversight":{"review":"scores below 550 go to a credit officer"},
"monitoring":{"drift":{"psi_max":0.2},"latency_p99_ms":250},
"retention":{"log":"P2Y","doc":"P10Y"},
"provider_info":{"address":"Bahnhofstrasse 1, 8001 Zürich, Switzerland","contact":"ai-compliance@acme.example",
"authorised_representative":"Acme Bank Europe SE, Mainzer Landstrasse 10, 60325 Frankfurt, Germany",
"conformity_procedure":"internal control (Annex VI)","standards":["ISO/IEC 42001:2023 (AI management system; not harmonised)","prEN ISO/IEC 24970 (AI system logging; draft, used as guidance)"],
"union_law":["none"],"personal_data":"Processing complies with Regulation (EU) 2016/679; DPIA ref. DPIA-2026-014",
"signatory":{"name":"Dr. Maria Keller","function":"Chief Risk Officer","place":"Frankfurt am Main"},
"annex_iv":{"1(b)":"Called by the loan origination system over HTTPS; no other AI system.","1(e)":"x86-64 servers, 4 vCPU, 8 GiB","2(b)":"Gradient-boosted trees on 24 features; objective: log loss; threshold chosen for a 5% default rate.","3":"Not validated for business loans or applicants without credit history."},
"instructions":{"b(vii)":"Scores range 300-850; below 550 the application goes to a credit officer."},
"monitoring_plan":{"1":"All versions of credit in production; quarterly review.","3":"AUC >= 0.75, demographic parity difference <= 0.1, PSI <= 0.2."}}}`

func NewWorld(t testing.TB, mutate func(string) string) *World {
	if tt, ok := t.(*testing.T); ok {
		cryptotest.SetGlobalRandom(tt, 6)
	}
	w := &World{t: t, mutate: mutate, ids: map[string]ledger.Receipt{}}
	now := Start
	w.clock.Store(&now)
	kek, _ := seal.NewKEK([]byte("0123456789abcdef0123456789abcdef"))
	keys, err := seal.OpenKeyring(t.TempDir(), kek)
	if err != nil {
		t.Fatal(err)
	}
	st, err := local.Open(t.TempDir(), local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := ledger.Config{Origin: "bank.example/cairn", CheckpointInterval: time.Millisecond, Now: func() time.Time { return *w.clock.Load() }}
	if w.L, err = ledger.Open(context.Background(), cfg, st, keys, LogKey); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.L.Close() })
	if _, _, err := w.L.Register(context.Background(), []byte(definition), "admin"); err != nil {
		t.Fatal(err)
	}
	w.Log, _ = w.L.Log("credit")
	return w
}

func (w *World) At(t time.Time) { w.clock.Store(&t) }

func (w *World) Now() time.Time { return *w.clock.Load() }

// add appends events (one request) as actor; name, if set, remembers the first.
func (w *World) Add(name, actor string, raws ...string) ledger.Receipt {
	w.t.Helper()
	var ps []*ledger.Prepared
	for i, raw := range raws {
		if w.mutate != nil {
			raw = w.mutate(raw)
		}
		ev, err := event.Parse(i, []byte(raw), w.Now(), event.DefaultLimits, false)
		if err != nil {
			w.t.Fatalf("parse %s: %v", raw, err)
		}
		p, err := w.Log.Prepare(ev, actor)
		if err != nil {
			w.t.Fatal(err)
		}
		ps = append(ps, p)
	}
	rs, err := w.Log.Append(context.Background(), ps)
	if err != nil {
		w.t.Fatal(err)
	}
	if name != "" {
		w.ids[name] = rs[0]
	}
	return rs[0]
}

func (w *World) ID(name string) string { return w.ids[name].ID.String() }

// generate makes a document at the world's current time, records it like the API does and returns it.
func (w *World) Generate(kind, version string, actor string) (*docgen.Document, string, ledger.Receipt) {
	w.t.Helper()
	d, err := docgen.Generate(context.Background(), w.Log, w.L.VerifierKey("credit"), docgen.Request{Kind: kind, ModelVersion: version, At: w.Now()})
	if err != nil {
		w.t.Fatal(err)
	}
	b, err := docgen.Render(d, docgen.FormatMarkdown)
	if err != nil {
		w.t.Fatal(err)
	}
	dg := docgen.Digest(b)
	r, err := w.L.AppendServer(context.Background(), "credit", docgen.Event(d, docgen.FormatMarkdown, dg), actor)
	if err != nil {
		w.t.Fatal(err)
	}
	return d, dg, r
}

// scenario builds the fixed scenario log: two model versions of "credit" over three months, each trained on its
// own data, evaluated with per-group figures, approved (the second by its own registrant, which breaks the
// four-eyes rule) and deployed; traffic with overrides, an anomaly and an incident; instructions for use, an
// evaluation report and a signed declaration of conformity recorded along the way.
func Scenario(t testing.TB, mutate func(string) string) *World {
	w := NewWorld(t, mutate)
	day := func(n int) time.Time { return Start.Add(time.Duration(n) * 24 * time.Hour) }
	for v := 1; v <= 2; v++ {
		base := (v - 1) * 45
		w.At(day(base + 1))
		w.Add(fmt.Sprintf("data%d", v), "data-eng", fmt.Sprintf(`{"type":"dataset.version","attrs":{"name":"applications","version":"2026-q%d","digest":"sha256:%064x","rows":%d,"source_type":"warehouse","source":"loans.applications","statistics":{"default_rate":0.0%d}}}`, v, v, 120000*v, 4+v))
		w.Add(fmt.Sprintf("run%d", v), "alice", fmt.Sprintf(`{"type":"training.run","refs":[%q],"attrs":{"run_id":"run-%d","experiment":"credit-gbt","status":"finished","params":{"max_depth":"%d","n_estimators":"400"},"metrics":{"train_auc":0.8%d},"code_revision":"git:4f1c%d","started":%q,"ended":%q}}`,
			w.ID(fmt.Sprintf("data%d", v)), v, 4+v, v, v, day(base+1).Format(time.RFC3339), day(base+1).Add(2*time.Hour).Format(time.RFC3339)))
		from := ""
		if v > 1 {
			from = fmt.Sprintf(`,"from_version":"%d","change_classification":"non_substantial"`, v-1)
		}
		w.Add(fmt.Sprintf("model%d", v), "alice", fmt.Sprintf(`{"type":"model.version","model":{"name":"credit","version":"%d","digest":"sha256:%064x"},"refs":[%q],"attrs":{"run_id":"run-%d","format":"sklearn"%s}}`, v, 100+v, w.ID(fmt.Sprintf("run%d", v)), v, from))
		w.At(day(base + 3))
		w.Add(fmt.Sprintf("eval%d", v), "carol", fmt.Sprintf(`{"type":"evaluation","model":{"name":"credit","version":"%d"},"attrs":{"dataset":"applications@2026-q%d-holdout","metrics":{"auc":0.8%d,"error_rate":0.1%d},"thresholds":{"auc":0.75,"error_rate_max":0.15},"passed":true,
"group_metrics":{"sex=female":{"n":4100,"selection_rate":0.3%d,"tpr":0.7%d,"positives":900},"sex=male":{"n":4900,"selection_rate":0.34,"tpr":0.74,"positives":1100},"age=18-24":{"n":12,"selection_rate":0.1,"tpr":0.5,"positives":2},"age=25-64":{"n":7400,"selection_rate":0.33,"tpr":0.73,"positives":1700},"age=65+":{"n":1588,"selection_rate":0.2%d,"tpr":0.6%d,"positives":298}}}}`, v, v, v, v+1, v, v+1, v+3, v+5))
		approver := "bob"
		if v == 2 {
			approver = "alice" // the registrant approves her own version: four eyes broken, the approval does not count
		}
		w.Add(fmt.Sprintf("approval%d", v), approver, fmt.Sprintf(`{"type":"approval","model":{"name":"credit","version":"%d"},"refs":[%q],"attrs":{"decision":"approve"},"payload":{"justification":"meets the thresholds"}}`, v, w.ID(fmt.Sprintf("eval%d", v))))
		if v == 1 {
			w.At(day(base + 4))
			w.Generate(docgen.KindEvaluation, "credit@1", "carol")
			w.Generate(docgen.KindInstructions, "credit@1", "compliance")
			_, dg, r := w.Generate(docgen.KindDeclaration, "credit@1", "compliance")
			raw, _, err := docgen.SignatureEvent(docgen.Signed{Document: r.ID.String(), Kind: docgen.KindDeclaration, Digest: dg,
				Model: map[string]string{"name": "credit", "version": "1"}, Format: signature.FormatSSH,
				Signature: signature.SignSSH(SignatoryKey, dg), Key: signature.AuthorizedKey(SignatoryKey.Public().(ed25519.PublicKey))})
			if err != nil {
				t.Fatal(err)
			}
			w.Add("signature", "maria.keller", string(raw))
		}
		w.At(day(base + 5))
		w.Add(fmt.Sprintf("deploy%d", v), "ops", fmt.Sprintf(`{"type":"deployment","model":{"name":"credit","version":"%d"},"deployment":"prod","refs":[%q],"attrs":{"action":"deployed","config_digest":"sha256:%064x","ifu_version":"1"}}`, v, w.ID(fmt.Sprintf("approval%d", v)), 200+v))
		for b := 0; b < 4; b++ {
			w.At(day(base + 6 + 7*b))
			var raws []string
			for i := 0; i < 10; i++ {
				flags := ""
				if i == 9 {
					flags = `,"anomaly_flags":["low_confidence"]`
				}
				raws = append(raws, fmt.Sprintf(`{"type":"inference","model":{"name":"credit","version":"%d"},"deployment":"prod","attrs":{"confidence":0.%d,"latency_ms":%d%s},"payload":{"subject":"applicant-%d-%d-%d","input":{"name":"Jane Roe","income":52000},"output":{"score":%d}}}`, v, 60+3*i, 20+i, flags, v, b, i, 500+10*i))
			}
			r := w.Add(fmt.Sprintf("inference%d-%d", v, b), "svc-scoring", raws...)
			w.Add("", "reviewer-svc", fmt.Sprintf(`{"type":"oversight","refs":[%q],"attrs":{"action":"overridden","overseer_role":"credit officer"},"payload":{"overseer":"officer-7","reason":"income misread"}}`, r.ID))
		}
	}
	w.At(day(60))
	w.Add("anomaly", "monitor", `{"type":"anomaly","attrs":{"kind":"drift","severity":"warning","metric":"psi","value":0.23,"threshold":0.2}}`)
	w.Add("incident", "compliance", `{"type":"incident","attrs":{"incident_id":"INC-2026-007","detected_by":"deployer","harm_category":"fundamental_rights","status":"investigating"}}`)
	w.At(At)
	return w
}

func Doc(t testing.TB, w *World, kind, version string, from, to time.Time, ev string) *docgen.Document {
	t.Helper()
	d, err := docgen.Generate(context.Background(), w.Log, w.L.VerifierKey("credit"), docgen.Request{Kind: kind, ModelVersion: version, At: At, From: from, To: to, Event: ev})
	if err != nil {
		t.Fatalf("%s: %v", kind, err)
	}
	return d
}

// requests is one request per kind against the scenario.
func Requests(w *World) map[string]docgen.Request {
	return map[string]docgen.Request{
		docgen.KindModelCard:      {ModelVersion: "credit@1"},
		docgen.KindEvaluation:     {ModelVersion: "1"},
		docgen.KindDatasheet:      {ModelVersion: "credit@2"},
		docgen.KindAnnexIV:        {ModelVersion: "credit@1"},
		docgen.KindDeclaration:    {ModelVersion: "credit@1"},
		docgen.KindInstructions:   {ModelVersion: "credit@1"},
		docgen.KindMonitoring:     {From: Start, To: At},
		docgen.KindReconstruction: {Event: w.ID("inference1-2")},
	}
}

func All(t testing.TB, w *World) map[string]*docgen.Document {
	out := map[string]*docgen.Document{}
	for kind, r := range Requests(w) {
		out[kind] = Doc(t, w, kind, r.ModelVersion, r.From, r.To, r.Event)
	}
	return out
}
