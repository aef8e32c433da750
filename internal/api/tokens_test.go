package api

import (
	"encoding/json"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestTokenAdministration(t *testing.T) {
	ts := newTestServer(t, Config{AuthFailures: -1})
	var created TokenCreated
	b := ts.do(t, "POST", "/v1/tokens", ts.root, `{"principal":"svc","roles":["ingest"],"systems":["credit"],"expires_in":"720h"}`, 201)
	if err := json.Unmarshal([]byte(b), &created); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(created.Token, "cairn_") || !strings.HasPrefix(created.ID, "tok_") || created.Expires == nil ||
		created.Expires.Sub(created.Created) != 720*time.Hour || created.Name != "svc" {
		t.Errorf("created = %+v", created)
	}
	ts.do(t, "POST", "/v1/systems/credit/events", created.Token, event1, 200)

	// The token file and the list hold neither the token nor, in the list, its hash.
	file, _ := os.ReadFile(ts.path)
	list := ts.do(t, "GET", "/v1/tokens", ts.root, "", 200)
	if strings.Contains(string(file), created.Token) || strings.Contains(list, created.Token) || strings.Contains(list, "sha256") {
		t.Errorf("a token or its hash is exposed:\n%s\n%s", file, list)
	}
	if !strings.Contains(list, `"id":"`+created.ID+`"`) || !strings.Contains(list, `"state":"active"`) {
		t.Errorf("list = %s", list)
	}

	// A revoked, an expired and an unknown token get the same answer as none at all.
	_, unknown, _ := ts.call(t, "POST", "/v1/systems/credit/events", "cairn_nope", event1)
	ts.do(t, "DELETE", "/v1/tokens/"+created.ID, ts.root, "", 204)
	ts.do(t, "DELETE", "/v1/tokens/"+created.ID, ts.root, "", 204) // again: nothing changes
	_, revoked, _ := ts.call(t, "POST", "/v1/systems/credit/events", created.Token, event1)
	exp, _, err := ts.tokens.Issue(Principal{Name: "brief", Roles: []string{RoleIngest}}, time.Nanosecond)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Millisecond)
	_, expired, _ := ts.call(t, "POST", "/v1/systems/credit/events", exp, event1)
	if unknown != revoked || unknown != expired || !strings.Contains(unknown, `"status":401`) {
		t.Errorf("answers differ:\nunknown %s\nrevoked %s\nexpired %s", unknown, revoked, expired)
	}
	if list := ts.do(t, "GET", "/v1/tokens", ts.root, "", 200); !strings.Contains(list, `"state":"revoked"`) || !strings.Contains(list, `"state":"expired"`) {
		t.Errorf("list = %s", list)
	}
	ts.do(t, "DELETE", "/v1/tokens/tok_nothere", ts.root, "", 404)
}

func TestTokenRequestProblems(t *testing.T) {
	ts := newTestServer(t, Config{AuthFailures: -1})
	for _, tc := range []struct{ body, field string }{
		{`{"roles":["ingest"]}`, "/principal"},
		{`{"principal":"  ","roles":["ingest"]}`, "/principal"},
		{`{"principal":"a\u0007b","roles":["ingest"]}`, "/principal"},
		{`{"principal":"x"}`, "/roles"},
		{`{"principal":"x","roles":["ingest","root"]}`, "/roles/1"},
		{`{"principal":"x","roles":["ingest","ingest"]}`, "/roles/1"},
		{`{"principal":"x","roles":["ingest"],"systems":["Credit Scoring"]}`, "/systems/0"},
		{`{"principal":"x","roles":["ingest"],"expires_in":"soon"}`, "/expires_in"},
		{`{"principal":"x","roles":["ingest"],"expires_in":"-1h"}`, "/expires_in"},
		{`{"principal":"x","roles":["ingest"],"admin":true}`, "/admin"},
		{`{"principal":"x","roles":"ingest"}`, "/roles"},
		{`{"principal":"x","principal":"y","roles":["ingest"]}`, ""},
		{`{"principal":`, ""},
	} {
		got, b, resp := ts.call(t, "POST", "/v1/tokens", ts.root, tc.body)
		var p Problem
		json.Unmarshal([]byte(b), &p)
		if got != 422 || resp.Header.Get("Content-Type") != "application/problem+json" || len(p.Errors) != 1 || p.Errors[0].Field != tc.field {
			t.Errorf("%s: %d %s, want 422 naming %q", tc.body, got, b, tc.field)
		}
	}
	if n := len(ts.tokens.List()); n != 1 {
		t.Errorf("%d tokens after refused requests, want 1", n)
	}
}

func TestLastAdminToken(t *testing.T) {
	ts := newTestServer(t, Config{AuthFailures: -1})
	list := ts.tokens.List()
	ts.do(t, "DELETE", "/v1/tokens/"+list[0].ID, ts.root, "", 409)
	// An expired admin token does not count as one that could still administer.
	ts.tokens.Issue(Principal{Name: "old", Roles: []string{RoleAdmin}}, time.Nanosecond)
	time.Sleep(time.Millisecond)
	ts.do(t, "DELETE", "/v1/tokens/"+list[0].ID, ts.root, "", 409)
	second := ts.token(t, "second", RoleAdmin, "")
	ts.do(t, "DELETE", "/v1/tokens/"+list[0].ID, ts.root, "", 204)
	ts.do(t, "GET", "/v1/tokens", ts.root, "", 401)
	ts.do(t, "GET", "/v1/tokens", second, "", 200)
}

