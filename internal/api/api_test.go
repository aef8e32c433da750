package api_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairn-ai/cairn/internal/api"
	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/index"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/seal"
	"github.com/cairn-ai/cairn/internal/store/local"
)

type fixture struct {
	srv            *httptest.Server
	ledger         *ledger.Ledger
	admin, ingest  string
	auditor, other string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	k := make([]byte, 32)
	rand.Read(k)
	kek, _ := seal.NewKEK(k)
	keys, _ := seal.OpenKeyring(filepath.Join(dir, "keys"), kek)
	_, sk, _ := ed25519.GenerateKey(rand.Reader)
	st, err := local.Open(dir, local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := ledger.Open(context.Background(), ledger.Config{Origin: "test.example", CheckpointInterval: 5 * time.Millisecond}, st, keys, sk)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	tokens, _ := api.LoadTokens(filepath.Join(dir, "tokens.json"))
	f := &fixture{ledger: l}
	f.admin, _ = tokens.Create(api.Principal{Name: "root", Roles: []string{api.RoleAdmin}})
	f.ingest, _ = tokens.Create(api.Principal{Name: "svc", Roles: []string{api.RoleIngest}, Systems: []string{"credit"}})
	f.auditor, _ = tokens.Create(api.Principal{Name: "aud", Roles: []string{api.RoleAuditor}})
	f.other, _ = tokens.Create(api.Principal{Name: "svc2", Roles: []string{api.RoleIngest}, Systems: []string{"hiring"}})
	f.srv = httptest.NewServer(api.New(api.Config{MaxBody: 1 << 16, Limits: event.Limits{MaxEvents: 100, MaxEventBytes: 4096, MaxRefs: 8}}, l, tokens, nil))
	t.Cleanup(f.srv.Close)
	f.do(t, "POST", "/v1/systems", f.admin, `{"id":"credit","name":"Credit","intended_purpose":"scoring","provider":"Acme"}`, 201)
	return f
}

func (f *fixture) do(t *testing.T, method, path, token, body string, want int) map[string]any {
	t.Helper()
	req, _ := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s = %d %s, want %d", method, path, resp.StatusCode, b, want)
	}
	if want >= 400 && resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("%s %s: error content type %q", method, path, resp.Header.Get("Content-Type"))
	}
	out := map[string]any{}
	json.Unmarshal(b, &out)
	return out
}

// waitCheckpoint polls the open checkpoint route until it covers size entries.
func (f *fixture) waitCheckpoint(t *testing.T, system string, size int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		resp, err := http.Get(f.srv.URL + "/logs/" + system + "/checkpoint")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		lines := strings.SplitN(string(b), "\n", 3)
		if resp.StatusCode == 200 && len(lines) > 1 {
			if n, err := strconv.Atoi(lines[1]); err == nil && n >= size {
				return
			}
		}
	}
	t.Fatalf("no checkpoint of size %d", size)
}

const good = `{"type":"inference","model":{"name":"m","version":"1"},"payload":{"subject":"Jane Roe","output":1}}`

func TestIngestAndRead(t *testing.T) {
	f := newFixture(t)
	out := f.do(t, "POST", "/v1/systems/credit/events", f.ingest, "["+good+","+good+"]", 200)
	evs := out["events"].([]any)
	if len(evs) != 2 || evs[0].(map[string]any)["index"].(float64) != 1 || evs[1].(map[string]any)["index"].(float64) != 2 {
		t.Fatalf("receipts = %v", evs)
	}
	out = f.do(t, "POST", "/v1/systems/credit/events", f.ingest, good+"\n"+good+"\n", 200)
	if len(out["events"].([]any)) != 2 {
		t.Fatalf("NDJSON receipts = %v", out)
	}
	f.waitCheckpoint(t, "credit", 5)
	ev := f.do(t, "GET", "/v1/systems/credit/events/1", f.auditor, "", 200)
	if ev["checkpoint"] == nil || ev["inclusion_proof"] == nil || ev["payload"] != nil {
		t.Errorf("event read = %v", ev)
	}
	if strings.Contains(ev["leaf"].(string)+string(mustJSON(ev["envelope"])), "Jane") {
		t.Errorf("a personal value appears in the envelope")
	}
	ev = f.do(t, "GET", "/v1/systems/credit/events/1?payload=true", f.auditor, "", 200)
	if !strings.Contains(string(mustJSON(ev["payload"])), "Jane Roe") {
		t.Errorf("payload = %v", ev["payload"])
	}
	// The payload read was recorded as an access event, by the auditor, before the answer.
	last := f.do(t, "GET", "/v1/systems/credit/events/5", f.auditor, "", 200)
	envl := last["envelope"].(map[string]any)
	if envl["type"] != "access" || envl["actor"] != "aud" {
		t.Errorf("access record = %v", envl)
	}
	f.do(t, "GET", "/v1/systems/credit/proofs/inclusion?index=1", f.auditor, "", 200)
	f.do(t, "GET", "/v1/systems/credit/proofs/consistency?from=1", f.auditor, "", 200)
	f.do(t, "GET", "/v1/systems", f.auditor, "", 200)
	f.do(t, "GET", "/v1/systems/credit", f.auditor, "", 200)
}

