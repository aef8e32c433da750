package docgen

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/fairness"
	"github.com/cairn-ai/cairn/internal/lifecycle"
	"github.com/cairn-ai/cairn/internal/system"
)

// builder fills one document from a snapshot.
type builder struct {
	s *snapshot
	d *Document
}

func fact(label, text string, cites ...Cite) Item {
	return Item{Label: label, Text: text, Cites: cites}
}

func gap(label, what, supplied string) Item {
	return Item{Label: label, Missing: &Missing{What: what, Supplied: supplied}}
}

// supplyInfo names the definition member that supplies a provider fact.
func supplyInfo(member string) string {
	return "provider_info." + member + " in the system definition (cairn system apply records it as a system.updated event)"
}

func num(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// num4 shows a computed figure to four decimals (recorded figures are shown as recorded).
func num4(f float64) string { return num(roundTo(f, 4)) }

func roundTo(f float64, places int) float64 {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(f, 'f', places, 64), 64)
	return v
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func (b *builder) def() *definition           { return b.s.def() }
func (b *builder) info() *system.ProviderInfo { return b.s.def().info }
func (b *builder) defCite() Cite              { return b.s.def().cite() }

// provided returns the provider's text for a point of one of the provider_info maps, or a gap.
func (b *builder) provided(label string, m map[string]string, member, key, what string) Item {
	if v := m[key]; v != "" {
		return fact(label, v, b.defCite())
	}
	return gap(label, what, supplyInfo(member+`["`+key+`"]`))
}

func (b *builder) section(number, heading string, items ...Item) Section {
	return Section{Number: number, Heading: heading, Items: items}
}

// versionItems describes the model version a document is about, or says none is registered.
func (b *builder) versionItems() []Item {
	v := b.d.model
	if v == (lifecycle.Version{}) {
		return []Item{gap("Model version", "no model version is registered", "a model.version event (cairn mlflow sync, or POST /v1/systems/{system}/events)")}
	}
	reg := b.s.registration(v)
	if reg == nil {
		return []Item{gap("Model version", "model version "+v.String()+" has no registration", "a model.version event for "+v.String())}
	}
	items := []Item{fact("Model version", v.String()+", registered "+stamp(reg.Time)+" by "+reg.Actor, reg.cite())}
	if reg.Model.Digest != "" {
		items = append(items, fact("Artefact digest", reg.Model.Digest, reg.cite()))
	} else {
		items = append(items, fact("Artefact digest", "unknown: "+reg.str("digest_unknown"), reg.cite()))
	}
	if f := reg.str("format"); f != "" {
		items = append(items, fact("Format", f, reg.cite()))
	}
	if from := reg.str("from_version"); from != "" {
		items = append(items, fact("Relation to previous versions", "derived from version "+from, reg.cite()))
	} else {
		var prev []string
		var cites []Cite
		for _, n := range b.s.of("model.version", func(n *node) bool {
			return n.str("alias") == "" && n.Model != nil && n.Model.Name == v.Name && n.Index < reg.Index
		}) {
			prev = append(prev, n.Model.Version)
			cites = append(cites, n.cite())
		}
		if len(prev) > 0 {
			items = append(items, fact("Relation to previous versions", "succeeds versions "+strings.Join(prev, ", ")+" of "+v.Name, cites...))
		} else {
			items = append(items, fact("Relation to previous versions", "the first registered version of "+v.Name, reg.cite()))
		}
	}
	if c := reg.str("change_classification"); c != "" {
		items = append(items, fact("Change classification", c, reg.cite()))
	}
	return items
}

// run returns the training run of a version (from the registry's lineage) as a snapshot node.
func (b *builder) run(v lifecycle.Version) *node {
	if l := b.s.lineage(v); l != nil && l.Run != nil {
		return b.s.byRef(l.Run.ID)
	}
	return nil
}

func (b *builder) datasets(v lifecycle.Version) []*node {
	var out []*node
	if l := b.s.lineage(v); l != nil {
		for _, d := range l.Datasets {
			if n := b.s.byRef(d.ID); n != nil {
				out = append(out, n)
			}
		}
	}
	return out
}

func runItems(r *node) []Item {
	items := []Item{fact("Training run", r.str("run_id")+" ("+orNone(r.str("status"))+") recorded by "+r.Actor, r.cite())}
	if e := r.str("experiment"); e != "" {
		items = append(items, fact("Experiment", e, r.cite()))
	}
	if p := r.Attrs; len(p) > 0 {
		if ps := sortedMap(strMap(r, "params")); ps != "" {
			items = append(items, fact("Parameters", ps, r.cite()))
		}
		if ms := sortedNums(r.nums("metrics")); ms != "" {
			items = append(items, fact("Training metrics", ms, r.cite()))
		}
	}
	if c := r.str("code_revision"); c != "" {
		items = append(items, fact("Code revision", c, r.cite()))
	}
	if e := r.str("environment_digest"); e != "" {
		items = append(items, fact("Environment", e, r.cite()))
	}
	if s, e := r.str("started"), r.str("ended"); s != "" || e != "" {
		items = append(items, fact("Run time", orNone(s)+" to "+orNone(e), r.cite()))
	}
	return items
}

func orNone(s string) string {
	if s == "" {
		return "not recorded"
	}
	return s
}

func strMap(n *node, name string) map[string]string {
	v := n.Attrs
	if len(v) == 0 {
		return nil
	}
	var all map[string]any
	if err := json.Unmarshal(v, &all); err != nil {
		return nil
	}
	m, _ := all[name].(map[string]any)
	out := map[string]string{}
	for k, x := range m {
		if s, ok := x.(string); ok {
			out[k] = s
		}
	}
	return out
}

func sortedMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, k+" = "+m[k])
	}
	return strings.Join(parts, "; ")
}

