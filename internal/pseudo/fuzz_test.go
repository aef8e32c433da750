package pseudo

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/cairn-ai/cairn/internal/canon"
	"github.com/go-json-experiment/json"
)

// fuzzPolicy pseudonymises every leaf it does not otherwise treat, so no string of the payload may survive raw.
const fuzzPolicy = `{"default":"pseudonym","domain":"customers","fields":{
 "input.name":{"action":"drop"},
 "input.iban":{"action":"pseudonym","domain":"accounts"},
 "input.income":{"action":"generalize","bands":[0,20000,50000]},
 "input.birth_date":{"action":"generalize","to":"month"},
 "input.items[].email":{"action":"pseudonym"},
 "tags[]":{"action":"pseudonym"},
 "subject":{"action":"vault"},
 "m[][]":{"action":"drop"}}}`

func FuzzApply(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"a":1}`, `{"input":{"name":"Erika Mustermann","iban":"DE89370400440532013000","income":1,"birth_date":"1964-08-12"}}`,
		`{"input":{"items":[{"email":"erika.mustermann@example.com"},{}]},"tags":["x",null,{"a":"bbbbbbbb"}]}`,
		`{"m":[[1,"secret-value"],[]],"deep":{"x":[[["long string value"]]]}}`,
		`{"a\u0000b":"\u00e9\n\"quoted value\"","z":[true,false,null,-0,1e300]}`,
		`{"input":[1]}`, `{"input":{"income":"x"}}`, `{"subject":{"a":[1,2]}}`,
	} {
		f.Add([]byte(s))
	}
	p, err := Parse([]byte(fuzzPolicy))
	if err != nil {
		f.Fatal(err)
	}
	keepAll, err := Parse([]byte(`{}`))
	if err != nil {
		f.Fatal(err)
	}
	// Error messages are made of the package's own literals and the policy's paths; a payload string that happens to
	// be part of those is no leak.
	var vocabulary []byte
	for _, name := range []string{"apply.go", "pseudo.go", "../canon/scan.go"} {
		src, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		vocabulary = append(vocabulary, src...)
	}
	vocabulary = append(vocabulary, fuzzPolicy...)
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := canon.Append(nil, data)
		if err != nil || len(in) == 0 || in[0] != '{' {
			return
		}
		// With nothing named and keep as the default, Apply is the identity.
		if same, err := keepAll.Apply(nil, in, keys); err != nil || !bytes.Equal(same, in) {
			t.Fatalf("keep-all Apply(%s) = %s, %v", in, same, err)
		}
		values, names := jsonStrings(t, in)
		vr := &vaultRecorder{testKeys: keys}
		out, err := p.Apply(nil, in, vr)
		if err != nil {
			for _, s := range values {
				if len(s) >= 6 && strings.Contains(err.Error(), s) && !bytes.Contains(vocabulary, []byte(s)) {
					t.Fatalf("error %q contains the raw value %q", err, s)
				}
			}
			return
		}
		if c, err := canon.Append(nil, out); err != nil || !bytes.Equal(c, out) {
			t.Fatalf("Apply(%s) = %s: not canonical (%v)", in, out, err)
		}
		// Every vaulted value is handed over in canonical form, under a pseudonym the output holds.
		for _, e := range vr.got {
			if c, err := canon.Append(nil, e.Value); err != nil || !bytes.Equal(c, e.Value) || !bytes.Contains(out, []byte(`"`+e.Pseudonym+`"`)) {
				t.Fatalf("Apply(%s) = %s: vault entry %s %q", in, out, e.Pseudonym, e.Value)
			}
		}
		for _, s := range values {
			// A string survives only as a member name (kept), or by coinciding with what Apply writes itself:
			// a band label, a month, a pseudonym.
			if len(s) < 8 || names[s] || strings.HasPrefix(s, "pn:") || strings.HasPrefix(s, "[") || strings.HasPrefix(s, "(") {
				continue
			}
			if bytes.Contains(out, canon.AppendString(nil, s)) {
				t.Fatalf("Apply(%s) = %s: the raw value %q survived", in, out, s)
			}
		}
	})
}

// jsonStrings lists every string value and every member name in a JSON document.
func jsonStrings(t *testing.T, in []byte) (values []string, names map[string]bool) {
	names = map[string]bool{}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case string:
			values = append(values, v)
		case map[string]any:
			for k, x := range v {
				names[k] = true
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	var v any
	if err := json.Unmarshal(in, &v); err != nil {
		t.Fatalf("Unmarshal canonical input: %v", err)
	}
	walk(v)
	return values, names
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		examplePolicy, fuzzPolicy, `{}`, `{"default":"drop"}`, `{"domain":"d","fields":{"v":{"action":"vault"}}}`,
		`{"fields":{"a..b":{"action":"keep"}}}`, `{"fields":{"a[][]":{"action":"generalize","bands":[1,2,3]}}}`,
		`{"fields":{"a":{"action":"keep"},"a.b":{"action":"keep"},"a.b[]":{"action":"drop"}}}`,
	} {
		f.Add([]byte(s))
	}
	payload := []byte(`{"a":{"b":[1,"x",{"c":"2020-01-02"}]},"input":{"income":5,"items":[{"email":"e"}]},"subject":"s"}`)
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err != nil {
			return
		}
		q, err := Parse(data)
		if err != nil || q.Version != p.Version {
			t.Fatalf("Parse is not deterministic: %v", err)
		}
		out, err := p.Apply(nil, payload, allKeys{})
		if err == nil {
			if c, err := canon.Append(nil, out); err != nil || !bytes.Equal(c, out) {
				t.Fatalf("Apply = %s: not canonical (%v)", out, err)
			}
		}
	})
}

// allKeys has a key for every domain.
type allKeys struct{}

func (allKeys) DomainKey(string) ([]byte, error) { return make([]byte, KeySize), nil }
