package fairness

import "testing"

// The vectors of reference/inference-monitoring.md c.8 (Fairlearn semantics): A and B have ten cases, C five, and
// C has no actual positives.
var vectors = map[string]map[string]float64{
	"g=A": {"n": 10, "selection_rate": 0.5, "tpr": 0.8, "positives": 5},
	"g=B": {"n": 10, "selection_rate": 0.3, "tpr": 0.5, "positives": 4},
	"g=C": {"n": 5, "selection_rate": 0.2, "tpr": 0, "positives": 0},
}

func TestReferenceVectors(t *testing.T) {
	as := Compute(vectors, 1)
	if len(as) != 1 || as[0].Name != "g" {
		t.Fatalf("%+v", as)
	}
	a := as[0]
	if a.DemographicParity == nil || *a.DemographicParity != 0.3 {
		t.Errorf("demographic parity difference %v, want 0.3", a.DemographicParity)
	}
	// Fairlearn reports 0.8 because scikit-learn turns C's undefined TPR into 0; we leave C out and say why.
	hi, lo := 0.8, 0.5
	if a.EqualOpportunity == nil || *a.EqualOpportunity != hi-lo || len(a.Groups[2].Notes) == 0 {
		t.Errorf("equal opportunity %v, notes %v", a.EqualOpportunity, a.Groups[2].Notes)
	}
	want := map[string]float64{"g=A": 1, "g=B": 0.6, "g=C": 0.4}
	for _, g := range a.Groups {
		if g.ImpactRatio == nil || *g.ImpactRatio != want[g.Name] {
			t.Errorf("%s impact ratio %v, want %v", g.Name, g.ImpactRatio, want[g.Name])
		}
	}
	if *a.MinImpactRatio != 0.4 || a.WorstGroup != "g=C" {
		t.Errorf("worst %v %s", *a.MinImpactRatio, a.WorstGroup)
	}
}

func TestTinyGroupsAreFlaggedNotCompared(t *testing.T) {
	a := Compute(vectors, DefaultMinGroup)[0]
	for _, g := range a.Groups {
		if !g.Tiny || g.ImpactRatio != nil {
			t.Errorf("%s: tiny=%v ratio=%v", g.Name, g.Tiny, g.ImpactRatio)
		}
	}
	if a.DemographicParity != nil || a.EqualOpportunity != nil || a.MinImpactRatio != nil || len(a.Undefined) != 3 {
		t.Errorf("measures over tiny groups: %+v", a)
	}
	// Six large groups of two attributes are measured separately.
	b := Compute(map[string]map[string]float64{
		"sex=f": {"n": 400, "selection_rate": 0.30}, "sex=m": {"n": 500, "selection_rate": 0.40},
		"age=young": {"n": 3, "selection_rate": 0.0}, "age=old": {"n": 300, "selection_rate": 0.5}, "age=mid": {"n": 200, "selection_rate": 0.45},
	}, 30)
	if len(b) != 2 || b[0].Name != "age" || b[1].Name != "sex" {
		t.Fatalf("%+v", b)
	}
	if d := *b[1].DemographicParity; d < 0.0999 || d > 0.1001 {
		t.Errorf("sex dpd %v", d)
	}
	if b[0].WorstGroup != "age=mid" || !b[0].Groups[2].Tiny {
		t.Errorf("age: worst %s, groups %+v", b[0].WorstGroup, b[0].Groups)
	}
}