func sortedNums(m map[string]float64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, k+" = "+num(m[k]))
	}
	return strings.Join(parts, "; ")
}

func datasetIdentity(d *node) string {
	id := d.str("name") + "@" + d.str("version")
	for _, k := range []string{"digest", "dvc_md5", "mlflow_digest", "uri"} {
		if v := d.str(k); v != "" {
			return id + " (" + k + " " + v + ")"
		}
	}
	return id
}

// metricRows compares an evaluation's metrics with its thresholds: "m" is a minimum, "m_max" a maximum.
func metricRows(e *node) ([]Row, bool) {
	metrics, th := e.nums("metrics"), e.nums("thresholds")
	keys := make([]string, 0, len(metrics))
	for k := range metrics {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	ok := true
	var rows []Row
	for _, k := range keys {
		v := metrics[k]
		bound, result := "none", "no threshold"
		if t, has := th[k]; has {
			bound = "≥ " + num(t)
			result = passFail(v >= t)
			ok = ok && v >= t
		} else if t, has := th[k+"_max"]; has {
			bound = "≤ " + num(t)
			result = passFail(v <= t)
			ok = ok && v <= t
		}
		rows = append(rows, Row{Cells: []string{k, num(v), bound, result}, Cites: []Cite{e.cite()}})
	}
	return rows, ok
}

func passFail(b bool) string {
	if b {
		return "pass"
	}
	return "FAIL"
}

// fairnessTables renders the per-group figures and the fairness measures of an evaluation.
func fairnessTables(e *node, minGroup int) []Table {
	gm := e.groups()
	if len(gm) == 0 {
		return nil
	}
	attrs := fairness.Compute(gm, minGroup)
	groups := Table{Caption: "Groups (minimum compared size " + strconv.Itoa(minGroup) + ")",
		Columns: []string{"group", "n", "selection rate", "true positive rate", "impact ratio", "note"}}
	measures := Table{Caption: "Fairness measures per protected attribute",
		Columns: []string{"attribute", "demographic parity difference", "equal-opportunity difference", "lowest impact ratio (four-fifths rule)", "undefined because"}}
	opt := func(f *float64) string {
		if f == nil {
			return "undefined"
		}
		return num4(*f)
	}
	for _, a := range attrs {
		for _, g := range a.Groups {
			note := strings.Join(g.Notes, "; ")
			if g.Tiny {
				note = "TINY GROUP: " + note
			}
			n := "unknown"
			if g.N != nil {
				n = num(*g.N)
			}
			groups.Rows = append(groups.Rows, Row{Cells: []string{g.Name, n, opt(g.SelectionRate), opt(g.TPR), opt(g.ImpactRatio), note}, Cites: []Cite{e.cite()}})
		}
		ff := opt(a.MinImpactRatio)
		if a.MinImpactRatio != nil {
			ff += " (" + a.WorstGroup + "; " + passFail(*a.MinImpactRatio >= fairness.FourFifths) + " at 0.8)"
		}
		var why []string
		for _, k := range []string{"demographic_parity_difference", "equal_opportunity_difference", "four_fifths"} {
			if r := a.Undefined[k]; r != "" {
				why = append(why, k+": "+r)
			}
		}
		measures.Rows = append(measures.Rows, Row{Cells: []string{a.Name, opt(a.DemographicParity), opt(a.EqualOpportunity), ff, strings.Join(why, "; ")}, Cites: []Cite{e.cite()}})
	}
	return []Table{groups, measures}
}

func evaluationTable(evs []*node) Table {
	t := Table{Caption: "Evaluations", Columns: []string{"time", "by", "dataset", "metrics", "passed"}}
	for _, e := range evs {
		p, _ := e.bool("passed")
		t.Rows = append(t.Rows, Row{Cells: []string{stamp(e.Time), e.Actor, orNone(e.str("dataset")), sortedNums(e.nums("metrics")), yesNo(p)}, Cites: []Cite{e.cite()}})
	}
	return t
}

func approvalTable(aps []*node) Table {
	t := Table{Caption: "Approvals", Columns: []string{"time", "by", "decision", "counts under the lifecycle rules", "rules broken"}}
	for _, a := range aps {
		counts := a.str("decision") == "approve" && len(a.Violations) == 0
		t.Rows = append(t.Rows, Row{Cells: []string{stamp(a.Time), a.Actor, a.str("decision"), yesNo(counts), orDash(strings.Join(a.Violations, ", "))}, Cites: []Cite{a.cite()}})
	}
	return t
}

func deploymentTable(deps []*node) Table {
	t := Table{Caption: "Deployments", Columns: []string{"time", "environment", "action", "model version", "by", "rules broken"}}
	for _, d := range deps {
		t.Rows = append(t.Rows, Row{Cells: []string{stamp(d.Time), d.Deployment, d.str("action"), d.model().String(), d.Actor, orDash(strings.Join(d.Violations, ", "))}, Cites: []Cite{d.cite()}})
	}
	return t
}

func orDash(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func (n *node) bool(name string) (bool, bool) {
	v, ok := event.Member(n.Attrs, name)
	if !ok {
		return false, false
	}
	return string(v) == "true", true
}