// TestRevokedElsewhere revokes a token through another handle on the token file, as `cairn token revoke` does
// next to a running server: the server must refuse it on the next request.
func TestRevokedElsewhere(t *testing.T) {
	ts := newTestServer(t, Config{AuthFailures: -1})
	tok, ti, _ := ts.tokens.Issue(Principal{Name: "svc", Roles: []string{RoleAuditor}}, 0)
	for range 3 { // warm whatever might cache it
		ts.do(t, "GET", "/v1/systems", tok, "", 200)
	}
	cli, err := LoadTokens(ts.path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Revoke(ti.ID); err != nil {
		t.Fatal(err)
	}
	ts.do(t, "GET", "/v1/systems", tok, "", 401)
	// A token created elsewhere works at once, and the server's own changes keep the other process's.
	tok2, _ := cli.Create(Principal{Name: "svc2", Roles: []string{RoleAuditor}})
	ts.do(t, "GET", "/v1/systems", tok2, "", 200)
	ts.token(t, "svc3", RoleIngest, "")
	if p := ts.tokens.Authenticate(tok); p != nil {
		t.Errorf("revoked token authenticates after a server-side change")
	}
	if p := ts.tokens.Authenticate(tok2); p == nil || p.Name != "svc2" {
		t.Errorf("token created elsewhere lost: %v", p)
	}
}

func TestAuthFailureLimit(t *testing.T) {
	ts := newTestServer(t, Config{AuthFailures: 5})
	now := time.Now()
	ts.failures.now = func() time.Time { return now }
	// from makes a request from a client address.
	from := func(addr, token string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", "/v1/systems", nil)
		req.RemoteAddr = addr
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		w := httptest.NewRecorder()
		ts.ServeHTTP(w, req)
		return w
	}
	const attacker = "192.0.2.7:40000"
	for i := range 5 {
		if w := from(attacker, "cairn_guess"+strconv.Itoa(i)); w.Code != 401 {
			t.Fatalf("failure %d = %d, want 401", i, w.Code)
		}
	}
	w := from(attacker, "cairn_guess")
	if w.Code != 429 || w.Header().Get("Retry-After") != "12" || !strings.Contains(w.Body.String(), `"status":429`) {
		t.Fatalf("over the limit = %d %q %s, want 429 with Retry-After 12", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	if w := from("192.0.2.7:40001", ""); w.Code != 429 {
		t.Errorf("no token from the same address = %d, want 429", w.Code)
	}
	// A valid token from the same address is never held back; other addresses and loopback are not affected.
	if w := from(attacker, ts.root); w.Code != 200 {
		t.Errorf("valid token from a limited address = %d, want 200", w.Code)
	}
	if w := from("198.51.100.1:1", "cairn_guess"); w.Code != 401 {
		t.Errorf("another address = %d, want 401", w.Code)
	}
	for range 10 {
		if w := from("127.0.0.1:5000", "cairn_guess"); w.Code != 401 {
			t.Fatalf("loopback = %d, want 401", w.Code)
		}
	}
	now = now.Add(12 * time.Second) // at 5 a minute, one failure every 12 s
	if w := from(attacker, "cairn_guess"); w.Code != 401 {
		t.Errorf("after refill = %d, want 401", w.Code)
	}
	if w := from(attacker, "cairn_guess"); w.Code != 429 {
		t.Errorf("after one refill spent = %d, want 429", w.Code)
	}
	m := ts.do(t, "GET", "/metrics", "", "", 200)
	if !strings.Contains(m, "cairn_auth_failures_total 20\n") || !strings.Contains(m, "cairn_auth_limited_total 3\n") {
		t.Errorf("metrics:\n%s", m)
	}
}

func TestFailLimiterBounded(t *testing.T) {
	l := newFailLimiter(1, 2)
	now := time.Now()
	l.now = func() time.Time { return now }
	for _, a := range []string{"a", "b", "c"} {
		if l.fail(a) != 0 {
			t.Fatalf("first failure of %s limited", a)
		}
	}
	if len(l.buckets) != 2 || l.buckets["a"] != nil {
		t.Fatalf("tracked %d addresses, oldest kept: %v", len(l.buckets), l.buckets["a"] != nil)
	}
	if l.fail("c") == 0 {
		t.Errorf("second failure of c not limited")
	}
	if l.fail("a") != 0 { // forgotten, so it starts afresh
		t.Errorf("evicted address still limited")
	}
}

func TestClientAddr(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		loopback bool
	}{
		{"192.0.2.1:4711", "192.0.2.1", false},
		{"[::ffff:192.0.2.1]:80", "192.0.2.1", false},
		{"[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2::/64", false},
		{"[2001:db8:1:2:ffff::1]:443", "2001:db8:1:2::/64", false},
		{"127.0.0.1:1", "127.0.0.1", true},
		{"[::1]:1", "::/64", true},
		{"not an address", "not an address", false},
	} {
		if got, lo := clientAddr(tc.in); got != tc.want || lo != tc.loopback {
			t.Errorf("clientAddr(%q) = %q, %v; want %q, %v", tc.in, got, lo, tc.want, tc.loopback)
		}
	}
}
