// Package gate decides whether a model version may go on: the compliance gate a CI/CD pipeline asks before it
// deploys. It checks a policy's rules against what the log holds now — required documents present and current
// for the version, evaluation and fairness metrics within thresholds, an approval that counts under the
// lifecycle rules, logging active, the field policy covering every personal input field — and reports each rule
// with the events it rests on, as text or JUnit XML.
//
// A gate never changes what it checks: it reads the log, the lineage registry and the definition in force, and
// its caller records the result as a gate event. A rule that cannot be decided fails, with the reason.
package gate

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cairn-ai/cairn/internal/docgen"
	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/fairness"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/registry"
	"github.com/cairn-ai/cairn/internal/system"
)

// Result is a gate's answer.
type Result struct {
	System       string `json:"system"`
	ModelVersion string `json:"model_version"`
	PolicyDigest string `json:"policy_digest"`
	Passed       bool   `json:"passed"`
	Failed       int    `json:"failed"`
	Rules        []Rule `json:"rules"`
	// Checked is when the gate ran; TreeSize how many events of the log it saw.
	Checked  string `json:"checked"`
	TreeSize uint64 `json:"tree_size"`
	// Event and Index name the gate event that recorded this result, once recorded.
	Event string `json:"event,omitempty"`
	Index uint64 `json:"index,omitempty"`
}

// Rule is one rule's outcome.
type Rule struct {
	// Name is the rule family and what it checked: "documents/model-card", "fairness/sex/four_fifths".
	Name   string        `json:"name"`
	Passed bool          `json:"passed"`
	Detail string        `json:"detail"`
	Cites  []docgen.Cite `json:"cites,omitempty"`
}

// Source is what a gate reads: the system's log, the lineage registry following it, and the log's verifier key.
type Source struct {
	Log      *ledger.Log
	Registry *registry.Registry
	VKey     string
	// Actor is who asks (a deployment it would make is checked as theirs).
	Actor string
}

// Check runs the policy's rules for a model version ("name@version").
func Check(ctx context.Context, src Source, modelVersion string, p *Policy, policyDigest string, now time.Time) (*Result, error) {
	sys := src.Log.Name()
	name, ver, ok := strings.Cut(modelVersion, "@")
	if !ok {
		// A bare version names the version of the one model that has it.
		vs, _ := src.Registry.Versions(sys)
		for _, v := range vs {
			if v.Version == modelVersion {
				if name != "" {
					return nil, fmt.Errorf("several models have version %q: name it as NAME@VERSION", modelVersion)
				}
				name, ver = v.Name, v.Version
			}
		}
		if name == "" {
			return nil, fmt.Errorf("no model has version %q (name it as NAME@VERSION)", modelVersion)
		}
		modelVersion = name + "@" + ver
	} else if name == "" || ver == "" {
		return nil, fmt.Errorf("model version %q: want NAME@VERSION", modelVersion)
	}
	cur := src.Log.Definition()
	if cur == nil {
		return nil, fmt.Errorf("system %s has no definition", sys)
	}
	size, _ := src.Log.Tree()
	r := &Result{System: sys, ModelVersion: modelVersion, PolicyDigest: policyDigest, Checked: now.UTC().Format(time.RFC3339Nano), TreeSize: size}
	c := &checker{src: src, sys: sys, name: name, ver: ver, def: cur, now: now, res: r}
	c.lin, _ = src.Registry.Lineage(sys, name, ver)
	if p.Documents != nil {
		c.documents(p.Documents)
	}
	if p.Evaluation != nil {
		c.evaluation(p.Evaluation)
	}
	if p.Fairness != nil {
		c.fairness(p.Fairness)
	}
	if p.Approval != nil {
		c.approval(p.Approval)
	}
	if p.Logging != nil {
		if err := c.logging(ctx, p.Logging); err != nil {
			return nil, err
		}
	}
	if p.FieldPolicy != nil {
		c.fieldPolicy(p.FieldPolicy)
	}
	for _, rule := range r.Rules {
		if !rule.Passed {
			r.Failed++
		}
	}
	r.Passed = r.Failed == 0
	return r, nil
}

