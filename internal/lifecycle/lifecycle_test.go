package lifecycle_test

import (
	"strings"
	"testing"

	"github.com/cairn-ai/cairn/internal/lifecycle"
)

func TestMarkAttrs(t *testing.T) {
	for _, tc := range []struct{ attrs, want string }{
		{"", `{"rule_violations":["four_eyes"]}`},
		{`{}`, `{"rule_violations":["four_eyes"]}`},
		// The mark takes its place in RFC 8785 order among the attributes already there.
		{`{"decision":"approve","scope":"eu"}`, `{"decision":"approve","rule_violations":["four_eyes"],"scope":"eu"}`},
	} {
		got, err := lifecycle.MarkAttrs([]byte(tc.attrs), []string{lifecycle.RuleFourEyes})
		if err != nil || string(got) != tc.want {
			t.Errorf("MarkAttrs(%s) = %s, %v; want %s", tc.attrs, got, err, tc.want)
		}
	}
}

func TestParseRules(t *testing.T) {
	r, err := lifecycle.ParseRules([]byte(`{"four_eyes":false,"environments":["production"]}`))
	if err != nil || r.FourEyes == nil || *r.FourEyes || r.ApprovalRequired != nil || len(r.Environments) != 1 {
		t.Errorf("ParseRules: %+v %v", r, err)
	}
	for _, bad := range []string{`{"four_eye":true}`, `{"four_eyes":"yes"}`, `[]`} {
		if _, err := lifecycle.ParseRules([]byte(bad)); err == nil {
			t.Errorf("ParseRules(%s) accepted", bad)
		} else if strings.HasPrefix(bad, "{") && !strings.Contains(err.Error(), "/four_eye") {
			t.Errorf("ParseRules(%s): %v does not name the field", bad, err)
		}
	}
}