func mustJSON(v any) []byte { b, _ := json.Marshal(v); return b }

func TestProblems(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name, path, token, body string
		status                  int
		field                   string
		event                   float64
	}{
		{"malformed", "/v1/systems/credit/events", f.ingest, `[{"type":`, 422, "", 0},
		{"wrong type", "/v1/systems/credit/events", f.ingest, `[` + good + `,{"type":"inference","model":{"name":"m","version":1},"payload":{"output":1}}]`, 422, "/model/version", 1},
		{"missing field", "/v1/systems/credit/events", f.ingest, `[{"type":"inference","payload":{"output":1}}]`, 422, "/model", 0},
		{"unknown field", "/v1/systems/credit/events", f.ingest, `[{"type":"inference","model":{"name":"m","version":"1"},"payload":{"output":1},"name":"x"}]`, 422, "/name", 0},
		{"duplicate key", "/v1/systems/credit/events", f.ingest, `[{"type":"inference","type":"inference"}]`, 422, "", 0},
		{"oversized event", "/v1/systems/credit/events", f.ingest, `[{"type":"inference","model":{"name":"m","version":"1"},"payload":{"output":"` + strings.Repeat("a", 5000) + `"}}]`, 422, "", 0},
		{"oversized body", "/v1/systems/credit/events", f.ingest, strings.Repeat(" ", 1<<17), 413, "", -1},
		{"unknown system", "/v1/systems/nope/events", f.admin, `[` + good + `]`, 404, "", -1},
		{"no token", "/v1/systems/credit/events", "", `[` + good + `]`, 401, "", -1},
		{"bad token", "/v1/systems/credit/events", "cairn_nope", `[` + good + `]`, 401, "", -1},
		{"out of scope", "/v1/systems/credit/events", f.other, `[` + good + `]`, 403, "", -1},
		{"wrong role", "/v1/systems/credit/events", f.auditor, `[` + good + `]`, 403, "", -1},
		{"ingest cannot register", "/v1/systems", f.ingest, `{}`, 403, "", -1},
		{"bad definition", "/v1/systems", f.admin, `{"id":"x","name":"n"}`, 422, "/intended_purpose", -1},
		{"server-only type", "/v1/systems/credit/events", f.ingest, `[{"type":"system.updated"}]`, 422, "/type", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := f.do(t, "POST", tc.path, tc.token, tc.body, tc.status)
			if p["status"].(float64) != float64(tc.status) || p["title"] == "" {
				t.Errorf("problem = %v", p)
			}
			if tc.field != "" || tc.event >= 0 {
				errs, _ := p["errors"].([]any)
				if len(errs) != 1 {
					t.Fatalf("problem without the field at fault: %v", p)
				}
				e := errs[0].(map[string]any)
				if tc.field != "" && e["field"] != tc.field {
					t.Errorf("field = %v, want %s", e["field"], tc.field)
				}
				if tc.event >= 0 && e["event"] != tc.event {
					t.Errorf("event = %v, want %v", e["event"], tc.event)
				}
			}
		})
	}
	// Nothing of a rejected batch was stored: only the registration is in the log.
	sys := f.do(t, "GET", "/v1/systems/credit", f.auditor, "", 200)
	if sys["tree_size"].(float64) != 1 {
		t.Errorf("rejected requests changed the log: %v entries", sys["tree_size"])
	}
}

func TestOpenRoutes(t *testing.T) {
	f := newFixture(t)
	f.waitCheckpoint(t, "credit", 1)
	for _, p := range []string{"/healthz", "/readyz", "/metrics", "/logs/credit/checkpoint", "/logs/credit/vkey", "/logs/credit/tile/0/000.p/1", "/openapi.yaml"} {
		f.do(t, "GET", p, "", "", 200)
	}
	f.do(t, "GET", "/logs/credit/tile/entries/000.p/1", "", "", 401)
	f.do(t, "GET", "/logs/credit/tile/entries/000.p/1", f.auditor, "", 200)
	f.do(t, "GET", "/logs/credit/tile/0/000", "", "", 404)      // the full tile does not exist yet
	f.do(t, "GET", "/logs/credit/tile/0/0000.p/1", "", "", 404) // malformed
	f.do(t, "GET", "/logs/nope/checkpoint", "", "", 404)
}

