package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/lifecycle"
)

// appendAs appends one raw event as actor and returns its receipt.
func (e *env) appendAs(lg *ledger.Log, actor, raw string) ledger.Receipt {
	e.t.Helper()
	ev, err := event.Parse(0, []byte(raw), e.now(), event.DefaultLimits, false)
	if err != nil {
		e.t.Fatalf("parse %s: %v", raw, err)
	}
	p, err := lg.Prepare(ev, actor)
	if err != nil {
		e.t.Fatal(err)
	}
	rs, err := lg.Append(context.Background(), []*ledger.Prepared{p})
	if err != nil {
		e.t.Fatal(err)
	}
	return rs[0]
}

// violations returns the rules the event at index is marked with, and checks that an alert referring to it
// follows it when there are any.
func violations(t *testing.T, lg *ledger.Log, index uint64) []string {
	t.Helper()
	ent, err := lg.Entry(context.Background(), index)
	if err != nil {
		t.Fatal(err)
	}
	s, err := event.ParseEnvelope(ent.Envelope)
	if err != nil {
		t.Fatal(err)
	}
	f, err := lifecycle.FactFromEnvelope(index, s)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Violations) > 0 {
		al, err := lg.Entry(context.Background(), index+1)
		if err != nil {
			t.Fatalf("no alert after the violating event %d: %v", index, err)
		}
		as, _ := event.ParseEnvelope(al.Envelope)
		if as.Type != "anomaly" || len(as.Refs) != 1 || as.Refs[0] != s.ID || as.Actor != ledger.ServerActor ||
			!strings.Contains(string(as.Attrs), `"kind":"lifecycle_rule"`) {
			t.Errorf("event %d after the violating event %d is not its alert: %s", index+1, index, al.Envelope)
		}
	}
	return f.Violations
}

func check(t *testing.T, lg *ledger.Log, actor, raw string) []string {
	t.Helper()
	ev, err := event.Parse(0, []byte(raw), time.Now(), event.DefaultLimits, false)
	if err != nil {
		t.Fatal(err)
	}
	return lg.CheckLifecycle(ev, actor)
}