type checker struct {
	src       Source
	sys       string
	name, ver string
	def       *ledger.CurrentDefinition
	lin       *registry.Lineage
	now       time.Time
	res       *Result
}

func (c *checker) add(name string, ok bool, detail string, cites ...docgen.Cite) {
	c.res.Rules = append(c.res.Rules, Rule{Name: name, Passed: ok, Detail: detail, Cites: cites})
}

func cite(n *registry.Node) docgen.Cite { return docgen.Cite{Event: n.ID, Leaf: n.Index} }

func (c *checker) isVersion(m *event.Model) bool {
	return m != nil && m.Name == c.name && m.Version == c.ver
}

// dependsOn is the latest event a document of the version must have been generated after: the definition in force
// and the version's registration, evaluations and approvals.
func (c *checker) dependsOn() (uint64, string) {
	idx, what := c.def.Index, "the system definition"
	if c.lin == nil {
		return idx, what
	}
	for _, group := range [][]*registry.Node{c.lin.Registrations, c.lin.Evaluations, c.lin.Approvals} {
		for _, n := range group {
			if n.Index > idx {
				idx, what = n.Index, "the "+n.Type+" event"
			}
		}
	}
	return idx, what
}

func (c *checker) documents(d *Documents) {
	var maxAge time.Duration
	if d.MaxAge != "" {
		maxAge, _ = time.ParseDuration(d.MaxAge)
	}
	dep, depWhat := c.dependsOn()
	for _, kind := range d.Required {
		rule := "documents/" + kind
		docs := c.src.Registry.Documents(c.sys, kind)
		var doc *registry.Node
		var sigs []*registry.Node
		versioned := kind != docgen.KindMonitoring
		for _, n := range docs {
			if n.Attr("signature") != "" {
				continue
			}
			if versioned && !c.isVersion(n.Model) {
				continue
			}
			doc = n
		}
		if doc == nil {
			c.add(rule, false, "no "+kind+" is recorded for "+c.name+"@"+c.ver+" (cairn docs generate "+kind+")")
			continue
		}
		for _, n := range docs {
			if n.Attr("signature") != "" && slices.Contains(n.Refs, doc.ID) {
				sigs = append(sigs, n)
			}
		}
		var size uint64
		if v, ok := event.Member(doc.Attrs, "checkpoint_size"); ok {
			size, _ = strconv.ParseUint(string(v), 10, 64)
		}
		switch {
		case size <= dep:
			c.add(rule, false, fmt.Sprintf("stale: generated against the first %d events, before %s at leaf %d; generate it again", size, depWhat, dep), cite(doc))
		case maxAge > 0 && c.now.Sub(doc.Recorded) > maxAge:
			c.add(rule, false, fmt.Sprintf("older than %s: recorded %s", d.MaxAge, doc.Recorded.Format(time.RFC3339)), cite(doc))
		default:
			c.add(rule, true, fmt.Sprintf("current: %s, generated against the first %d events (after %s at leaf %d)", doc.Attr("digest"), size, depWhat, dep), cite(doc))
		}
		if slices.Contains(d.Signed, kind) {
			if len(sigs) == 0 {
				c.add(rule+"/signed", false, "the "+kind+" carries no recorded signature (cairn docs sign)", cite(doc))
			} else {
				s := sigs[len(sigs)-1]
				c.add(rule+"/signed", true, "signed with key "+s.Attr("signer_fingerprint"), cite(s))
			}
		}
	}
}

