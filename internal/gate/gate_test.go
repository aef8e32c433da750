package gate_test

import (
	"bytes"
	"context"
	"encoding/xml"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-ai/cairn/internal/docgen"
	"github.com/cairn-ai/cairn/internal/docgen/docgentest"
	"github.com/cairn-ai/cairn/internal/gate"
	"github.com/cairn-ai/cairn/internal/registry"
)

type env struct {
	w   *docgentest.World
	reg *registry.Registry
}

func newEnv(t *testing.T) *env {
	e := &env{w: docgentest.Scenario(t, nil), reg: registry.New(nil)}
	e.follow(t)
	return e
}

func (e *env) follow(t *testing.T) {
	t.Helper()
	if err := e.reg.CatchUp(context.Background(), "credit", e.w.Log.Store()); err != nil {
		t.Fatal(err)
	}
}

// check runs a policy for a version and returns the rules by name.
func (e *env) check(t *testing.T, version, policy string) (*gate.Result, map[string]gate.Rule) {
	t.Helper()
	p, digest, err := gate.ParsePolicy([]byte(policy))
	if err != nil {
		t.Fatal(err)
	}
	src := gate.Source{Log: e.w.Log, Registry: e.reg, VKey: e.w.L.VerifierKey("credit"), Actor: "ci"}
	r, err := gate.Check(context.Background(), src, version, p, digest, e.w.Now())
	if err != nil {
		t.Fatal(err)
	}
	rules := map[string]gate.Rule{}
	for _, rule := range r.Rules {
		rules[rule.Name] = rule
	}
	return r, rules
}

func want(t *testing.T, rules map[string]gate.Rule, name string, pass bool, detail string) {
	t.Helper()
	r, ok := rules[name]
	if !ok {
		t.Errorf("no rule %s among %v", name, rules)
		return
	}
	if r.Passed != pass || !strings.Contains(r.Detail, detail) {
		t.Errorf("%s: passed=%v %q, want passed=%v containing %q", name, r.Passed, r.Detail, pass, detail)
	}
}

func TestDocuments(t *testing.T) {
	e := newEnv(t)
	policy := `documents: {required: [evaluation-report, declaration-of-conformity, model-card], signed: [declaration-of-conformity, evaluation-report]}`
	r, rules := e.check(t, "credit@1", policy)
	want(t, rules, "documents/evaluation-report", true, "current")
	want(t, rules, "documents/declaration-of-conformity", true, "current")
	want(t, rules, "documents/declaration-of-conformity/signed", true, "signed with key SHA256:")
	want(t, rules, "documents/evaluation-report/signed", false, "no recorded signature")
	want(t, rules, "documents/model-card", false, "no model-card is recorded")
	if r.Passed || r.Failed != 2 {
		t.Errorf("passed=%v failed=%d", r.Passed, r.Failed)
	}
	// The documents of version 1 say nothing about version 2.
	_, rules = e.check(t, "credit@2", policy)
	want(t, rules, "documents/evaluation-report", false, "no evaluation-report")
	// A new evaluation of version 1 makes its documents stale until they are generated again.
	e.w.Add("", "carol", `{"type":"evaluation","model":{"name":"credit","version":"1"},"attrs":{"metrics":{"auc":0.8},"passed":true}}`)
	e.follow(t)
	_, rules = e.check(t, "credit@1", policy)
	want(t, rules, "documents/evaluation-report", false, "stale")
	e.w.Generate(docgen.KindEvaluation, "credit@1", "carol")
	e.w.Generate(docgen.KindModelCard, "credit@1", "carol")
	e.follow(t)
	_, rules = e.check(t, "credit@1", policy)
	want(t, rules, "documents/evaluation-report", true, "current")
	want(t, rules, "documents/model-card", true, "current")
	// max_age counts from the document's recorded time.
	e.w.At(e.w.Now().Add(48 * time.Hour))
	_, rules = e.check(t, "credit@1", `documents: {required: [model-card], max_age: 24h}`)
	want(t, rules, "documents/model-card", false, "older than 24h")
}

