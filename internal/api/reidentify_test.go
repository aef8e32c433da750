package api

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/retention"
)

// accessEvents returns the access events of a system's log (their attrs and decrypted payloads), in log order.
func accessEvents(t *testing.T, ts *testServer, system string) []map[string]any {
	t.Helper()
	lg, err := ts.ledger.Log(system)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for i := range lg.Store().Size() {
		e, err := lg.Entry(context.Background(), i)
		if err != nil {
			t.Fatal(err)
		}
		env, err := event.ParseEnvelope(e.Envelope)
		if err != nil {
			t.Fatal(err)
		}
		if env.Type != "access" {
			continue
		}
		var attrs, payload map[string]any
		json.Unmarshal(env.Attrs, &attrs)
		pt, err := lg.OpenPayload(e)
		if err != nil {
			t.Fatal(err)
		}
		json.Unmarshal(pt, &payload)
		out = append(out, map[string]any{"actor": env.Actor, "action": attrs["action"], "payload": payload})
	}
	return out
}

func TestReidentifyOneApproval(t *testing.T) {
	ts := newTestServer(t, Config{AuthFailures: -1})
	ingest := ts.token(t, "app", RoleIngest, "credit")
	resp := ts.do(t, "POST", "/v1/systems/credit/events", ingest,
		`[{"type":"inference","model":{"name":"m","version":"1"},"payload":{"subject":"Alice Liddell","output":1}}]`, 200)
	var rec struct{ Events []struct{ Index uint64 } }
	json.Unmarshal([]byte(resp), &rec)
	// The stored payload holds the pseudonym only.
	lg, _ := ts.ledger.Log("credit")
	e, _ := lg.Entry(context.Background(), rec.Events[0].Index)
	pt, _ := lg.OpenPayload(e)
	var stored struct{ Subject string }
	json.Unmarshal(pt, &stored)
	if !strings.HasPrefix(stored.Subject, "pn:") || strings.Contains(string(pt), "Alice") {
		t.Fatalf("stored payload %s", pt)
	}
	pn := stored.Subject

	dpo := ts.token(t, "dpo-1", RoleDPO, "credit")
	auditor := ts.token(t, "aud", RoleAuditor, "")
	ts.do(t, "POST", "/v1/systems/credit/reidentify", auditor, `{"pseudonyms":["`+pn+`"],"purpose":"x"}`, 403)
	ts.do(t, "POST", "/v1/systems/credit/reidentify", dpo, `{"pseudonyms":["`+pn+`"]}`, 422)
	ts.do(t, "POST", "/v1/systems/credit/reidentify", dpo, `{"pseudonyms":["`+pn+`"],"purpose":"  "}`, 422)
	before := len(accessEvents(t, ts, "credit"))
	body := ts.do(t, "POST", "/v1/systems/credit/reidentify", dpo, `{"pseudonyms":["`+pn+`","pn:unknown"],"purpose":"complaint 2026-117"}`, 200)
	var got ReidentifyResponse
	json.Unmarshal([]byte(body), &got)
	if string(got.Values[pn]) != `"Alice Liddell"` || len(got.NotFound) != 1 || got.NotFound[0] != "pn:unknown" {
		t.Fatalf("reidentify = %s", body)
	}
	acc := accessEvents(t, ts, "credit")
	if len(acc) != before+1 {
		t.Fatalf("%d access events after re-identification, want %d", len(acc), before+1)
	}
	last := acc[len(acc)-1]
	p := last["payload"].(map[string]any)
	if last["action"] != "reidentify" || last["actor"] != "dpo-1" || p["purpose"] != "complaint 2026-117" || p["found"] != 1.0 {
		t.Errorf("access event = %v", last)
	}

	// No value leaves when the access event cannot be recorded.
	ts.ledger.Close()
	code, body, _ := ts.call(t, "POST", "/v1/systems/credit/reidentify", dpo, `{"pseudonyms":["`+pn+`"],"purpose":"after close"}`)
	if code < 500 || strings.Contains(body, "Alice") {
		t.Errorf("re-identification with the log closed = %d %s", code, body)
	}
}