func TestLifecycleRules(t *testing.T) {
	e := newEnv(t)
	lg := e.register("credit")
	const digest = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	mv := func(v string) string {
		return fmt.Sprintf(`{"type":"model.version","model":{"name":"credit","version":%q,"digest":%q},"attrs":{"format":"sklearn"}}`, v, digest)
	}
	eval := func(v string, passed bool) string {
		return fmt.Sprintf(`{"type":"evaluation","model":{"name":"credit","version":%q},"attrs":{"metrics":{"auc":0.8},"passed":%t}}`, v, passed)
	}
	approve := func(v string, refs ...event.UUID) string {
		var rs []string
		for _, r := range refs {
			rs = append(rs, `"`+r.String()+`"`)
		}
		return fmt.Sprintf(`{"type":"approval","model":{"name":"credit","version":%q},"refs":[%s],"attrs":{"decision":"approve"}}`, v, strings.Join(rs, ","))
	}
	deploy := func(v string, refs ...event.UUID) string {
		var rs []string
		for _, r := range refs {
			rs = append(rs, `"`+r.String()+`"`)
		}
		ref := ""
		if len(rs) > 0 {
			ref = `,"refs":[` + strings.Join(rs, ",") + `]`
		}
		return fmt.Sprintf(`{"type":"deployment","model":{"name":"credit","version":%q},"deployment":"prod","attrs":{"action":"deployed"}%s}`, v, ref)
	}
	want := func(name string, got []string, rules ...string) {
		t.Helper()
		if !slices.Equal(got, rules) {
			t.Errorf("%s: violations %v, want %v", name, got, rules)
		}
	}

	reg := e.appendAs(lg, "alice", mv("1"))
	want("registration", violations(t, lg, reg.Index))
	ev1 := e.appendAs(lg, "alice", eval("1", true))
	want("evaluation", violations(t, lg, ev1.Index))

	// Deploying before any approval: recorded, marked, alerted; the check said so beforehand.
	want("check before approval", check(t, lg, "ops", deploy("1")), lifecycle.RuleUnapproved)
	d0 := e.appendAs(lg, "ops", deploy("1"))
	want("unapproved deployment", violations(t, lg, d0.Index), lifecycle.RuleUnapproved)

	// Self-approval breaks four eyes and does not count.
	self := e.appendAs(lg, "alice", approve("1", ev1.ID))
	want("self-approval", violations(t, lg, self.Index), lifecycle.RuleFourEyes)
	want("check after a self-approval", check(t, lg, "ops", deploy("1", self.ID)), lifecycle.RuleUnapproved)
	want("check after a self-approval, no refs", check(t, lg, "ops", deploy("1")), lifecycle.RuleUnapproved)

	// A dangling reference; an approval without an evaluation of the same version.
	ghost := event.NewV7(time.Now())
	dang := e.appendAs(lg, "bob", approve("1", ghost))
	want("dangling approval", violations(t, lg, dang.Index), lifecycle.RuleNoEvaluation, lifecycle.RuleDanglingRef)
	reg2 := e.appendAs(lg, "alice", mv("2"))
	wrong := e.appendAs(lg, "bob", approve("2", ev1.ID))
	want("approval resting on another version's evaluation", violations(t, lg, wrong.Index), lifecycle.RuleNoEvaluation)
	failed := e.appendAs(lg, "carol", eval("2", false))
	want("approval resting on a failed evaluation", violations(t, lg, e.appendAs(lg, "bob", approve("2", failed.ID)).Index), lifecycle.RuleNoEvaluation)
	want("approval of an unregistered version", violations(t, lg, e.appendAs(lg, "bob", approve("9", ev1.ID)).Index), lifecycle.RuleNoEvaluation, lifecycle.RuleUnregistered)
	_ = reg2

	// A proper approval by another principal counts.
	good := e.appendAs(lg, "bob", approve("1", ev1.ID))
	want("four-eyes approval", violations(t, lg, good.Index))
	want("check after approval", check(t, lg, "ops", deploy("1", good.ID)))
	want("check naming the self-approval", check(t, lg, "ops", deploy("1", self.ID)), lifecycle.RuleUnapproved)
	d1 := e.appendAs(lg, "ops", deploy("1", good.ID))
	want("approved deployment", violations(t, lg, d1.Index))
	want("deploying version 2, approved by nobody", check(t, lg, "ops", deploy("2")), lifecycle.RuleUnapproved)

	// A client cannot mark an event itself.
	if _, err := event.Parse(0, []byte(`{"type":"evaluation","model":{"name":"credit","version":"1"},"attrs":{"metrics":{},"passed":true,"rule_violations":[]}}`), time.Now(), event.DefaultLimits, false); err == nil || !strings.Contains(err.Error(), "rule_violations") {
		t.Errorf("a client-set rule_violations was accepted: %v", err)
	}

	// After a restart the state is rebuilt from the log: the self-approval still does not count.
	e.reopen()
	lg, _ = e.l.Log("credit")
	want("after reopen, naming the self-approval", check(t, lg, "ops", deploy("1", self.ID)), lifecycle.RuleUnapproved)
	want("after reopen, naming the good approval", check(t, lg, "ops", deploy("1", good.ID)))
	d2 := e.appendAs(lg, "ops", deploy("1", self.ID))
	want("after reopen, deployment naming the self-approval", violations(t, lg, d2.Index), lifecycle.RuleUnapproved)
}

func TestLifecycleRulesConfigurable(t *testing.T) {
	e := newEnv(t)
	def := `{"id":"lax","name":"Lax","intended_purpose":"x","provider":"Acme","lifecycle":{"approval_required":false,"environments":["prod"]}}`
	if _, _, err := e.l.Register(context.Background(), []byte(def), "admin"); err != nil {
		t.Fatal(err)
	}
	lg, _ := e.l.Log("lax")
	r := e.appendAs(lg, "ops", `{"type":"deployment","model":{"name":"m","version":"1"},"deployment":"prod","attrs":{"action":"deployed"}}`)
	if v := violations(t, lg, r.Index); len(v) != 0 {
		t.Errorf("approval_required off: violations %v", v)
	}
	bad := `{"id":"bad","name":"Bad","intended_purpose":"x","provider":"Acme","lifecycle":{"four_eye":true}}`
	if _, _, err := e.l.Register(context.Background(), []byte(bad), "admin"); err == nil || !strings.Contains(err.Error(), "/lifecycle/four_eye") {
		t.Errorf("an unknown lifecycle rule was accepted: %v", err)
	}
}