// latestEvaluation returns the latest evaluation of the version that keep accepts.
func (c *checker) latestEvaluation(keep func(*registry.Node) bool) *registry.Node {
	if c.lin == nil {
		return nil
	}
	for i := len(c.lin.Evaluations) - 1; i >= 0; i-- {
		if keep(c.lin.Evaluations[i]) {
			return c.lin.Evaluations[i]
		}
	}
	return nil
}

func nums(n *registry.Node, name string) map[string]float64 {
	v, ok := event.Member(n.Attrs, name)
	if !ok {
		return nil
	}
	var m map[string]float64
	json.Unmarshal(v, &m)
	return m
}

func fnum(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

func (c *checker) evaluation(e *Evaluation) {
	ev := c.latestEvaluation(func(*registry.Node) bool { return true })
	if ev == nil {
		c.add("evaluation", false, "no evaluation of "+c.name+"@"+c.ver+" is recorded")
		return
	}
	if e.RequirePassed {
		v, _ := event.Member(ev.Attrs, "passed")
		c.add("evaluation/passed", string(v) == "true", "the evaluation's verdict: passed = "+string(v), cite(ev))
	}
	metrics := nums(ev, "metrics")
	names := make([]string, 0, len(e.Metrics))
	for k := range e.Metrics {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		b := e.Metrics[k]
		v, ok := metrics[k]
		if !ok {
			c.add("evaluation/"+k, false, "the latest evaluation records no metric "+k, cite(ev))
			continue
		}
		pass, bounds := true, []string{}
		if b.Min != nil {
			pass = pass && v >= *b.Min
			bounds = append(bounds, "≥ "+fnum(*b.Min))
		}
		if b.Max != nil {
			pass = pass && v <= *b.Max
			bounds = append(bounds, "≤ "+fnum(*b.Max))
		}
		c.add("evaluation/"+k, pass, k+" = "+fnum(v)+", required "+strings.Join(bounds, " and "), cite(ev))
	}
}

func (c *checker) fairness(f *Fairness) {
	ev := c.latestEvaluation(func(n *registry.Node) bool { _, ok := event.Member(n.Attrs, "group_metrics"); return ok })
	if ev == nil {
		c.add("fairness", false, "no evaluation of "+c.name+"@"+c.ver+" records group_metrics")
		return
	}
	v, _ := event.Member(ev.Attrs, "group_metrics")
	var gm map[string]map[string]float64
	if err := json.Unmarshal(v, &gm); err != nil {
		c.add("fairness", false, "group_metrics unreadable: "+err.Error(), cite(ev))
		return
	}
	minGroup := f.MinGroupSize
	if minGroup == 0 {
		minGroup = fairness.DefaultMinGroup
	}
	attrs := fairness.Compute(gm, minGroup)
	for _, want := range f.Attributes {
		if !slices.ContainsFunc(attrs, func(a fairness.Attribute) bool { return a.Name == want }) {
			c.add("fairness/"+want, false, "the evaluation records no groups of attribute "+want, cite(ev))
		}
	}
	for _, a := range attrs {
		if len(f.Attributes) > 0 && !slices.Contains(f.Attributes, a.Name) {
			continue
		}
		groups := groupSizes(a, minGroup)
		measure := func(key string, val *float64, limit float64, cmp string, ok func(float64) bool) {
			name := "fairness/" + a.Name + "/" + key
			if val == nil {
				c.add(name, f.AllowUndefined, "undefined: "+a.Undefined[key]+"; groups: "+groups, cite(ev))
				return
			}
			c.add(name, ok(*val), fmt.Sprintf("%s %s %s %s; groups: %s", key, fnum(round(*val)), cmp, fnum(limit), groups), cite(ev))
		}
		if f.DemographicParity != nil {
			lim := *f.DemographicParity
			measure("demographic_parity_difference", a.DemographicParity, lim, "allowed ≤", func(v float64) bool { return v <= lim })
		}
		if f.EqualOpportunity != nil {
			lim := *f.EqualOpportunity
			measure("equal_opportunity_difference", a.EqualOpportunity, lim, "allowed ≤", func(v float64) bool { return v <= lim })
		}
		if f.FourFifths {
			key := "four_fifths"
			name := "fairness/" + a.Name + "/" + key
			if a.MinImpactRatio == nil {
				c.add(name, f.AllowUndefined, "undefined: "+a.Undefined[key]+"; groups: "+groups, cite(ev))
			} else {
				c.add(name, *a.MinImpactRatio >= fairness.FourFifths, fmt.Sprintf("lowest impact ratio %s (%s), required ≥ 0.8; groups: %s", fnum(round(*a.MinImpactRatio)), a.WorstGroup, groups), cite(ev))
			}
		}
	}
}

func round(f float64) float64 {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(f, 'f', 4, 64), 64)
	return v
}

