package api

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-ai/cairn/internal/index"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/pseudo"
	"github.com/cairn-ai/cairn/internal/registry"
	"github.com/cairn-ai/cairn/internal/retention"
	"github.com/cairn-ai/cairn/internal/seal"
	"github.com/cairn-ai/cairn/internal/store/local"
	"github.com/cairn-ai/cairn/internal/vault"
)

// testServer is a server on a fresh data directory with the system "credit" registered and one event in it,
// followed by the query index.
type testServer struct {
	*Server
	srv    *httptest.Server
	tokens *Tokens
	path   string // of the token file
	root   string // an unscoped admin token
	vault  *vault.Vault
	reg    *registry.Registry
}

// vaultPutter gives the ledger the vault the test server's Config ends up with.
type vaultPutter struct{ cfg *Config }

func (v vaultPutter) Put(ctx context.Context, e []pseudo.VaultEntry) error {
	return v.cfg.Vault.Put(ctx, e)
}

func newTestServer(t *testing.T, cfg Config) *testServer {
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
	l, err := ledger.Open(context.Background(), ledger.Config{Origin: "test.example", CheckpointInterval: 5 * time.Millisecond,
		Vault: vaultPutter{&cfg}}, st, keys, sk)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	x, err := index.Open(filepath.Join(dir, "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{path: filepath.Join(dir, "tokens.json")}
	if ts.tokens, err = LoadTokens(ts.path); err != nil {
		t.Fatal(err)
	}
	ts.root = ts.token(t, "root", RoleAdmin, "")
	if cfg.Vault == nil {
		vk := make([]byte, vault.KeySize)
		rand.Read(vk)
		if cfg.Vault, err = vault.Open(filepath.Join(dir, "vault.db"), vk); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cfg.Vault.Close() })
	}
	ts.vault = cfg.Vault
	ts.Server = New(cfg, l, ts.tokens, LedgerIndex(x, l))
	ts.reg = registry.New(nil)
	ts.Server.SetRegistry(ts.reg)
	ts.srv = httptest.NewServer(ts.Server)
	t.Cleanup(ts.srv.Close)
	ts.do(t, "POST", "/v1/systems", ts.root, credit, 201)
	lg, _ := l.Log("credit")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	regDone := make(chan struct{})
	go func() { x.Follow(ctx, "credit", lg.Store(), lg.Committed()); close(done) }()
	go func() { ts.reg.Follow(ctx, "credit", lg.Store(), lg.Subscribe()); close(regDone) }()
	t.Cleanup(func() { cancel(); <-done; <-regDone; x.Close() })
	ts.do(t, "POST", "/v1/systems/credit/events", ts.root, event1, 200)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(2 * time.Millisecond) {
		if _, n := lg.Checkpoint(); n >= 2 && ts.reg.Watermark("credit") >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint")
		}
	}
	return ts
}

const (
	credit = `{"id":"credit","name":"Credit","intended_purpose":"scoring","provider":"Acme",
		"field_policy":{"domain":"customers","fields":{"subject":{"action":"vault"}}}}`
	event1 = `[{"type":"inference","model":{"name":"m","version":"1"},"payload":{"output":1}}]`
)