func TestReidentifyTwoApprovalsAndErase(t *testing.T) {
	ts := newTestServer(t, Config{AuthFailures: -1})
	ts.do(t, "POST", "/v1/systems", ts.root, `{"id":"loans","name":"Loans","intended_purpose":"x","provider":"Acme",
		"field_policy":{"domain":"customers","reidentify":{"approvals":2},"fields":{"subject":{"action":"vault"}}}}`, 201)
	ts.do(t, "POST", "/v1/systems/loans/events", ts.root,
		`[{"type":"inference","model":{"name":"m","version":"1"},"payload":{"subject":"bob@example.com","output":0}}]`, 200)
	// Both systems share the domain "customers", so the pseudonym is the same one credit would write.
	lg, _ := ts.ledger.Log("loans")
	e, _ := lg.Entry(context.Background(), lg.Store().Size()-1)
	pt, _ := lg.OpenPayload(e)
	var stored struct{ Subject string }
	json.Unmarshal(pt, &stored)
	pn := stored.Subject

	a, b := ts.token(t, "dpo-a", RoleDPO, "loans"), ts.token(t, "dpo-b", RoleDPO, "")
	other := ts.token(t, "dpo-c", RoleDPO, "credit")
	body := ts.do(t, "POST", "/v1/systems/loans/reidentify", a, `{"pseudonyms":["`+pn+`"],"purpose":"court order 5"}`, 202)
	var rq ReidentifyResponse
	json.Unmarshal([]byte(body), &rq)
	if rq.State != "pending" || rq.Request == "" || len(rq.Values) != 0 {
		t.Fatalf("request = %s", body)
	}
	path := "/v1/reidentify/" + rq.Request
	ts.do(t, "GET", path, a, "", 200) // pending: no values yet
	if body := ts.do(t, "GET", path, a, "", 200); strings.Contains(body, "bob@") {
		t.Fatalf("values before approval: %s", body)
	}
	ts.do(t, "POST", path+"/approve", a, "", 403)     // not one's own request
	ts.do(t, "POST", path+"/approve", other, "", 403) // a dpo of another system
	ts.do(t, "GET", path, other, "", 403)
	if body := ts.do(t, "GET", path, b, "", 200); !strings.Contains(body, "court order 5") {
		t.Errorf("the approver cannot see the purpose: %s", body)
	}
	ts.do(t, "POST", path+"/approve", b, "", 200)
	ts.do(t, "POST", path+"/approve", b, "", 409)
	if body := ts.do(t, "GET", path, b, "", 200); strings.Contains(body, "bob@") {
		t.Errorf("the approver received the values: %s", body)
	}
	body = ts.do(t, "GET", path, a, "", 200)
	if !strings.Contains(body, `"bob@example.com"`) {
		t.Fatalf("collect = %s", body)
	}
	ts.do(t, "GET", path, a, "", 410)
	var actions []string
	for _, ev := range accessEvents(t, ts, "loans") {
		actions = append(actions, ev["actor"].(string)+":"+ev["action"].(string))
	}
	if strings.Join(actions, " ") != "dpo-a:reidentify_request dpo-b:reidentify_approve dpo-a:reidentify" {
		t.Errorf("access events = %v", actions)
	}

	// Erasure by value: afterwards the pseudonym can no longer be reversed.
	ts.do(t, "POST", "/v1/vault/erase", a, `{"domain":"customers","values":["bob@example.com"]}`, 403) // limited to a system
	if body := ts.do(t, "POST", "/v1/vault/erase", b, `{"domain":"customers","values":["bob@example.com"]}`, 200); body != "{\"erased\":1}\n" {
		t.Errorf("erase = %s", body)
	}
	one := ts.token(t, "dpo-one", RoleDPO, "credit")
	body = ts.do(t, "POST", "/v1/systems/credit/reidentify", one, `{"pseudonyms":["`+pn+`"],"purpose":"after erasure"}`, 200)
	if strings.Contains(body, "bob@") || !strings.Contains(body, "not_found") {
		t.Errorf("re-identification after erasure = %s", body)
	}
	// The erasure is in _admin, without the value.
	adm, _ := ts.ledger.Log("_admin")
	found := false
	for i := range adm.Store().Size() {
		e, _ = adm.Entry(context.Background(), i)
		env, _ := event.ParseEnvelope(e.Envelope)
		if !strings.Contains(string(env.Attrs), "vault_erased") {
			continue
		}
		found = true
		pt, _ = adm.OpenPayload(e)
		if env.Actor != "dpo-b" || strings.Contains(string(pt), "bob@") || !strings.Contains(string(env.Attrs), `"domain":"customers"`) {
			t.Errorf("erasure record: actor %s attrs %s payload %s", env.Actor, env.Attrs, pt)
		}
	}
	if !found {
		t.Error("no vault_erased record in _admin")
	}
}

func TestEraseRefusedUnderLegalHold(t *testing.T) {
	ts := newTestServer(t, Config{AuthFailures: -1})
	w := retention.NewWorker(retention.Config{Ledger: ts.ledger})
	ts.Server.cfg.Retention = w
	dpo := ts.token(t, "dpo", RoleDPO, "")
	if _, err := w.PlaceHold(context.Background(), "credit", retention.Hold{ID: "LIT-1"}, "dpo"); err != nil {
		t.Fatal(err)
	}
	// credit's policy pseudonymises into "customers": a hold on credit blocks erasure there, not elsewhere.
	if body := ts.do(t, "POST", "/v1/vault/erase", dpo, `{"domain":"customers","values":["x"]}`, 409); !strings.Contains(body, "credit/LIT-1") {
		t.Errorf("erase under hold = %s", body)
	}
	ts.do(t, "POST", "/v1/vault/erase", dpo, `{"domain":"other","values":["x"]}`, 200)
	if _, err := w.ReleaseHold(context.Background(), "credit", "LIT-1", "dpo"); err != nil {
		t.Fatal(err)
	}
	ts.do(t, "POST", "/v1/vault/erase", dpo, `{"domain":"customers","values":["x"]}`, 200)
}
