package ledger_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/pseudo"
	"github.com/cairn-ai/cairn/internal/system"
)

const policyDef = `{"id":"s","name":"n","intended_purpose":"p","provider":"q",
 "field_policy":{"domain":"customers","fields":{
   "subject":{"action":"pseudonym"},
   "input.name":{"action":"drop"},
   "input.iban":{"action":"pseudonym","domain":"accounts"},
   "input.income":{"action":"generalize","bands":[0,20000,50000]},
   "input.birth_date":{"action":"generalize","to":"year"}}}}`

func TestFieldPolicyAppliedBeforeSealing(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, _, err := e.l.Register(ctx, []byte(policyDef), "admin"); err != nil {
		t.Fatal(err)
	}
	lg, _ := e.l.Log("s")
	raw := `{"type":"inference","model":{"name":"m","version":"1"},"payload":{"subject":"jane.roe@example.com",
	  "input":{"name":"Jane Roe","iban":"DE89370400440532013000","income":31000,"birth_date":"1984-05-17"},"output":{"score":1}}}`
	rs, err := lg.Append(ctx, e.prepare(lg, raw, raw))
	if err != nil {
		t.Fatal(err)
	}
	var pseudonyms []string
	for _, r := range rs {
		ent, _ := lg.Entry(ctx, r.Index)
		pt, err := lg.OpenPayload(ent)
		if err != nil {
			t.Fatal(err)
		}
		for _, planted := range []string{"jane.roe", "Jane Roe", "DE89370400440532013000", "31000", "1984-05"} {
			if strings.Contains(string(pt), planted) || strings.Contains(string(ent.Envelope), planted) {
				t.Errorf("raw value %q survived the field policy: %s", planted, pt)
			}
		}
		if !strings.Contains(string(pt), `"income":"[20000,50000)"`) || !strings.Contains(string(pt), `"birth_date":"1984"`) {
			t.Errorf("generalisation missing: %s", pt)
		}
		env, _ := event.ParseEnvelope(ent.Envelope)
		if !strings.HasPrefix(env.Policy, "sha256:") {
			t.Errorf("envelope does not record the policy version: %q", env.Policy)
		}
		i := strings.Index(string(pt), `"subject":"pn:`)
		if i < 0 {
			t.Fatalf("subject not pseudonymised: %s", pt)
		}
		pseudonyms = append(pseudonyms, string(pt[i:i+len(`"subject":"pn:`)+22]))
	}
	if pseudonyms[0] != pseudonyms[1] {
		t.Errorf("the same subject got two pseudonyms: %v", pseudonyms)
	}
	// A field the policy must generalise, sent in an unexpected shape, is refused, never stored raw.
	bad := `{"type":"inference","model":{"name":"m","version":"1"},"payload":{"input":{"income":{"gross":31000}},"output":1}}`
	ev, _ := event.Parse(0, []byte(bad), e.now(), event.DefaultLimits, false)
	_, err = lg.Prepare(ev, "tester")
	var ee *event.Error
	if !errors.As(err, &ee) || ee.Field != "/payload/input/income" || strings.Contains(err.Error(), "31000") {
		t.Errorf("unexpected shape: %v", err)
	}
}

func TestFieldPolicyValidatedAtRegistration(t *testing.T) {
	for _, tc := range []struct{ policy, field string }{
		{`{"fields":{"a":{"action":"shred"}}}`, "/field_policy/fields/a"},
		{`{"fields":{"a":{"action":"vault","domain":"d"}}}`, "/field_policy"},
		{`{"fields":{"a..b":{"action":"drop"}}}`, "/field_policy/fields/a..b"},
	} {
		def := `{"id":"s","name":"n","intended_purpose":"p","provider":"q","field_policy":` + tc.policy + `}`
		_, _, err := system.Parse([]byte(def))
		var fe *system.FieldError
		if !errors.As(err, &fe) || !strings.HasPrefix(fe.Field, tc.field) {
			t.Errorf("policy %s: %v, want an error at %s", tc.policy, err, tc.field)
		}
	}
}

func TestInputDigest(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, _, err := e.l.Register(ctx, []byte(policyDef), "admin"); err != nil {
		t.Fatal(err)
	}
	lg, _ := e.l.Log("s")
	input := `{"birth_date":"1984-05-17","iban":"DE89370400440532013000","income":31000,"name":"Jane Roe"}`
	raw := `{"type":"inference","model":{"name":"m","version":"1"},"payload":{"input":` + input + `,"output":1}}`
	rs, err := lg.Append(ctx, e.prepare(lg, raw))
	if err != nil {
		t.Fatal(err)
	}
	ent, _ := lg.Entry(ctx, rs[0].Index)
	env, _ := event.ParseEnvelope(ent.Envelope)
	key, _ := e.keys.Secret("input-digest")
	// The key holder can prove this raw input is the one the system saw, though the stored payload is pseudonymised.
	if want := pseudo.InputDigest(key, []byte(input)); env.InputDigest != want {
		t.Errorf("input digest %q, want %q", env.InputDigest, want)
	}
	other := strings.Replace(input, "31000", "31001", 1)
	if pseudo.InputDigest(key, []byte(other)) == env.InputDigest {
		t.Errorf("another input has the same digest")
	}
}
