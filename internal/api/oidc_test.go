package api

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/oidc"
	"github.com/cairn-ai/cairn/internal/oidc/oidctest"
)

func TestOIDCTokens(t *testing.T) {
	idp := oidctest.New(t)
	o, err := NewOIDC(OIDCConfig{Config: oidc.Config{Issuer: idp.URL, Audience: "cairn"}, Groups: map[string]Grant{
		"ml-auditors": {Roles: []string{RoleAuditor}},
		"credit-apps": {Roles: []string{RoleIngest}, Systems: []string{"credit"}},
		"credit-dpo":  {Roles: []string{RoleDPO}, Systems: []string{"credit"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	ts := newTestServer(t, Config{AuthFailures: -1, OIDC: o})
	now := time.Now()
	jwt := func(over map[string]any) string {
		c := map[string]any{"iss": idp.URL, "aud": "cairn", "sub": "u-7", "exp": now.Add(time.Hour).Unix(), "groups": []string{"credit-apps"}}
		for k, v := range over {
			c[k] = v
		}
		return idp.Sign(t, "RS256", "r1", c)
	}
	// A valid token of a mapped group: its roles, on its systems.
	app := jwt(nil)
	body := ts.do(t, "POST", "/v1/systems/credit/events", app, `[{"type":"inference","model":{"name":"m","version":"1"},"payload":{"output":1}}]`, 200)
	ts.do(t, "GET", "/v1/systems/credit", app, "", 403)
	// The server records the identity provider's subject as the actor.
	var rec struct{ Events []struct{ Index uint64 } }
	json.Unmarshal([]byte(body), &rec)
	lg, _ := ts.ledger.Log("credit")
	e, _ := lg.Entry(context.Background(), rec.Events[0].Index)
	env, _ := event.ParseEnvelope(e.Envelope)
	if env.Actor != "oidc:u-7" {
		t.Errorf("actor = %q, want oidc:u-7", env.Actor)
	}
	ts.do(t, "GET", "/v1/systems/credit", jwt(map[string]any{"groups": []string{"ml-auditors"}}), "", 200)
	// Two groups, each scoped on its own: ingest on credit does not become ingest everywhere.
	both := jwt(map[string]any{"groups": []string{"ml-auditors", "credit-apps"}})
	ts.do(t, "GET", "/v1/systems/credit", both, "", 200)
	ts.do(t, "POST", "/v1/systems", ts.root, `{"id":"hiring","name":"H","intended_purpose":"x","provider":"Acme"}`, 201)
	ts.do(t, "POST", "/v1/systems/hiring/events", both, `[{"type":"inference","model":{"name":"m","version":"1"},"payload":{"output":1}}]`, 403)
	// A dpo limited to credit may re-identify there, but not erase in a domain shared across systems.
	dpo := jwt(map[string]any{"groups": []string{"credit-dpo"}})
	ts.do(t, "POST", "/v1/systems/credit/reidentify", dpo, `{"pseudonyms":["pn:x"],"purpose":"oidc test"}`, 200)
	ts.do(t, "POST", "/v1/vault/erase", dpo, `{"domain":"customers","pseudonyms":["pn:x"]}`, 403)
	// Authenticated, but in no mapped group: nothing is allowed.
	ts.do(t, "GET", "/v1/systems/credit", jwt(map[string]any{"groups": []string{"marketing"}}), "", 403)

	// Refused outright, with the same 401 as a bad token: wrong issuer, audience, signature, expired.
	other := oidctest.New(t)
	for name, tok := range map[string]string{
		"wrong issuer":    jwt(map[string]any{"iss": other.URL}),
		"wrong audience":  jwt(map[string]any{"aud": "another-app"}),
		"expired":         jwt(map[string]any{"exp": now.Add(-time.Hour).Unix()}),
		"not yet valid":   jwt(map[string]any{"nbf": now.Add(time.Hour).Unix()}),
		"wrong signature": other.Sign(t, "RS256", "r1", map[string]any{"iss": idp.URL, "aud": "cairn", "sub": "u-7", "exp": now.Add(time.Hour).Unix(), "groups": []string{"ml-auditors"}}),
		"unsigned":        idp.Sign(t, "none", "r1", map[string]any{"iss": idp.URL, "aud": "cairn", "sub": "u-7", "exp": now.Add(time.Hour).Unix(), "groups": []string{"ml-auditors"}}),
		"no subject":      jwt(map[string]any{"sub": "", "groups": []string{"ml-auditors"}}),
	} {
		if code, b, _ := ts.call(t, "GET", "/v1/systems/credit", tok, ""); code != 401 {
			t.Errorf("%s: %d %s, want 401", name, code, b)
		}
	}
}