// TestLifecycleRace races rejections against deployments of the same versions from many goroutines. Whatever the
// interleaving, each deployment must be judged on exactly the events recorded before it: unapproved if and only
// if the version's rejection precedes it in the log.
func TestLifecycleRace(t *testing.T) {
	e := newEnv(t)
	lg := e.register("credit")
	raceRejections(t, []*ledger.Log{lg})
}

// TestLifecycleRaceTwoNodes is the same race between two nodes over one PostgreSQL log: a node that decided on
// state another node has moved past loses the append and decides again.
func TestLifecycleRaceTwoNodes(t *testing.T) {
	nodes := pgNodes(t, 2, `{"id":"credit","name":"n","intended_purpose":"p","provider":"q"}`)
	var logs []*ledger.Log
	for _, l := range nodes {
		lg, err := l.Log("credit")
		if err != nil {
			t.Fatal(err)
		}
		logs = append(logs, lg)
	}
	raceRejections(t, logs)
}

// appendRetry appends one raw event (given a fresh client id, so a retry after a lost race is idempotent) as
// actor, retrying while the log is busy.
func appendRetry(lg *ledger.Log, actor, raw string) (ledger.Receipt, error) {
	raw = `{"id":"` + event.NewV7(time.Now()).String() + `",` + raw[1:]
	for attempt := 0; ; attempt++ {
		ev, err := event.Parse(0, []byte(raw), time.Now(), event.DefaultLimits, false)
		if err != nil {
			return ledger.Receipt{}, err
		}
		p, err := lg.Prepare(ev, actor)
		if err != nil {
			return ledger.Receipt{}, err
		}
		rs, err := lg.Append(context.Background(), []*ledger.Prepared{p})
		if errors.Is(err, ledger.ErrBusy) && attempt < 200 {
			time.Sleep(time.Millisecond)
			continue
		}
		if err != nil {
			return ledger.Receipt{}, err
		}
		return rs[0], nil
	}
}

func raceRejections(t *testing.T, logs []*ledger.Log) {
	const versions, deploys = 8, 16
	must := func(r ledger.Receipt, err error) ledger.Receipt {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	evals := map[string]event.UUID{}
	for v := range versions {
		ver := fmt.Sprint(v)
		lg := logs[v%len(logs)]
		must(appendRetry(lg, "alice", fmt.Sprintf(`{"type":"model.version","model":{"name":"credit","version":%q},"attrs":{"digest_unknown":"test"}}`, ver)))
		ev := must(appendRetry(lg, "carol", fmt.Sprintf(`{"type":"evaluation","model":{"name":"credit","version":%q},"attrs":{"metrics":{},"passed":true}}`, ver)))
		must(appendRetry(lg, "bob", fmt.Sprintf(`{"type":"approval","model":{"name":"credit","version":%q},"refs":[%q],"attrs":{"decision":"approve"}}`, ver, ev.ID)))
		evals[ver] = ev.ID
	}
	type dep struct {
		ver   string
		index uint64
	}
	var mu sync.Mutex
	var deps []dep
	rejectAt := map[string]uint64{}
	var wg sync.WaitGroup
	for v := range versions {
		ver := fmt.Sprint(v)
		wg.Go(func() {
			r, err := appendRetry(logs[(v+1)%len(logs)], "bob", fmt.Sprintf(`{"type":"approval","model":{"name":"credit","version":%q},"refs":[%q],"attrs":{"decision":"reject"}}`, ver, evals[ver]))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			rejectAt[ver] = r.Index
			mu.Unlock()
		})
		for i := range deploys {
			wg.Go(func() {
				r, err := appendRetry(logs[i%len(logs)], "ops", fmt.Sprintf(`{"type":"deployment","model":{"name":"credit","version":%q},"deployment":"prod","attrs":{"action":"deployed"}}`, ver))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				deps = append(deps, dep{ver, r.Index})
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	before, after := 0, 0
	for _, d := range deps {
		got := violations(t, logs[0], d.index)
		late := d.index > rejectAt[d.ver]
		if late != slices.Contains(got, lifecycle.RuleUnapproved) {
			t.Errorf("deployment of %s at %d (rejection at %d): violations %v", d.ver, d.index, rejectAt[d.ver], got)
		}
		if late {
			after++
		} else {
			before++
		}
	}
	t.Logf("%d deployments before their version's rejection, %d after", before, after)
}