// groupSizes shows every group's size, flagging the tiny ones that were not compared.
func groupSizes(a fairness.Attribute, minGroup int) string {
	var parts []string
	for _, g := range a.Groups {
		n := "n unknown"
		if g.N != nil {
			n = "n=" + fnum(*g.N)
		}
		if g.Tiny {
			n += " TINY (< " + strconv.Itoa(minGroup) + ", not compared)"
		}
		parts = append(parts, g.Name+" "+n)
	}
	return strings.Join(parts, ", ")
}

func (c *checker) approval(a *Approval) {
	env := a.Environment
	if env == "" {
		env = "prod"
	}
	raw := fmt.Sprintf(`{"type":"deployment","model":{"name":%q,"version":%q},"deployment":%q,"attrs":{"action":"deployed"}}`, c.name, c.ver, env)
	ev, err := event.Parse(0, []byte(raw), c.now, event.DefaultLimits, false)
	if err != nil {
		c.add("approval", false, "cannot form the deployment to check: "+err.Error())
		return
	}
	broken := c.src.Log.CheckLifecycle(ev, c.src.Actor)
	var counting *registry.Node
	if c.lin != nil {
		for _, n := range c.lin.Approvals {
			if n.Counts != nil && *n.Counts {
				counting = n
			}
		}
	}
	switch {
	case len(broken) > 0:
		detail := "a deployment to " + env + " now would break: " + strings.Join(broken, ", ")
		var cites []docgen.Cite
		if c.lin != nil {
			for _, n := range c.lin.Approvals {
				detail += fmt.Sprintf("; approval by %s at leaf %d counts: %v (rules broken: %s)", n.Actor, n.Index, n.Counts != nil && *n.Counts, strings.Join(n.Violations, ", "))
				cites = append(cites, cite(n))
			}
		}
		c.add("approval", false, detail, cites...)
	case counting != nil:
		c.add("approval", true, "approved by "+counting.Actor+" at "+counting.Time.Format(time.RFC3339)+"; a deployment to "+env+" complies with the lifecycle rules", cite(counting))
	default:
		c.add("approval", true, "a deployment to "+env+" complies with the lifecycle rules (the definition requires no approval there)")
	}
}

