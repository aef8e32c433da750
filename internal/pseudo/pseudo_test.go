package pseudo

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cairn-ai/cairn/internal/canon"
)

// testKeys maps domains to fixed keys: customers → 32×0x01, accounts → 32×0x02.
type testKeys map[string][]byte

func (k testKeys) DomainKey(d string) ([]byte, error) {
	if key, ok := k[d]; ok {
		return key, nil
	}
	return nil, errors.New("no such domain")
}

var keys = testKeys{
	"customers": bytes.Repeat([]byte{1}, 32),
	"accounts":  bytes.Repeat([]byte{2}, 32),
}

// examplePolicy is the policy of the design notes, without its vault rule.
const examplePolicy = `{"default": "keep",
 "domain": "customers",
 "fields": {
   "subject":            {"action": "pseudonym"},
   "input.name":         {"action": "drop"},
   "input.iban":         {"action": "pseudonym", "domain": "accounts"},
   "input.income":       {"action": "generalize", "bands": [0, 20000, 50000, 100000]},
   "input.birth_date":   {"action": "generalize", "to": "year"},
   "input.items[].email":{"action": "pseudonym"},
   "output":             {"action": "keep"}
 }}`

func mustParse(t testing.TB, policy string) *Policy {
	t.Helper()
	p, err := Parse([]byte(policy))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return p
}

func mustCanon(t testing.TB, s string) []byte {
	t.Helper()
	c, err := canon.Append(nil, []byte(s))
	if err != nil {
		t.Fatalf("canon.Append(%s): %v", s, err)
	}
	return c
}

// pn computes a pseudonym independently of the package: the quoted form as it appears in output.
func pn(domain, canonicalValue string) string {
	m := hmac.New(sha256.New, keys[domain])
	m.Write([]byte(canonicalValue))
	return `"pn:` + base64.RawURLEncoding.EncodeToString(m.Sum(nil))[:22] + `"`
}

