package api

import (
	"strings"
	"testing"
)

// TestRetentionFloorNeedsDPO: a schedule below a floor is refused without a legal basis, and with one unless the
// DPO it names applies it with the dpo role; then it is recorded with that DPO as the actor.
func TestRetentionFloorNeedsDPO(t *testing.T) {
	ts := newTestServer(t, Config{AuthFailures: -1})
	def := func(ret string) string {
		return `{"id":"chat","name":"Chat","intended_purpose":"support","provider":"Acme","retention":` + ret + `}`
	}
	dpoTok, err := ts.tokens.Create(Principal{Name: "dana", Roles: []string{RoleAdmin, RoleDPO}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		token, ret, field string
	}{
		{ts.root, `{"log":{"retain_months":3}}`, "/retention/log/retain_months"},
		{ts.root, `{"log":{"retain_months":3},"legal_basis":"Art. 26(10)","approved_by":"dana"}`, "/retention/approved_by"},
		{dpoTok, `{"log":{"retain_months":3},"legal_basis":"Art. 26(10)","approved_by":"someone-else"}`, "/retention/approved_by"},
		{ts.root, `{"log":{"retain_months":12,"archive_after_months":24}}`, "/retention/log/archive_after_months"},
	} {
		got, body, _ := ts.call(t, "POST", "/v1/systems", tc.token, def(tc.ret))
		if got != 422 || !strings.Contains(body, `"field":"`+tc.field+`"`) {
			t.Errorf("schedule %s = %d %s, want 422 at %s", tc.ret, got, body, tc.field)
		}
	}
	ts.do(t, "POST", "/v1/systems", dpoTok, def(`{"log":{"retain_months":3},"legal_basis":"Art. 26(10)","approved_by":"dana"}`), 201)
	ts.do(t, "POST", "/v1/systems", ts.root, def(`{"log":{"retain_months":6}}`), 200) // at the floor: no approval needed
	body := ts.do(t, "GET", "/v1/systems/chat/retention", dpoTok, "", 200)
	if !strings.Contains(body, `"retain_months":6`) || strings.Contains(body, `"pending_retain_months"`) {
		t.Errorf("report: %s", body)
	}
}

// TestRetentionRecordsAreServerOnly: a client cannot append a `retention` record (which verification trusts to
// account for destroyed entries).
func TestRetentionRecordsAreServerOnly(t *testing.T) {
	ts := newTestServer(t, Config{AuthFailures: -1})
	got, body, _ := ts.call(t, "POST", "/v1/systems/credit/events", ts.root,
		`[{"type":"retention","attrs":{"action":"destroyed","class":"log","month":"2026-01","count":1,"range_digest":"sha256:00","first_index":0,"last_index":1}}]`)
	if got != 422 || !strings.Contains(body, `"field":"/type"`) {
		t.Errorf("client retention record = %d %s, want 422 at /type", got, body)
	}
}