// token creates a token with one role ("" for none) limited to system ("" for every system).
func (ts *testServer) token(t *testing.T, name, role, system string) string {
	t.Helper()
	p := Principal{Name: name, Roles: []string{role}}
	if system != "" {
		p.Systems = []string{system}
	}
	tok, err := ts.tokens.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// call makes a request and returns the status, the body and the response.
func (ts *testServer) call(t *testing.T, method, path, token, body string) (int, string, *http.Response) {
	t.Helper()
	req, _ := http.NewRequest(method, ts.srv.URL+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp
}

func (ts *testServer) do(t *testing.T, method, path, token, body string, want int) string {
	t.Helper()
	got, b, _ := ts.call(t, method, path, token, body)
	if got != want {
		t.Fatalf("%s %s = %d %s, want %d", method, path, got, b, want)
	}
	return b
}

// access is who may use a route.
type access struct {
	role   string // "": open to anyone without a token
	scoped bool   // the route acts on the system in its path; a token limited to other systems is refused
	global bool   // the route acts beyond any one system; a token limited to some systems is refused
}

// matrixCase is one request to a route.
type matrixCase struct {
	access
	method string
	// path and body build the request; path may set up what the request needs (a token to revoke).
	path func(t *testing.T, ts *testServer) string
	body string
	// invalid: the request is malformed, so a caller who is allowed gets a 4xx (not 401 or 403) instead of a 2xx.
	invalid bool
}

func fixed(p string) func(*testing.T, *testServer) string {
	return func(*testing.T, *testServer) string { return p }
}

var (
	open    = access{}
	auditor = access{role: RoleAuditor, scoped: true}
	dpo     = access{role: RoleDPO, scoped: true}
)

var holdSeq atomic.Int64

// newHoldPath is the path of a hold with a fresh id (hold ids are never reused).
func newHoldPath(*testing.T, *testServer) string {
	return "/v1/systems/credit/retention/holds/H-" + strconv.FormatInt(holdSeq.Add(1), 10)
}

// matrix has at least one case for every route the server registers. The system in paths is "credit".
var matrix = map[string][]matrixCase{
	"GET /healthz":                  {{access: open, path: fixed("/healthz")}},
	"GET /readyz":                   {{access: open, path: fixed("/readyz")}},
	"GET /metrics":                  {{access: open, path: fixed("/metrics")}},
	"GET /openapi.yaml":             {{access: open, path: fixed("/openapi.yaml")}},
	"GET /logs/{system}/checkpoint": {{access: open, path: fixed("/logs/credit/checkpoint")}},
	"GET /logs/{system}/vkey":       {{access: open, path: fixed("/logs/credit/vkey")}},
	"GET /logs/{system}/tile/{path...}": {
		{access: open, path: fixed("/logs/credit/tile/0/000.p/2")},
		{access: auditor, path: fixed("/logs/credit/tile/entries/000.p/2")},
	},
	"POST /v1/systems":                 {{access: access{role: RoleAdmin}, body: credit, path: fixed("/v1/systems")}},
	"GET /v1/systems":                  {{access: access{role: RoleAuditor}, path: fixed("/v1/systems")}},
	"GET /v1/systems/{system}":         {{access: auditor, path: fixed("/v1/systems/credit")}},
	"POST /v1/systems/{system}/events": {{access: access{role: RoleIngest, scoped: true}, body: event1, path: fixed("/v1/systems/credit/events")}},
	"GET /v1/systems/{system}/events": {
		{access: auditor, path: fixed("/v1/systems/credit/events?type=inference")},
		{access: auditor, path: fixed("/v1/systems/credit/events?limit=0"), invalid: true},
	},
	"GET /v1/systems/{system}/events/{ref}":       {{access: auditor, path: fixed("/v1/systems/credit/events/1")}},
	"GET /v1/systems/{system}/proofs/inclusion":   {{access: auditor, path: fixed("/v1/systems/credit/proofs/inclusion?index=1&size=2")}},
	"GET /v1/systems/{system}/proofs/consistency": {{access: auditor, path: fixed("/v1/systems/credit/proofs/consistency?from=1&to=2")}},
	"POST /v1/tokens": {
		{access: access{role: RoleAdmin, global: true}, body: `{"principal":"new","roles":["ingest"],"systems":["credit"]}`, path: fixed("/v1/tokens")},
		{access: access{role: RoleAdmin, global: true}, body: `{"principal":"new","roles":["root"]}`, path: fixed("/v1/tokens"), invalid: true},
	},
	"POST /v1/systems/{system}/reidentify": {
		{access: access{role: RoleDPO, scoped: true}, body: `{"pseudonyms":["pn:x"],"purpose":"matrix"}`, path: fixed("/v1/systems/credit/reidentify")},
		{access: access{role: RoleDPO, scoped: true}, body: `{"pseudonyms":["pn:x"]}`, path: fixed("/v1/systems/credit/reidentify"), invalid: true},
	},
	"POST /v1/reidentify/{id}/approve": {{access: access{role: RoleDPO, scoped: true}, path: func(t *testing.T, ts *testServer) string {
		return pendingRequest(t, ts) + "/approve"
	}}},
	"GET /v1/reidentify/{id}": {{access: access{role: RoleDPO, scoped: true}, path: pendingRequest}},
	"POST /v1/vault/erase": {
		{access: access{role: RoleDPO, global: true}, body: `{"domain":"customers","pseudonyms":["pn:x"]}`, path: fixed("/v1/vault/erase")},
		{access: access{role: RoleDPO, global: true}, body: `{"domain":"customers"}`, path: fixed("/v1/vault/erase"), invalid: true},
	},
	"GET /v1/tokens":                     {{access: access{role: RoleAdmin, global: true}, path: fixed("/v1/tokens")}},
	"GET /v1/systems/{system}/retention": {{access: dpo, path: fixed("/v1/systems/credit/retention")}},
	"PUT /v1/systems/{system}/retention/holds/{id}": {
		{access: dpo, path: newHoldPath, body: `{"types":["inference"],"reason_ref":"INC-1"}`},
		{access: dpo, path: newHoldPath, body: `{"types":["no-such-type"]}`, invalid: true},
	},
	"DELETE /v1/systems/{system}/retention/holds/{id}": {{access: dpo, path: func(t *testing.T, ts *testServer) string {
		p := newHoldPath(t, ts)
		id := p[strings.LastIndexByte(p, '/')+1:]
		if _, err := retention.NewWorker(retention.Config{Ledger: ts.ledger}).PlaceHold(context.Background(), "credit", retention.Hold{ID: id}, "dpo"); err != nil {
			t.Fatal(err)
		}
		return p
	}}},
	"GET /v1/systems/{system}/models": {{access: auditor, path: fixed("/v1/systems/credit/models")}},
	"GET /v1/systems/{system}/models/{name}/versions/{version}/lineage": {
		{access: auditor, path: func(t *testing.T, ts *testServer) string {
			ts.registerModel(t)
			return "/v1/systems/credit/models/m/versions/1/lineage"
		}},
	},
	"GET /v1/systems/{system}/live": {
		{access: auditor, path: fixed("/v1/systems/credit/live?at=2026-11-29T12:00:00Z")},
		{access: auditor, path: fixed("/v1/systems/credit/live?at=yesterday"), invalid: true},
	},
	"POST /v1/systems/{system}/lifecycle/check": {
		{access: access{role: RoleIngest, scoped: true}, path: fixed("/v1/systems/credit/lifecycle/check"),
			body: `{"type":"deployment","model":{"name":"m","version":"1"},"deployment":"prod","attrs":{"action":"deployed"}}`},
		{access: access{role: RoleIngest, scoped: true}, path: fixed("/v1/systems/credit/lifecycle/check"), body: `{"type":"deployment"}`, invalid: true},
	},
	"GET /v1/systems/{system}/reconstruct/{ref}": {{access: auditor, path: fixed("/v1/systems/credit/reconstruct/1")}},
	"GET /v1/systems/{system}/export/{ref}":      {{access: auditor, path: fixed("/v1/systems/credit/export/1")}},
	"POST /v1/systems/{system}/documents": {
		{access: auditor, path: fixed("/v1/systems/credit/documents"), body: `{"kind":"model-card"}`},
		{access: auditor, path: fixed("/v1/systems/credit/documents"), body: `{"kind":"brochure"}`, invalid: true},
	},
	"GET /v1/systems/{system}/documents": {
		{access: auditor, path: fixed("/v1/systems/credit/documents?kind=model-card")},
		{access: auditor, path: fixed("/v1/systems/credit/documents?colour=red"), invalid: true},
	},
	"POST /v1/systems/{system}/documents/{id}/signatures": {
		// A signature that does not verify: refused after authorisation (the happy path is in cmd/cairn's docs.txtar).
		{access: access{role: RoleIngest, scoped: true}, invalid: true, body: `{"format":"ed25519","signature":"AAAA","signer_key":"AAAA"}`,
			path: func(t *testing.T, ts *testServer) string {
				_, _, resp := ts.call(t, "POST", "/v1/systems/credit/documents", ts.root, `{"kind":"model-card"}`)
				return "/v1/systems/credit/documents/" + resp.Header.Get("Cairn-Document-Event") + "/signatures"
			}},
	},
	"POST /v1/systems/{system}/gate/check": {
		{access: access{role: RoleIngest, scoped: true}, path: fixed("/v1/systems/credit/gate/check?model_version=m@1"), body: `approval: {}`},
		{access: access{role: RoleIngest, scoped: true}, path: fixed("/v1/systems/credit/gate/check?model_version=m@1"), body: `{}`, invalid: true},
	},
	"DELETE /v1/tokens/{id}": {{access: access{role: RoleAdmin, global: true}, path: func(t *testing.T, ts *testServer) string {
		_, ti, err := ts.tokens.Issue(Principal{Name: "victim", Roles: []string{RoleIngest}}, 0)
		if err != nil {
			t.Fatal(err)
		}
		return "/v1/tokens/" + ti.ID
	}}},
}

// pendingRequest makes a re-identification request of system credit by a dpo none of the matrix's callers is.
func pendingRequest(t *testing.T, ts *testServer) string {
	rq, err := ts.vault.CreateRequest(context.Background(), vault.Request{System: "credit", Requester: "dpo-elsewhere",
		Purpose: "matrix", Pseudonyms: []string{"pn:x"}, Approvals: 2})
	if err != nil {
		t.Fatal(err)
	}
	return "/v1/reidentify/" + rq.ID
}

// TestRoleRouteMatrix asks every route as every role, with a token for every system, one limited to the system
// in the path and one limited to another, and without a token.
func TestRoleRouteMatrix(t *testing.T) {
	ts := newTestServer(t, Config{AuthFailures: -1})
	for _, r := range routes {
		if len(matrix[r]) == 0 {
			t.Errorf("route %q has no row in the role × route matrix", r)
		}
	}
	for r := range matrix {
		if !slices.Contains(routes, r) {
			t.Errorf("the matrix has a row for %q, which the server does not serve", r)
		}
	}
	type caller struct{ role, scope string }
	callers := []caller{{"none", ""}}
	tokens := map[caller]string{}
	for _, role := range Roles {
		for _, scope := range []string{"all", "in", "out"} {
			c := caller{role, scope}
			callers = append(callers, c)
			sys := map[string]string{"all": "", "in": "credit", "out": "hiring"}[scope]
			tokens[c] = ts.token(t, role+"-"+scope, role, sys)
		}
	}
	for route, cases := range matrix {
		method, _, _ := strings.Cut(route, " ")
		for i, mc := range cases {
			for _, c := range callers {
				name := route + "#" + strconv.Itoa(i) + "/" + c.role + "-" + c.scope
				t.Run(name, func(t *testing.T) {
					path := mc.path(t, ts)
					got, body, _ := ts.call(t, method, path, tokens[c], mc.body)
					allowed := mc.role == "" ||
						c.role != "none" && (c.role == mc.role || c.role == RoleAdmin) &&
							!(mc.scoped && c.scope == "out") && !(mc.global && c.scope != "all")
					switch {
					case mc.role != "" && c.role == "none":
						if got != 401 {
							t.Errorf("%s %s without a token = %d %s, want 401", method, path, got, body)
						}
					case !allowed:
						if got != 403 {
							t.Errorf("%s %s as %s-%s = %d %s, want 403", method, path, c.role, c.scope, got, body)
						}
					case got == 401 || got == 403 || got >= 500:
						t.Errorf("%s %s as %s-%s = %d %s, want it allowed", method, path, c.role, c.scope, got, body)
					case mc.invalid && got/100 != 4:
						t.Errorf("%s %s as %s-%s = %d %s, want a validation 4xx", method, path, c.role, c.scope, got, body)
					case !mc.invalid && got/100 != 2:
						t.Errorf("%s %s as %s-%s = %d %s, want 2xx", method, path, c.role, c.scope, got, body)
					}
				})
			}
		}
	}
}

// registerModel records model m version 1 and waits until the registry has it.
func (ts *testServer) registerModel(t *testing.T) {
	t.Helper()
	ts.do(t, "POST", "/v1/systems/credit/events", ts.root, `[{"type":"model.version","model":{"name":"m","version":"1"},"attrs":{"digest_unknown":"test"}}]`, 200)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(2 * time.Millisecond) {
		if _, err := ts.reg.Lineage("credit", "m", "1"); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("registry did not follow")
		}
	}
}