func TestQuery(t *testing.T) {
	dir := t.TempDir()
	k := make([]byte, 32)
	rand.Read(k)
	kek, _ := seal.NewKEK(k)
	keys, _ := seal.OpenKeyring(filepath.Join(dir, "keys"), kek)
	_, sk, _ := ed25519.GenerateKey(rand.Reader)
	st, _ := local.Open(dir, local.Options{})
	l, err := ledger.Open(context.Background(), ledger.Config{Origin: "test.example"}, st, keys, sk)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	x, err := index.Open(filepath.Join(dir, "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	tokens, _ := api.LoadTokens(filepath.Join(dir, "tokens.json"))
	tok, _ := tokens.Create(api.Principal{Name: "root", Roles: []string{api.RoleAdmin}})
	f := &fixture{admin: tok}
	f.srv = httptest.NewServer(api.New(api.Config{}, l, tokens, api.LedgerIndex(x, l)))
	t.Cleanup(f.srv.Close)
	f.do(t, "POST", "/v1/systems", tok, `{"id":"credit","name":"Credit","intended_purpose":"scoring","provider":"Acme"}`, 201)
	lg, _ := l.Log("credit")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { x.Follow(ctx, "credit", lg.Store(), lg.Committed()); close(done) }()
	t.Cleanup(func() { cancel(); <-done; x.Close() })

	id := event.NewV7(time.Now()).String()
	body := `{"id":"` + id + `","type":"inference","model":{"name":"m","version":"2"},"deployment":"prod","payload":{"output":1}}` + "\n"
	for i := 0; i < 5; i++ {
		body += `{"type":"inference","model":{"name":"m","version":"1"},"deployment":"prod","payload":{"output":1}}` + "\n"
	}
	f.do(t, "POST", "/v1/systems/credit/events", tok, body, 200)
	var out map[string]any
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		out = f.do(t, "GET", "/v1/systems/credit/events?type=inference&model_version=1", tok, "", 200)
		if len(out["events"].([]any)) == 5 {
			break
		}
	}
	if got := len(out["events"].([]any)); got != 5 {
		t.Fatalf("query found %d events, want 5: %v", got, out)
	}
	page := f.do(t, "GET", "/v1/systems/credit/events?type=inference&limit=2", tok, "", 200)
	if len(page["events"].([]any)) != 2 || page["next_after"] == nil {
		t.Errorf("first page = %v", page)
	}
	byID := f.do(t, "GET", "/v1/systems/credit/events/"+id, tok, "", 200)
	if byID["index"].(float64) != 1 {
		t.Errorf("lookup by id = %v", byID["index"])
	}
	f.do(t, "GET", "/v1/systems/credit/events?from=yesterday", tok, "", 400)
	// Every query was recorded as an access event.
	n := 0
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && n < 3; time.Sleep(20 * time.Millisecond) {
		acc := f.do(t, "GET", "/v1/systems/credit/events?type=access", tok, "", 200)
		n = len(acc["events"].([]any))
	}
	if n < 3 {
		t.Errorf("%d access events recorded for the queries", n)
	}
}

func TestTokenAdministrationIsRecorded(t *testing.T) {
	f := newFixture(t)
	out := f.do(t, "POST", "/v1/tokens", f.admin, `{"principal":"Jane Roe (ops)","roles":["ingest"],"systems":["credit"]}`, 201)
	id := out["id"].(string)
	f.do(t, "DELETE", "/v1/tokens/"+id, f.admin, "", 204)
	var actions []string
	lg, _ := f.ledger.Log("_admin")
	fromFile := 0
	for i := range lg.Store().Size() {
		ev := f.do(t, "GET", fmt.Sprintf("/v1/systems/_admin/events/%d?payload=true", i), f.auditor, "", 200)
		envl := ev["envelope"].(map[string]any)
		if envl["type"] != "admin" {
			continue // the reads of this loop
		}
		attrs := envl["attrs"].(map[string]any)
		if attrs["token_id"] != id {
			// The fixture's tokens were written to the token file, not made through the API: the server
			// recorded them before they first authenticated.
			if envl["actor"] == "token-file" && attrs["action"] == "token_created" {
				fromFile++
			}
			continue
		}
		if envl["actor"] != "root" {
			t.Errorf("admin record %d = %v", i, envl)
		}
		if strings.Contains(string(mustJSON(envl)), "Jane Roe") {
			t.Errorf("the principal's name is in clear in the envelope")
		}
		if !strings.Contains(string(mustJSON(ev["payload"])), "Jane Roe") {
			t.Errorf("the principal is not in the sealed payload: %v", ev["payload"])
		}
		actions = append(actions, attrs["action"].(string))
	}
	if fromFile < 2 {
		t.Errorf("%d token-file creations recorded, want the fixture's tokens", fromFile)
	}
	if strings.Join(actions, ",") != "token_created,token_revoked" {
		t.Errorf("recorded actions %v", actions)
	}
}
