package ledger_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

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

// memVault is a token vault in memory: the ledger's contract with the vault is only that Put is durable.
type memVault struct {
	mu      sync.Mutex
	entries map[string]string // domain + " " + pseudonym → value
	fail    error
}

func (v *memVault) Put(_ context.Context, es []pseudo.VaultEntry) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.fail != nil {
		return v.fail
	}
	for _, e := range es {
		v.entries[e.Domain+" "+e.Pseudonym] = string(e.Value)
	}
	return nil
}

const vaultDef = `{"id":"v","name":"n","intended_purpose":"p","provider":"q",
 "field_policy":{"domain":"customers","rotate":"month","fields":{"subject":{"action":"vault"}}}}`

func TestVaultAndRotation(t *testing.T) {
	ctx := context.Background()
	// Without a vault, a vault policy is refused at registration.
	e := newEnv(t)
	_, _, err := e.l.Register(ctx, []byte(vaultDef), "admin")
	var fe *system.FieldError
	if !errors.As(err, &fe) || fe.Field != "/field_policy" {
		t.Fatalf("register a vault policy without a vault: %v", err)
	}

	e = newEnv(t)
	v := &memVault{entries: map[string]string{}}
	e.cfg.Vault = v
	e.setClock(time.Date(2026, 11, 30, 23, 59, 0, 0, time.UTC))
	e.reopen()
	if _, _, err := e.l.Register(ctx, []byte(vaultDef), "admin"); err != nil {
		t.Fatal(err)
	}
	lg, _ := e.l.Log("v")
	raw := `{"type":"inference","model":{"name":"m","version":"1"},"payload":{"subject":"jane.roe@example.com","output":1}}`
	subject := func(i uint64) string {
		ent, _ := lg.Entry(ctx, i)
		pt, err := lg.OpenPayload(ent)
		if err != nil {
			t.Fatal(err)
		}
		var p struct{ Subject string }
		json.Unmarshal(pt, &p)
		return p.Subject
	}
	rs, err := lg.Append(ctx, e.prepare(lg, raw, raw))
	if err != nil {
		t.Fatal(err)
	}
	nov := subject(rs[0].Index)
	if nov != subject(rs[1].Index) || !strings.HasPrefix(nov, "pn:") {
		t.Fatalf("November pseudonyms %s, %s", nov, subject(rs[1].Index))
	}
	// A month later the key period changed: the same person gets another pseudonym, and both reverse in the vault.
	e.setClock(time.Date(2026, 12, 1, 0, 0, 1, 0, time.UTC))
	e.reopen()
	lg, _ = e.l.Log("v")
	rs, err = lg.Append(ctx, e.prepare(lg, raw))
	if err != nil {
		t.Fatal(err)
	}
	dec := subject(rs[0].Index)
	if dec == nov || !strings.HasPrefix(dec, "pn:") {
		t.Errorf("December pseudonym %s, November %s: want different", dec, nov)
	}
	if v.entries["customers "+nov] != `"jane.roe@example.com"` || v.entries["customers "+dec] != `"jane.roe@example.com"` || len(v.entries) != 2 {
		t.Errorf("vault = %v", v.entries)
	}
	// When the vault cannot store the original, the event is not acknowledged.
	v.fail = errors.New("disk full")
	n := lg.Store().Size()
	if _, err := lg.Append(ctx, e.prepare(lg, `{"type":"inference","model":{"name":"m","version":"1"},"payload":{"subject":"someone.else@example.com","output":1}}`)); err == nil {
		t.Error("append succeeded with the vault failing")
	}
	if lg.Store().Size() != n {
		t.Errorf("log grew from %d to %d with the vault failing", n, lg.Store().Size())
	}
}