func TestApply(t *testing.T) {
	c := func(v string) string { return pn("customers", v) }
	tests := []struct {
		name, policy, payload, want string
	}{
		{"keep all", `{}`, `{"b":[1,{"x":null}],"a":"s"}`, `{"a":"s","b":[1,{"x":null}]}`},
		{"empty payload", examplePolicy, `{}`, `{}`},
		{"example", examplePolicy,
			`{"subject":"alice@example.com","input":{"name":"Alice","iban":"DE89370400440532013000","income":42000,` +
				`"birth_date":"1964-08-12","items":[{"email":"a@b.c","qty":2},{"qty":1}],"other":true},"output":{"score":0.7}}`,
			`{"input":{"birth_date":"1964","iban":` + pn("accounts", `"DE89370400440532013000"`) +
				`,"income":"[20000,50000)","items":[{"email":` + c(`"a@b.c"`) + `,"qty":2},{"qty":1}],"other":true},` +
				`"output":{"score":0.7},"subject":` + c(`"alice@example.com"`) + `}`},
		{"nulls", examplePolicy,
			`{"subject":null,"input":{"name":null,"iban":null,"income":null,"birth_date":null,"items":null}}`,
			`{"input":{"birth_date":null,"iban":null,"income":null,"items":null},"subject":null}`},
		{"null interior", examplePolicy, `{"input":null}`, `{"input":null}`},
		{"empty array", examplePolicy, `{"input":{"items":[]}}`, `{"input":{"items":[]}}`},
		{"array of objects, null and empty elements", examplePolicy, `{"input":{"items":[null,{},{"email":null}]}}`,
			`{"input":{"items":[null,{},{"email":null}]}}`},
		{"pseudonym of object and array", examplePolicy, `{"subject":{"a":[1,2]},"input":{"iban":[1]}}`,
			`{"input":{"iban":` + pn("accounts", `[1]`) + `},"subject":` + c(`{"a":[1,2]}`) + `}`},
		{"pseudonym of number and bool", examplePolicy, `{"subject":42}`, `{"subject":` + c(`42`) + `}`},
		{"pseudonym of a whole array", `{"domain":"customers","fields":{"tags":{"action":"pseudonym"}}}`,
			`{"tags":["x","y"]}`, `{"tags":` + c(`["x","y"]`) + `}`},
		{"pseudonym per element", `{"domain":"customers","fields":{"tags[]":{"action":"pseudonym"}}}`,
			`{"tags":["x",null,"y"]}`, `{"tags":[` + c(`"x"`) + `,null,` + c(`"y"`) + `]}`},
		{"drop per element", `{"fields":{"tags[]":{"action":"drop"}}}`, `{"tags":["x","y"],"k":1}`, `{"k":1,"tags":[]}`},
		{"drop whole object", `{"fields":{"input":{"action":"drop"}}}`, `{"input":{"a":1},"k":1}`, `{"k":1}`},
		{"drop array", `{"fields":{"tags":{"action":"drop"}}}`, `{"tags":[1],"k":1}`, `{"k":1}`},
		{"drop first and last", `{"fields":{"a":{"action":"drop"},"z":{"action":"drop"}}}`, `{"a":1,"m":2,"z":3}`, `{"m":2}`},
		{"nested arrays", `{"fields":{"m[][]":{"action":"generalize","bands":[10]}}}`, `{"m":[[1,10],[],[11.5,-3]]}`,
			`{"m":[["(-inf,10)","[10,+inf)"],[],["[10,+inf)","(-inf,10)"]]}`},
		{"deep path", `{"domain":"customers","fields":{"a.b.c[].d":{"action":"pseudonym"}}}`,
			`{"a":{"b":{"c":[{"d":"v","e":"w"}],"x":1}}}`, `{"a":{"b":{"c":[{"d":` + c(`"v"`) + `,"e":"w"}],"x":1}}}`},
		{"bands edges", `{"fields":{"n[]":{"action":"generalize","bands":[-1.5,0,20000,1e21]}}}`,
			`{"n":[-2,-1.5,-0.1,0,19999.99,20000,1e21,1e300]}`,
			`{"n":["(-inf,-1.5)","[-1.5,0)","[-1.5,0)","[0,20000)","[0,20000)","[20000,1e+21)","[1e+21,+inf)","[1e+21,+inf)"]}`},
		{"dates", `{"fields":{"m[]":{"action":"generalize","to":"month"},"y[]":{"action":"generalize","to":"year"}}}`,
			`{"m":["2026-01-31","2026-01-31T23:30:00-05:00","2026-12-01T00:00:00.123456Z"],"y":["1964-08-12","1999-12-31T23:59:59+14:00"]}`,
			`{"m":["2026-01","2026-01","2026-12"],"y":["1964","1999"]}`},
		{"default drop", `{"default":"drop","fields":{"output":{"action":"keep"},"input.id":{"action":"keep"}}}`,
			`{"a":1,"b":"s","c":null,"d":[1,"x",{"e":2}],"input":{"id":7,"name":"n"},"output":{"x":[1]}}`,
			`{"d":[{}],"input":{"id":7},"output":{"x":[1]}}`},
		{"default pseudonym", `{"default":"pseudonym","domain":"customers","fields":{"k":{"action":"keep"}}}`,
			`{"a":"s","b":[1,true,null],"c":{"d":"e"},"k":"kept","n":null}`,
			`{"a":` + c(`"s"`) + `,"b":[` + c(`1`) + `,` + c(`true`) + `,null],"c":{"d":` + c(`"e"`) + `},"k":"kept","n":null}`},
		{"identical nested rules", `{"fields":{"input":{"action":"keep"},"input.name":{"action":"keep"}}}`,
			`{"input":{"name":"x"}}`, `{"input":{"name":"x"}}`},
		{"object or array at one path", `{"domain":"customers","fields":{"x.a":{"action":"pseudonym"},"x[].a":{"action":"pseudonym"}}}`,
			`{"x":[{"a":1}],"y":{"x":{"a":1}}}`, `{"x":[{"a":` + c(`1`) + `}],"y":{"x":{"a":1}}}`},
		{"escaped member names", `{"domain":"customers","fields":{"a\"b":{"action":"pseudonym"}}}`,
			`{"a\"b":1,"c\n":2}`, `{"a\"b":` + c(`1`) + `,"c\n":2}`},
		{"case-sensitive paths", `{"fields":{"name":{"action":"drop"}}}`, `{"Name":"x"}`, `{"Name":"x"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustParse(t, tt.policy)
			in := mustCanon(t, tt.payload)
			got, err := p.Apply([]byte("prefix"), in, keys)
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if !bytes.HasPrefix(got, []byte("prefix")) {
				t.Fatalf("Apply lost dst prefix: %s", got)
			}
			got = got[len("prefix"):]
			if string(got) != tt.want {
				t.Errorf("Apply\n got %s\nwant %s", got, tt.want)
			}
			if c, err := canon.Append(nil, got); err != nil || !bytes.Equal(c, got) {
				t.Errorf("output not canonical: %s (%v)", got, err)
			}
		})
	}
}

func TestApplyRejects(t *testing.T) {
	tests := []struct {
		name, policy, payload, path, reason string
	}{
		{"bands got string", examplePolicy, `{"input":{"income":"42000"}}`, "input.income", "got a string, want a number"},
		{"bands got object", examplePolicy, `{"input":{"income":{"v":1}}}`, "input.income", "got an object"},
		{"bands got bool", examplePolicy, `{"input":{"income":true}}`, "input.income", "got a boolean"},
		{"bands got array", examplePolicy, `{"input":{"income":[1]}}`, "input.income", "got an array"},
		{"date got number", examplePolicy, `{"input":{"birth_date":19640812}}`, "input.birth_date", "got a number"},
		{"date got object", examplePolicy, `{"input":{"birth_date":{"y":1964}}}`, "input.birth_date", "got an object"},
		{"date got text", examplePolicy, `{"input":{"birth_date":"Alice Smith"}}`, "input.birth_date", "not an RFC 3339"},
		{"date got bad day", examplePolicy, `{"input":{"birth_date":"1964-02-30"}}`, "input.birth_date", "not an RFC 3339"},
		{"date got month only", examplePolicy, `{"input":{"birth_date":"1964-02"}}`, "input.birth_date", "not an RFC 3339"},
		{"date got escaped", examplePolicy, `{"input":{"birth_date":"1964-02-01\n"}}`, "input.birth_date", "not an RFC 3339"},
		{"array where no [] declared", examplePolicy, `{"input":[{"name":"Alice"}]}`, "input", "declares no input[]"},
		{"array of arrays", examplePolicy, `{"input":{"items":[[{"email":"a@b.c"}]]}}`, "input.items[]", "got an array"},
		{"object where [] declared", examplePolicy, `{"input":{"items":{"email":"a@b.c"}}}`, "input.items", "want an array"},
		{"string where object expected", examplePolicy, `{"input":"Alice DE89370400440532013000"}`, "input", "got a string, want an object"},
		{"string where [] declared", examplePolicy, `{"input":{"items":"a@b.c"}}`, "input.items", "got a string, want an array"},
		{"number element where object expected", examplePolicy, `{"input":{"items":[1]}}`, "input.items[]", "got a number, want an object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustParse(t, tt.policy)
			dst := []byte("dst")
			got, err := p.Apply(dst, mustCanon(t, tt.payload), keys)
			if string(got) != "dst" {
				t.Errorf("Apply returned %q on error, want dst unchanged", got)
			}
			var fe *FieldError
			if !errors.As(err, &fe) || !errors.Is(err, ErrRejected) {
				t.Fatalf("Apply error = %v, want a *FieldError wrapping ErrRejected", err)
			}
			if fe.Path != tt.path || !strings.Contains(fe.Reason, tt.reason) {
				t.Errorf("error = %v, want path %q and reason containing %q", err, tt.path, tt.reason)
			}
		})
	}
}

func TestApplyNotCanonical(t *testing.T) {
	p := mustParse(t, examplePolicy)
	for _, in := range []string{``, `[]`, `"x"`, `{"a":1}x`, `{ "a":1}`, `{"a":1`, `{"a"}`, `{"a":[1,}`, `{"input":{"name":"x}}`} {
		_, err := p.Apply(nil, []byte(in), keys)
		if !errors.Is(err, ErrNotCanonical) {
			t.Errorf("Apply(%q) error = %v, want ErrNotCanonical", in, err)
		}
	}
}

// vaultRecorder is testKeys that records what a vault rule hands over.
type vaultRecorder struct {
	testKeys
	got []VaultEntry
}

func (v *vaultRecorder) Vault(domain, pseudonym string, value []byte) error {
	v.got = append(v.got, VaultEntry{domain, pseudonym, bytes.Clone(value)})
	return nil
}

func TestApplyVault(t *testing.T) {
	p := mustParse(t, `{"domain":"customers","fields":{"subject":{"action":"vault"},
		"input.people[].iban":{"action":"vault","domain":"accounts"},"input.contact":{"action":"vault"}}}`)
	if _, err := p.Apply(nil, []byte(`{}`), keys); !errors.Is(err, ErrVaultRequired) ||
		err.Error() != "vault action needs the token vault" {
		t.Errorf("Apply with a vault rule and plain keys: %v, want ErrVaultRequired", err)
	}
	in := mustCanon(t, `{"subject":"alice@example.com","input":{"people":[{"iban":"DE89370400440532013000","age":41},
		{"iban":null},{"iban":"FR7630006000011234567890189"}],"contact":{"phone":"+49 30 1234567","city":"Berlin"}}}`)
	vr := &vaultRecorder{testKeys: keys}
	out, err := p.Apply(nil, in, vr)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"input":{"contact":` + pn("customers", `{"city":"Berlin","phone":"+49 30 1234567"}`) +
		`,"people":[{"age":41,"iban":` + pn("accounts", `"DE89370400440532013000"`) + `},{"iban":null},{"iban":` +
		pn("accounts", `"FR7630006000011234567890189"`) + `}]},"subject":` + pn("customers", `"alice@example.com"`) + `}`
	if string(out) != want {
		t.Errorf("Apply =\n%s\nwant\n%s", out, want)
	}
	// Every vaulted value reaches the vault once, in canonical form, under the pseudonym written (nulls are not
	// values, so they are neither pseudonymised nor vaulted).
	wantVault := []VaultEntry{
		{"customers", pn("customers", `{"city":"Berlin","phone":"+49 30 1234567"}`), []byte(`{"city":"Berlin","phone":"+49 30 1234567"}`)},
		{"accounts", pn("accounts", `"DE89370400440532013000"`), []byte(`"DE89370400440532013000"`)},
		{"accounts", pn("accounts", `"FR7630006000011234567890189"`), []byte(`"FR7630006000011234567890189"`)},
		{"customers", pn("customers", `"alice@example.com"`), []byte(`"alice@example.com"`)},
	}
	if len(vr.got) != len(wantVault) {
		t.Fatalf("vaulted %d values, want %d", len(vr.got), len(wantVault))
	}
	for i, w := range wantVault {
		g := vr.got[i]
		if `"`+g.Pseudonym+`"` != w.Pseudonym || g.Domain != w.Domain || string(g.Value) != string(w.Value) {
			t.Errorf("vault entry %d = %s %s %s, want %s %s %s", i, g.Domain, g.Pseudonym, g.Value, w.Domain, w.Pseudonym, w.Value)
		}
	}
	// A vaulted field in a shape the policy does not allow is refused, and nothing reaches the vault.
	vr.got = nil
	if _, err := p.Apply(nil, mustCanon(t, `{"input":{"people":{"iban":"DE89370400440532013000"}}}`), vr); !errors.Is(err, ErrRejected) {
		t.Errorf("people as an object: %v, want ErrRejected", err)
	}
}

func TestPolicyRotationAndApprovals(t *testing.T) {
	at := time.Date(2026, 11, 30, 23, 59, 0, 0, time.FixedZone("CET", 3600))
	for policy, want := range map[string][2]any{
		`{}`:                 {"", 1},
		`{"rotate":"never"}`: {"", 1},
		`{"rotate":"year"}`:  {"2026", 1},
		`{"rotate":"month","reidentify":{"approvals":2}}`: {"2026-11", 2},
	} {
		p := mustParse(t, policy)
		if got := p.KeyPeriod(at); got != want[0] {
			t.Errorf("%s: KeyPeriod = %q, want %q", policy, got, want[0])
		}
		if got := p.Approvals(); got != want[1] {
			t.Errorf("%s: Approvals = %d, want %d", policy, got, want[1])
		}
	}
	for policy, wantPath := range map[string]string{
		`{"rotate":"week"}`:              "/rotate",
		`{"rotate":1}`:                   "/rotate",
		`{"reidentify":{"approvals":3}}`: "/reidentify/approvals",
		`{"reidentify":{"approvers":2}}`: "/reidentify/approvers",
		`{"reidentify":[]}`:              "/reidentify",
	} {
		_, err := Parse([]byte(policy))
		var pe *PolicyError
		if !errors.As(err, &pe) || pe.Path != wantPath {
			t.Errorf("Parse(%s) = %v, want a PolicyError at %s", policy, err, wantPath)
		}
	}
}

func TestApplyKeyErrors(t *testing.T) {
	p := mustParse(t, examplePolicy)
	in := mustCanon(t, `{"subject":"alice@example.com"}`)
	for name, k := range map[string]Keys{
		"missing domain": testKeys{},
		"short key":      testKeys{"customers": make([]byte, 16)},
		"nil keys":       nil,
	} {
		_, err := p.Apply(nil, in, k)
		if err == nil || !strings.Contains(err.Error(), `"customers"`) || strings.Contains(err.Error(), "alice") {
			t.Errorf("%s: error = %v, want one naming the domain and not the value", name, err)
		}
	}
	// No pseudonym in the payload: no key needed.
	if _, err := p.Apply(nil, mustCanon(t, `{"output":1}`), testKeys{}); err != nil {
		t.Errorf("Apply without pseudonyms asked for a key: %v", err)
	}
}

// Golden pseudonyms, computed independently (Python's hmac module) for keys 32×0x01 (customers) and 32×0x02
// (accounts).
func TestPseudonymGolden(t *testing.T) {
	p := mustParse(t, `{"domain":"customers","fields":{"c":{"action":"pseudonym"},"a":{"action":"pseudonym","domain":"accounts"}}}`)
	apply := func(payload string, k Keys) string {
		t.Helper()
		out, err := p.Apply(nil, mustCanon(t, payload), k)
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	for _, tt := range []struct{ payload, want string }{
		{`{"c":"alice@example.com"}`, `{"c":"pn:1RBP73E6Bx4eAMZW1UYAPl"}`},
		{`{"a":"alice@example.com"}`, `{"a":"pn:a_Fa_DeUrM4W-Cjt3CMcMR"}`},
		{`{"c":"DE89370400440532013000"}`, `{"c":"pn:po83JXsV4x6XhOf97U5cZb"}`},
		{`{"c":{ "a" : [1, 2] }}`, `{"c":"pn:4jih5Ji-zfdHqvirDOL0EN"}`},
		{`{"c":42.0}`, `{"c":"pn:1BidJlcap-wYjTzGDnV9sO"}`},
	} {
		if got := apply(tt.payload, keys); got != tt.want {
			t.Errorf("Apply(%s) = %s, want %s", tt.payload, got, tt.want)
		}
	}
	// The same value in two events links; another domain or another key does not.
	e1 := apply(`{"c":"alice@example.com","x":1}`, keys)
	e2 := apply(`{"c":"alice@example.com","y":[2]}`, keys)
	if e1[:len(`{"c":"pn:1RBP73E6Bx4eAMZW1UYAPl"`)] != e2[:len(`{"c":"pn:1RBP73E6Bx4eAMZW1UYAPl"`)] {
		t.Errorf("same value, two events: %s vs %s", e1, e2)
	}
	other := testKeys{"customers": bytes.Repeat([]byte{3}, 32)}
	if got := apply(`{"c":"alice@example.com"}`, other); got == `{"c":"pn:1RBP73E6Bx4eAMZW1UYAPl"}` {
		t.Errorf("another key gave the same pseudonym")
	}
	if got := apply(`{"c":"alice@example.com "}`, keys); got == `{"c":"pn:1RBP73E6Bx4eAMZW1UYAPl"}` {
		t.Errorf("another value gave the same pseudonym")
	}
}

func TestInputDigest(t *testing.T) {
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i)
	}
	const want = "hmac-sha256:b4cebde30982443ec36c18fa99ad10a70e705bba779f57c37e84decb64ae50fb"
	if got := InputDigest(key, []byte(`{"a":1}`)); got != want {
		t.Errorf("InputDigest = %s, want %s", got, want)
	}
	other := make([]byte, 32)
	for i := range other {
		other[i] = byte(i + 1)
	}
	// Golden for the other key too, and neither matches the wrong value.
	if got := InputDigest(other, []byte(`{"a":1}`)); got != "hmac-sha256:3cd3216a32a3eb3e81ce6678eb2f49c34cbc23346921fef1432ff1334197789d" {
		t.Errorf("InputDigest under another key = %s", got)
	}
	if InputDigest(key, []byte(`{"a":2}`)) == want {
		t.Error("another value gave the same digest")
	}
	flipped := bytes.Clone(key)
	flipped[31] ^= 1
	if InputDigest(flipped, []byte(`{"a":1}`)) == want {
		t.Error("a flipped key bit gave the same digest")
	}
}

// Raw personal values planted in payloads appear neither in Apply's output nor in any error it returns.
func TestNoRawValues(t *testing.T) {
	planted := []string{"Erika Mustermann", "DE89370400440532013000", "erika.mustermann@example.com", "1964-08-12", "Mustermann", "erika."}
	p := mustParse(t, examplePolicy)
	payloads := []string{
		// Accepted: every planted value is at a path that drops, pseudonymises or generalises it.
		`{"subject":"erika.mustermann@example.com","input":{"name":"Erika Mustermann","iban":"DE89370400440532013000",` +
			`"birth_date":"1964-08-12T10:00:00+02:00","income":52000,"items":[{"email":"erika.mustermann@example.com"}]}}`,
		`{"subject":{"name":"Erika Mustermann","iban":"DE89370400440532013000"},"input":{"iban":["DE89370400440532013000"],` +
			`"name":{"full":"Erika Mustermann"},"birth_date":"1964-08-12"}}`,
		// Rejected, with the values in the wrong shape.
		`{"input":{"income":"DE89370400440532013000"}}`,
		`{"input":{"birth_date":"Erika Mustermann 1964-08-12"}}`,
		`{"input":{"birth_date":{"d":"1964-08-12"}}}`,
		`{"input":["Erika Mustermann","DE89370400440532013000"]}`,
		`{"input":"erika.mustermann@example.com"}`,
		`{"input":{"items":"erika.mustermann@example.com"}}`,
		`{"input":{"items":{"email":"erika.mustermann@example.com"}}}`,
		`{"input":{"items":["erika.mustermann@example.com"]}}`,
		`{"input":{"items":[["erika.mustermann@example.com"]]}}`,
	}
	accepted := 0
	for _, payload := range payloads {
		out, err := p.Apply(nil, mustCanon(t, payload), keys)
		text := string(out)
		if err != nil {
			text = err.Error()
		} else {
			accepted++
		}
		for _, v := range planted {
			if strings.Contains(text, v) {
				t.Errorf("Apply(%s) leaked %q: %s", payload, v, text)
			}
		}
	}
	if accepted != 2 {
		t.Errorf("%d payloads accepted, want 2", accepted)
	}
	// Not-canonical input: the error gives an offset, not content.
	_, err := p.Apply(nil, []byte(`{"input":{"name":"Erika Mustermann"} }`), keys)
	if err == nil || strings.Contains(err.Error(), "Erika") {
		t.Errorf("Apply(non-canonical) error = %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ name, policy, path, reason string }{
		{"not json", `{"fields":`, "/fields", "end of input"},
		{"not an object", `[]`, "", "want an object"},
		{"duplicate member", `{"fields":{"a":{"action":"keep"},"a":{"action":"drop"}}}`, "/fields/a", "duplicate"},
		{"paths differ in case", `{"fields":{"a":{"action":"keep"},"A":{"action":"drop"}}}`, "/fields/A", "case"},
		{"unknown member", `{"defaults":"keep"}`, "/defaults", "unknown member"},
		{"default generalize", `{"default":"generalize"}`, "/default", "keep, drop or pseudonym"},
		{"default vault", `{"default":"vault","domain":"d"}`, "/default", "keep, drop or pseudonym"},
		{"default not a string", `{"default":1}`, "/default", "got a number"},
		{"default pseudonym without domain", `{"default":"pseudonym"}`, "/default", "needs a domain"},
		{"bad domain", `{"domain":"a b"}`, "/domain", "only letters"},
		{"empty domain", `{"domain":""}`, "/domain", "1 to 64"},
		{"fields not an object", `{"fields":[]}`, "/fields", "want an object"},
		{"rule not an object", `{"fields":{"a":"keep"}}`, "/fields/a", "want an object with an action"},
		{"missing action", `{"fields":{"a":{}}}`, "/fields/a", "missing action"},
		{"unknown action", `{"fields":{"a":{"action":"hash"}}}`, "/fields/a/action", "unknown action"},
		{"unknown rule member", `{"fields":{"a":{"action":"keep","why":"x"}}}`, "/fields/a/why", "unknown member"},
		{"pseudonym without domain", `{"fields":{"a":{"action":"pseudonym"}}}`, "/fields/a", "needs a domain"},
		{"vault without domain", `{"fields":{"a":{"action":"vault"}}}`, "/fields/a", "needs a domain"},
		{"rule domain invalid", `{"fields":{"a":{"action":"pseudonym","domain":"x/y"}}}`, "/fields/a/domain", "only letters"},
		{"domain on keep", `{"fields":{"a":{"action":"keep","domain":"d"}}}`, "/fields/a/domain", "pseudonym and vault only"},
		{"bands on drop", `{"fields":{"a":{"action":"drop","bands":[1]}}}`, "/fields/a", "generalize only"},
		{"to on pseudonym", `{"domain":"d","fields":{"a":{"action":"pseudonym","to":"year"}}}`, "/fields/a", "generalize only"},
		{"generalize bare", `{"fields":{"a":{"action":"generalize"}}}`, "/fields/a", "needs bands"},
		{"generalize both", `{"fields":{"a":{"action":"generalize","bands":[1],"to":"year"}}}`, "/fields/a", "not both"},
		{"bands empty", `{"fields":{"a":{"action":"generalize","bands":[]}}}`, "/fields/a/bands", "at least one"},
		{"bands not array", `{"fields":{"a":{"action":"generalize","bands":1}}}`, "/fields/a/bands", "want an array"},
		{"bands string", `{"fields":{"a":{"action":"generalize","bands":[1,"2"]}}}`, "/fields/a/bands/1", "want a number"},
		{"bands descending", `{"fields":{"a":{"action":"generalize","bands":[2,1]}}}`, "/fields/a/bands/1", "ascending"},
		{"bands repeated", `{"fields":{"a":{"action":"generalize","bands":[1,1]}}}`, "/fields/a/bands/1", "ascending"},
		{"to day", `{"fields":{"a":{"action":"generalize","to":"day"}}}`, "/fields/a/to", "month or year"},
		{"empty path", `{"fields":{"":{"action":"keep"}}}`, "/fields/", "empty path"},
		{"empty segment", `{"fields":{"a..b":{"action":"keep"}}}`, "/fields/a..b", "segment 2"},
		{"leading dot", `{"fields":{".a":{"action":"keep"}}}`, "/fields/.a", "segment 1"},
		{"trailing dot", `{"fields":{"a.":{"action":"keep"}}}`, "/fields/a.", "segment 2"},
		{"bare []", `{"fields":{"[]":{"action":"keep"}}}`, "/fields/[]", "no member name"},
		{"[] inside", `{"fields":{"a[]b":{"action":"keep"}}}`, "/fields/a[]b", "trailing []"},
		{"[ alone", `{"fields":{"a[":{"action":"keep"}}}`, "/fields/a[", "trailing []"},
		{"index", `{"fields":{"a[0]":{"action":"keep"}}}`, "/fields/a[0]", "trailing []"},
		{"slash in path", `{"fields":{"a/b.[]":{"action":"keep"}}}`, "/fields/a~1b.[]", "no member name"},
		{"conflicting prefix", `{"fields":{"input":{"action":"drop"},"input.name":{"action":"keep"}}}`, "/fields/input.name", `conflicts with "input"`},
		{"conflicting array prefix", `{"fields":{"items":{"action":"keep"},"items[]":{"action":"drop"}}}`, "/fields/items[]", `conflicts with "items"`},
		{"conflicting deep prefix", `{"domain":"d","fields":{"a[]":{"action":"pseudonym"},"a[].b.c":{"action":"pseudonym","domain":"e"}}}`, "/fields/a[].b.c", "conflicts"},
		{"conflicting bands", `{"fields":{"a":{"action":"generalize","bands":[1]},"a[]":{"action":"generalize","bands":[2]}}}`, "/fields/a[]", "conflicts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse([]byte(tt.policy))
			if err == nil {
				t.Fatalf("Parse accepted %s (version %s)", tt.policy, p.Version)
			}
			var pe *PolicyError
			var ce *canon.Error
			switch {
			case errors.As(err, &pe):
				if pe.Path != tt.path || !strings.Contains(pe.Reason, tt.reason) {
					t.Errorf("error %v, want path %q and reason containing %q", err, tt.path, tt.reason)
				}
			case errors.As(err, &ce):
				if ce.Path != tt.path || !strings.Contains(ce.Reason, tt.reason) {
					t.Errorf("error %v, want path %q and reason containing %q", err, tt.path, tt.reason)
				}
			default:
				t.Errorf("error %T %v, want *PolicyError or *canon.Error", err, err)
			}
		})
	}
}

func TestParse(t *testing.T) {
	p := mustParse(t, examplePolicy)
	if !strings.HasPrefix(p.Version, "sha256:") || len(p.Version) != 19 {
		t.Errorf("Version = %q, want sha256: and 12 hex digits", p.Version)
	}
	sum := sha256.Sum256(mustCanon(t, examplePolicy))
	if want := "sha256:" + base16(sum[:6]); p.Version != want {
		t.Errorf("Version = %s, want %s", p.Version, want)
	}
	// The same policy written differently has the same version; a different one does not.
	respelled := mustParse(t, `{"fields":{"output":{"action":"keep"},"input.items[].email":{"action":"pseudonym"},`+
		`"input.birth_date":{"to":"year","action":"generalize"},"input.income":{"action":"generalize","bands":[0,2e4,5e4,1e5]},`+
		`"input.iban":{"domain":"accounts","action":"pseudonym"},"input.name":{"action":"drop"},"subject":{"action":"pseudonym"}},`+
		`"domain":"customers","default":"keep"}`)
	if respelled.Version != p.Version {
		t.Errorf("respelled policy version %s, want %s", respelled.Version, p.Version)
	}
	if other := mustParse(t, strings.Replace(examplePolicy, `"year"`, `"month"`, 1)); other.Version == p.Version {
		t.Error("a different policy has the same version")
	}
	if got := strings.Join(p.Domains(), ","); got != "customers,accounts" {
		t.Errorf("Domains = %s", got)
	}
	if p := mustParse(t, `{}`); p.def != Keep || len(p.Domains()) != 0 {
		t.Errorf("empty policy: default %v, domains %v", p.def, p.Domains())
	}
	mustParse(t, `{"domain":"d","fields":{"v":{"action":"vault"}}}`)
}

func base16(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

func TestApplyAllocs(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	p := mustParse(t, examplePolicy)
	in := benchPayload(t)
	out := make([]byte, 0, 2*len(in))
	n := testing.AllocsPerRun(100, func() {
		var err error
		if out, err = p.Apply(out[:0], in, keys); err != nil {
			t.Fatal(err)
		}
	})
	// Appliers and their HMAC state are pooled: nothing per call or per value, except after a GC empties the pool.
	if n > 1 {
		t.Errorf("Apply allocates %v times per call", n)
	}
}

// Concurrent calls with two keyrings (as during a rotation) each get their own key's pseudonyms.
func TestApplyConcurrent(t *testing.T) {
	p := mustParse(t, examplePolicy)
	in := mustCanon(t, `{"subject":"alice@example.com"}`)
	rotated := testKeys{"customers": bytes.Repeat([]byte{3}, 32), "accounts": keys["accounts"]}
	want := map[bool]string{false: `{"subject":"pn:1RBP73E6Bx4eAMZW1UYAPl"}`}
	out, err := p.Apply(nil, in, rotated)
	if err != nil {
		t.Fatal(err)
	}
	want[true] = string(out)
	errs := make(chan error, 8)
	for g := range 8 {
		go func() {
			for i := range 200 {
				k, useRotated := Keys(keys), (g+i)%2 == 1
				if useRotated {
					k = rotated
				}
				out, err := p.Apply(nil, in, k)
				if err == nil && string(out) != want[useRotated] {
					err = errors.New("got " + string(out) + ", want " + want[useRotated])
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
