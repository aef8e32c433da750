package system

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	d, c, err := Parse([]byte(`{"provider":"Acme","id":"credit-scoring","name":"Credit","intended_purpose":"scoring","retention":{"log_months":6}}`))
	if err != nil {
		t.Fatal(err)
	}
	if d.ID != "credit-scoring" || string(c) != `{"id":"credit-scoring","intended_purpose":"scoring","name":"Credit","provider":"Acme","retention":{"log_months":6}}` {
		t.Errorf("parsed %+v, canonical %s", d, c)
	}
	for _, tc := range []struct{ in, field string }{
		{`{"name":"n","intended_purpose":"p","provider":"q"}`, "/id"},
		{`{"id":"x","intended_purpose":"p","provider":"q"}`, "/name"},
		{`{"id":"x","name":"n","provider":"q"}`, "/intended_purpose"},
		{`{"id":"x","name":"n","intended_purpose":"p"}`, "/provider"},
		{`{"id":"Credit Scoring","name":"n","intended_purpose":"p","provider":"q"}`, "/id"},
		{`{"id":"_admin","name":"n","intended_purpose":"p","provider":"q"}`, "/id"},
		{`{"id":"x","name":"n","intended_purpose":"p","provider":"q","owner":"me"}`, "/owner"},
		{`{"id":"x","name":"n","intended_purpose":"p","provider":"q","retention":[1]}`, "/retention"},
		{`{"id":"x","id":"y","name":"n","intended_purpose":"p","provider":"q"}`, "/id"},
		{`{"id":"x","name":"n","Name":"m","intended_purpose":"p","provider":"q"}`, "/Name"},
	} {
		_, _, err := Parse([]byte(tc.in))
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("Parse(%s) = %v, want an error on %s", tc.in, err, tc.field)
		}
	}
}

func TestYAMLToJSON(t *testing.T) {
	got, err := YAMLToJSON([]byte("id: credit\nname: Credit\nversion: 3\nnested:\n  list: [1, 2.5, true, null, \"x\"]\n  when: 2026-11-29\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"id":"credit","name":"Credit","version":3,"nested":{"list":[1,2.5,true,null,"x"],"when":"2026-11-29"}}`; string(got) != want {
		t.Errorf("YAMLToJSON = %s\nwant %s", got, want)
	}
	for name, in := range map[string]string{
		"alias":          "a: &x 1\nb: *x\n",
		"non-string key": "1: a\n",
		"two documents":  "a: 1\n---\nb: 2\n",
		"bad yaml":       "a: [1\n",
	} {
		if _, err := YAMLToJSON([]byte(in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// A duplicate key survives conversion but the strict JSON parse refuses it.
	j, err := YAMLToJSON([]byte("id: a\nid: b\nname: n\nintended_purpose: p\nprovider: q\n"))
	if err == nil {
		if _, _, err := Parse(j); err == nil || !strings.Contains(err.Error(), "id") {
			t.Errorf("a YAML definition with a duplicate key was accepted: %v", err)
		}
	}
}