// logging checks that something other than gate results, reads and generated documents was recorded recently, and that a published
// checkpoint covers the whole log and verifies.
func (c *checker) logging(ctx context.Context, l *Logging) error {
	maxAge := 24 * time.Hour
	if l.MaxEventAge != "" {
		maxAge, _ = time.ParseDuration(l.MaxEventAge)
	}
	size := c.res.TreeSize
	found := false
	for i := size; i > 0; i-- {
		e, err := c.src.Log.Entry(ctx, i-1)
		if err != nil {
			return fmt.Errorf("read entry %d: %w", i-1, err)
		}
		if e.Type == "gate" || e.Type == "access" || e.Type == "document" {
			continue // compliance tooling at work, not the system
		}
		found = true
		rec := time.Unix(0, e.Recorded).UTC()
		age := c.now.Sub(rec)
		ct := docgen.Cite{Event: e.ID.String(), Leaf: e.Index}
		c.add("logging/recent-event", age <= maxAge, fmt.Sprintf("latest %s event recorded %s (%s ago), allowed %s", e.Type, rec.Format(time.RFC3339), age.Round(time.Second), maxAge), ct)
		break
	}
	if !found {
		c.add("logging/recent-event", false, "no event other than gate results, reads and documents is recorded")
	}
	// The checkpointer publishes within its interval; give it a moment to cover what was appended.
	var note []byte
	var n uint64
	for deadline := time.Now().Add(2 * time.Second); ; {
		note, n = c.src.Log.Checkpoint()
		if n >= size || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	switch {
	case note == nil:
		c.add("logging/checkpoint", false, "no checkpoint has been published")
	case n < size:
		c.add("logging/checkpoint", false, fmt.Sprintf("the published checkpoint covers %d of %d events", n, size))
	default:
		if _, err := ledger.OpenCheckpoint(note, c.src.VKey); err != nil {
			c.add("logging/checkpoint", false, "the published checkpoint does not verify: "+err.Error())
		} else {
			c.add("logging/checkpoint", true, fmt.Sprintf("a signed checkpoint covers all %d events", n))
		}
	}
	return nil
}

func (c *checker) fieldPolicy(f *FieldPolicy) {
	d := c.def.Definition
	defCite := docgen.Cite{Leaf: c.def.Index}
	if e, err := c.src.Log.Entry(context.Background(), c.def.Index); err == nil {
		defCite.Event = e.ID.String()
	}
	personal, err := system.PersonalFields(d.InputSchema)
	if err != nil {
		c.add("field-policy", false, err.Error(), defCite)
		return
	}
	personal = append(personal, f.Personal...)
	if len(d.InputSchema) == 0 && len(f.Personal) == 0 {
		c.add("field-policy", false, "the system definition has no input_schema marking personal fields (\"x-personal\": true), so coverage cannot be checked", defCite)
		return
	}
	if len(personal) == 0 {
		c.add("field-policy", true, "the input schema marks no field personal", defCite)
		return
	}
	var pol struct {
		Default string `json:"default"`
		Fields  map[string]struct {
			Action string `json:"action"`
		} `json:"fields"`
	}
	if len(d.FieldPolicy) > 0 {
		json.Unmarshal(d.FieldPolicy, &pol)
	}
	for _, p := range personal {
		action, by := "", ""
		for q, r := range pol.Fields {
			if q == p || strings.HasPrefix(p, q+".") || strings.HasPrefix(p, q+"[]") {
				if by == "" || len(q) < len(by) { // the outermost rule decides
					action, by = r.Action, q
				}
			}
		}
		if by == "" && pol.Default != "" {
			action, by = pol.Default, "the default"
		}
		switch {
		case by == "":
			c.add("field-policy/"+p, false, "marked personal, but no field policy rule covers it (kept as sent)", defCite)
		case action == "keep":
			c.add("field-policy/"+p, false, "marked personal, but "+by+" keeps it as sent", defCite)
		default:
			c.add("field-policy/"+p, true, "marked personal; "+by+" applies "+action, defCite)
		}
	}
}

// Event returns the gate event that records a result.
func Event(r *Result) []byte {
	var failed []string
	for _, rule := range r.Rules {
		if !rule.Passed {
			failed = append(failed, rule.Name)
		}
	}
	result := "fail"
	if r.Passed {
		result = "pass"
	}
	name, ver, _ := strings.Cut(r.ModelVersion, "@")
	attrs := map[string]any{"result": result, "policy_digest": r.PolicyDigest, "rules": len(r.Rules), "failed": r.Failed, "checkpoint_size": r.TreeSize}
	if len(failed) > 0 {
		attrs["failed_rules"] = failed
	}
	b, _ := json.Marshal(map[string]any{"type": "gate", "model": map[string]string{"name": name, "version": ver}, "attrs": attrs})
	return b
}