func TestEvaluation(t *testing.T) {
	e := newEnv(t)
	_, rules := e.check(t, "credit@1", `evaluation: {require_passed: true, metrics: {auc: {min: 0.75}, error_rate: {max: 0.15}, recall: {min: 0.5}}}`)
	want(t, rules, "evaluation/passed", true, "true")
	want(t, rules, "evaluation/auc", true, "auc = 0.81, required ≥ 0.75")
	want(t, rules, "evaluation/error_rate", true, "≤ 0.15")
	want(t, rules, "evaluation/recall", false, "no metric recall")
	_, rules = e.check(t, "credit@1", `evaluation: {metrics: {auc: {min: 0.9}}}`)
	want(t, rules, "evaluation/auc", false, "auc = 0.81, required ≥ 0.9")
	_, rules = e.check(t, "credit@9", `evaluation: {metrics: {auc: {min: 0.5}}}`)
	want(t, rules, "evaluation", false, "no evaluation")
}

func TestFairness(t *testing.T) {
	e := newEnv(t)
	_, rules := e.check(t, "credit@1", `fairness: {demographic_parity_difference: 0.1, equal_opportunity_difference: 0.1, four_fifths: true}`)
	want(t, rules, "fairness/sex/demographic_parity_difference", true, "sex=female n=4100, sex=male n=4900")
	want(t, rules, "fairness/sex/four_fifths", true, "0.9118")
	want(t, rules, "fairness/age/equal_opportunity_difference", true, "age=18-24 n=12 TINY (< 30, not compared)")
	want(t, rules, "fairness/age/four_fifths", false, "lowest impact ratio 0.7273 (age=65+)")
	// Only the attributes the policy names, and a stricter limit.
	r, rules := e.check(t, "credit@1", `fairness: {attributes: [sex], demographic_parity_difference: 0.01}`)
	want(t, rules, "fairness/sex/demographic_parity_difference", false, "allowed ≤ 0.01")
	if len(r.Rules) != 1 {
		t.Errorf("rules for other attributes: %+v", r.Rules)
	}
	// With a minimum group size above every group, nothing is compared: undefined fails unless allowed.
	_, rules = e.check(t, "credit@1", `fairness: {min_group_size: 100000, four_fifths: true}`)
	want(t, rules, "fairness/sex/four_fifths", false, "undefined")
	_, rules = e.check(t, "credit@1", `fairness: {min_group_size: 100000, four_fifths: true, allow_undefined: true}`)
	want(t, rules, "fairness/sex/four_fifths", true, "undefined")
	_, rules = e.check(t, "credit@1", `fairness: {attributes: [ethnicity], four_fifths: true}`)
	want(t, rules, "fairness/ethnicity", false, "no groups of attribute ethnicity")
}

func TestApproval(t *testing.T) {
	e := newEnv(t)
	_, rules := e.check(t, "credit@1", `approval: {environment: prod}`)
	want(t, rules, "approval", true, "approved by bob")
	// Version 2 was approved by its own registrant: the approval does not count.
	_, rules = e.check(t, "credit@2", `approval: {}`)
	want(t, rules, "approval", false, "deployment_unapproved")
	want(t, rules, "approval", false, "four_eyes")
	_, rules = e.check(t, "credit@7", `approval: {}`)
	want(t, rules, "approval", false, "deployment_unapproved")
}

func TestLogging(t *testing.T) {
	e := newEnv(t)
	// The scenario's last event is a month before its "now".
	_, rules := e.check(t, "credit@1", `logging: {}`)
	want(t, rules, "logging/recent-event", false, "latest incident event")
	want(t, rules, "logging/checkpoint", true, "covers all")
	_, rules = e.check(t, "credit@1", `logging: {max_event_age: 1000h}`)
	want(t, rules, "logging/recent-event", true, "allowed 1000h")
	// A gate result is not logging activity.
	r, _ := e.check(t, "credit@1", `logging: {}`)
	if _, err := e.w.L.AppendServer(context.Background(), "credit", gate.Event(r), "ci"); err != nil {
		t.Fatal(err)
	}
	_, rules = e.check(t, "credit@1", `logging: {}`)
	want(t, rules, "logging/recent-event", false, "latest incident event")
	e.w.Add("", "svc-scoring", `{"type":"inference","model":{"name":"credit","version":"2"},"deployment":"prod","payload":{"output":{"score":700}}}`)
	_, rules = e.check(t, "credit@1", `logging: {}`)
	want(t, rules, "logging/recent-event", true, "latest inference event")
}

