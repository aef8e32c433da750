// Package fairness computes group-fairness measures from the per-group figures an evaluation records: the
// demographic parity difference (spread of selection rates), the equal-opportunity difference (spread of true
// positive rates) and the four-fifths rule (each group's selection rate against the highest).
//
// It never compares what cannot fairly be compared: a group smaller than the minimum size, or without the
// figure a measure needs, is shown with its size and the reason, and left out of that measure; a measure that
// has fewer than two groups left is undefined, with the reason, rather than zero.
package fairness

import (
	"cmp"
	"slices"
	"strings"
)

// Figures a group may carry in an evaluation's group_metrics.
const (
	Count         = "n"              // number of cases in the group
	SelectionRate = "selection_rate" // share of cases with the favourable prediction
	TPR           = "tpr"            // true positive rate: favourable predictions among actual positives
	Positives     = "positives"      // number of actual positives (TPR is undefined without any)
)

// DefaultMinGroup is the smallest group compared when a policy names no other size.
const DefaultMinGroup = 30

// FourFifths is the impact-ratio floor of the four-fifths rule (29 CFR 1607.4(D)).
const FourFifths = 0.8

// Group is one group's figures and how the measures treated it.
type Group struct {
	Name          string   `json:"name"`
	N             *float64 `json:"n"`
	SelectionRate *float64 `json:"selection_rate,omitempty"`
	TPR           *float64 `json:"tpr,omitempty"`
	// ImpactRatio is the group's selection rate over the highest selection rate among compared groups.
	ImpactRatio *float64 `json:"impact_ratio,omitempty"`
	// Tiny: the group is smaller than the minimum size (or its size is unknown) and is compared with nothing.
	Tiny bool `json:"tiny,omitempty"`
	// Notes say why the group is left out of a measure.
	Notes []string `json:"notes,omitempty"`
}

// Attribute holds the measures over the groups of one protected attribute ("sex=female" and "sex=male" are
// groups of "sex"; a group name without '=' belongs to the attribute "group").
type Attribute struct {
	Name   string  `json:"attribute"`
	Groups []Group `json:"groups"`
	// DemographicParity is max − min selection rate over compared groups; nil when undefined.
	DemographicParity *float64 `json:"demographic_parity_difference"`
	// EqualOpportunity is max − min true positive rate over compared groups; nil when undefined.
	EqualOpportunity *float64 `json:"equal_opportunity_difference"`
	// MinImpactRatio is the lowest impact ratio and WorstGroup the group that has it; nil when undefined.
	MinImpactRatio *float64 `json:"min_impact_ratio"`
	WorstGroup     string   `json:"worst_group,omitempty"`
	// Undefined says why a measure is nil.
	Undefined map[string]string `json:"undefined,omitempty"`
}

// Compute groups the figures by attribute and computes the measures, comparing only groups of at least minGroup
// cases. Attributes and groups come out sorted by name.
func Compute(groups map[string]map[string]float64, minGroup int) []Attribute {
	byAttr := map[string][]Group{}
	for name, m := range groups {
		attr := "group"
		if a, _, ok := strings.Cut(name, "="); ok {
			attr = a
		}
		g := Group{Name: name, N: get(m, Count), SelectionRate: get(m, SelectionRate), TPR: get(m, TPR)}
		if p := get(m, Positives); p != nil && *p == 0 && g.TPR != nil {
			g.TPR = nil
			g.Notes = append(g.Notes, "no actual positives: true positive rate undefined")
		}
		byAttr[attr] = append(byAttr[attr], g)
	}
	var out []Attribute
	for name, gs := range byAttr {
		slices.SortFunc(gs, func(a, b Group) int { return cmp.Compare(a.Name, b.Name) })
		out = append(out, measure(name, gs, minGroup))
	}
	slices.SortFunc(out, func(a, b Attribute) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

func get(m map[string]float64, k string) *float64 {
	if v, ok := m[k]; ok {
		return &v
	}
	return nil
}

func measure(name string, gs []Group, minGroup int) Attribute {
	a := Attribute{Name: name, Groups: gs, Undefined: map[string]string{}}
	var sr, tpr []int // indices of compared groups
	for i := range gs {
		g := &gs[i]
		switch {
		case g.N == nil:
			g.Tiny = true
			g.Notes = append(g.Notes, "group size not recorded: not compared")
			continue
		case *g.N < float64(minGroup):
			g.Tiny = true
			g.Notes = append(g.Notes, "fewer cases than the minimum group size: not compared")
			continue
		}
		if g.SelectionRate != nil {
			sr = append(sr, i)
		} else {
			g.Notes = append(g.Notes, "no selection rate recorded")
		}
		if g.TPR != nil {
			tpr = append(tpr, i)
		} else if !slices.ContainsFunc(g.Notes, func(s string) bool { return strings.Contains(s, "positive") }) {
			g.Notes = append(g.Notes, "no true positive rate recorded")
		}
	}
	spread := func(idx []int, v func(*Group) float64) *float64 {
		if len(idx) < 2 {
			return nil
		}
		lo, hi := v(&gs[idx[0]]), v(&gs[idx[0]])
		for _, i := range idx[1:] {
			lo, hi = min(lo, v(&gs[i])), max(hi, v(&gs[i]))
		}
		d := hi - lo
		return &d
	}
	srOf := func(g *Group) float64 { return *g.SelectionRate }
	if a.DemographicParity = spread(sr, srOf); a.DemographicParity == nil {
		a.Undefined["demographic_parity_difference"] = "fewer than two groups of the minimum size with a selection rate"
	}
	if a.EqualOpportunity = spread(tpr, func(g *Group) float64 { return *g.TPR }); a.EqualOpportunity == nil {
		a.Undefined["equal_opportunity_difference"] = "fewer than two groups of the minimum size with a true positive rate"
	}
	if len(sr) >= 2 {
		top := 0.0
		for _, i := range sr {
			top = max(top, srOf(&gs[i]))
		}
		if top == 0 {
			a.Undefined["four_fifths"] = "no compared group has any favourable outcome"
		} else {
			for _, i := range sr {
				r := srOf(&gs[i]) / top
				gs[i].ImpactRatio = &r
				if a.MinImpactRatio == nil || r < *a.MinImpactRatio {
					a.MinImpactRatio, a.WorstGroup = &r, gs[i].Name
				}
			}
		}
	} else {
		a.Undefined["four_fifths"] = "fewer than two groups of the minimum size with a selection rate"
	}
	if len(a.Undefined) == 0 {
		a.Undefined = nil
	}
	return a
}
