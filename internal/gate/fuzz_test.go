package gate

import "testing"

// FuzzParsePolicy: arbitrary policy files never panic the parser, and what it accepts names at least one rule.
func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte("documents: {required: [model-card]}\nfairness: {four_fifths: true}\n"))
	f.Add([]byte(`{"approval":{},"logging":{"max_event_age":"1h"}}`))
	f.Add([]byte("evaluation: {metrics: {auc: {min: 0.5}}}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, _, err := ParsePolicy(b)
		if err == nil && *p == (Policy{}) {
			t.Fatal("accepted a policy with no rule")
		}
	})
}