func TestFieldPolicy(t *testing.T) {
	e := newEnv(t)
	_, rules := e.check(t, "credit@1", `field_policy: {}`)
	want(t, rules, "field-policy/input.name", true, "applies pseudonym")
	want(t, rules, "field-policy/input.iban", true, "applies drop")
	want(t, rules, "field-policy/subject", true, "pseudonym")
	_, rules = e.check(t, "credit@1", `field_policy: {personal: [input.income]}`)
	want(t, rules, "field-policy/input.income", false, "keeps it as sent")
	// A definition without an input schema cannot be checked.
	if _, _, err := e.w.L.Register(context.Background(), []byte(`{"id":"credit","name":"Credit scoring","provider":"Acme","intended_purpose":"scoring","field_policy":{"domain":"applicants","fields":{"subject":{"action":"pseudonym"}}}}`), "admin"); err != nil {
		t.Fatal(err)
	}
	_, rules = e.check(t, "credit@1", `field_policy: {}`)
	want(t, rules, "field-policy", false, "no input_schema")
	_, rules = e.check(t, "credit@1", `field_policy: {personal: [input.name]}`)
	want(t, rules, "field-policy/input.name", false, "no field policy rule covers it")
}

func TestReportAndEvent(t *testing.T) {
	e := newEnv(t)
	r, _ := e.check(t, "credit@1", `{"evaluation":{"metrics":{"auc":{"min":0.9}}},"approval":{}}`)
	rc, err := e.w.L.AppendServer(context.Background(), "credit", gate.Event(r), "ci")
	if err != nil {
		t.Fatalf("record the gate event: %v", err)
	}
	r.Event, r.Index = rc.ID.String(), rc.Index
	text := r.Text()
	if !strings.Contains(text, "FAIL (1 of 2 rules failed") || !strings.Contains(text, "FAIL  evaluation/auc") || !strings.Contains(text, "PASS  approval") {
		t.Errorf("text report:\n%s", text)
	}
	var suites struct {
		Tests    int `xml:"tests,attr"`
		Failures int `xml:"failures,attr"`
		Suite    struct {
			Cases []struct {
				Name    string `xml:"name,attr"`
				Failure *struct {
					Message string `xml:"message,attr"`
				} `xml:"failure"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(r.JUnit(), &suites); err != nil {
		t.Fatal(err)
	}
	if suites.Tests != 2 || suites.Failures != 1 || len(suites.Suite.Cases) != 2 || suites.Suite.Cases[0].Failure == nil || suites.Suite.Cases[1].Failure != nil {
		t.Errorf("junit: %+v\n%s", suites, r.JUnit())
	}
}

func TestParsePolicy(t *testing.T) {
	for _, bad := range []string{`{}`, `documents: {required: []}`, `documents: {required: [brochure]}`, `evaluation: {metric: {}}`,
		`logging: {max_event_age: soon}`, `[1]`, `fairness: {min_group_size: -1}`} {
		if _, _, err := gate.ParsePolicy([]byte(bad)); err == nil {
			t.Errorf("policy %s accepted", bad)
		}
	}
	_, d1, _ := gate.ParsePolicy([]byte(`approval: {}`))
	_, d2, _ := gate.ParsePolicy([]byte(`{"approval":{}}`))
	if d1 != d2 || !strings.HasPrefix(d1, "sha256:") {
		t.Errorf("the same policy in YAML and JSON has digests %s and %s", d1, d2)
	}
}

var update = flag.Bool("update", false, "rewrite docs/examples/gate-report.txt and gate-report.junit.xml")

// TestExampleReports: the committed example reports are what a gate run on the docgen scenario prints.
func TestExampleReports(t *testing.T) {
	e := newEnv(t)
	e.w.Generate(docgen.KindModelCard, "credit@1", "carol")
	e.follow(t)
	r, _ := e.check(t, "credit@1", `
documents: {required: [model-card, evaluation-report, declaration-of-conformity], signed: [declaration-of-conformity]}
evaluation: {require_passed: true, metrics: {auc: {min: 0.8}, error_rate: {max: 0.15}}}
fairness: {demographic_parity_difference: 0.1, equal_opportunity_difference: 0.1, four_fifths: true}
approval: {environment: prod}
logging: {max_event_age: 24h}
field_policy: {}
`)
	rc, err := e.w.L.AppendServer(context.Background(), "credit", gate.Event(r), "ci")
	if err != nil {
		t.Fatal(err)
	}
	r.Event, r.Index = rc.ID.String(), rc.Index
	for name, b := range map[string][]byte{"gate-report.txt": []byte(r.Text()), "gate-report.junit.xml": r.JUnit()} {
		p := filepath.Join("..", "..", "docs", "examples", name)
		if *update {
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(want, b) {
			t.Errorf("%s is not what the gate prints (go test ./internal/gate -run TestExampleReports -update): %v\n%s", p, err, b)
		}
	}
}
