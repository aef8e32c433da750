// Package api serves Cairn over HTTP: the JSON API under /v1/ (bearer tokens, RFC 9457 problems), the C2SP
// tlog-tiles read API under /logs/, health, readiness and Prometheus metrics.
//
// It maps errors to HTTP statuses in exactly one place (writeError) and never puts a token, a key or a payload
// value in a log line or an error message.
package api

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/index"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/oidc"
	"github.com/cairn-ai/cairn/internal/registry"
	"github.com/cairn-ai/cairn/internal/retention"
	"github.com/cairn-ai/cairn/internal/vault"
)

//go:embed openapi.yaml
var openapiYAML []byte

// Config tunes the API.
type Config struct {
	// MaxBody is the largest request body accepted (default 64 MiB).
	MaxBody int64
	// Limits bound events per request and bytes per event.
	Limits event.Limits
	// OpenEntries serves entry bundles without a token (they reveal ids, types and times, not content).
	OpenEntries bool
	// AuthFailures is how many failed authentications one client address may make at once, and then per minute,
	// before it is answered 429 (default 20; negative: no limit). Requests with a valid token are never limited,
	// nor are loopback clients: behind a reverse proxy on the same host every client would share one address, and
	// one of them failing would lock out all (rate-limit at the proxy instead).
	AuthFailures int
	// AuthFailureAddrs bounds how many client addresses the failure limit tracks (default 10000); the least
	// recently failing address is forgotten first.
	AuthFailureAddrs int
	// OIDC, when set, accepts JWTs from the organisation's identity provider beside Cairn's own tokens.
	OIDC *OIDC
	// Vault is the token vault, for re-identification and erasure; nil: those routes answer 503.
	Vault *vault.Vault
	// Retention is the retention worker, for reports; nil: reports are built from the logs alone.
	Retention *retention.Worker
	Logger    *slog.Logger
}

// Server is the HTTP API.
type Server struct {
	cfg    Config
	ledger *ledger.Ledger
	tokens *Tokens
	index  Index
	mux    *http.ServeMux
	// registry answers lineage, live-at and reconstruction requests (SetRegistry); nil: they answer 503.
	registry *registry.Registry

	appended  atomic.Int64
	rejected  atomic.Int64
	authFails atomic.Int64
	limited   atomic.Int64
	failures  *failLimiter // nil: no limit
	bufs      sync.Pool
	tokenLog  sync.Mutex // serialises recording token changes in _admin
}

// Index answers queries; the SQLite follower implements it. It may be nil (queries then answer 503).
type Index interface {
	Lag(system string) (uint64, error)
	Watermark(system string) (uint64, error)
	Find(ctx context.Context, q index.Query) ([]index.Row, error)
	ByID(ctx context.Context, system, id string) (uint64, bool, error)
}

// New builds the API server.
func New(cfg Config, l *ledger.Ledger, t *Tokens, idx Index) *Server {
	if cfg.MaxBody == 0 {
		cfg.MaxBody = 64 << 20
	}
	if cfg.Limits.MaxEvents == 0 {
		cfg.Limits = event.DefaultLimits
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.AuthFailures == 0 {
		cfg.AuthFailures = 20
	}
	if cfg.AuthFailureAddrs <= 0 {
		cfg.AuthFailureAddrs = 10000
	}
	s := &Server{cfg: cfg, ledger: l, tokens: t, index: idx, mux: http.NewServeMux()}
	if cfg.AuthFailures > 0 {
		s.failures = newFailLimiter(cfg.AuthFailures, cfg.AuthFailureAddrs)
	}
	s.bufs.New = func() any { return new(bytes.Buffer) }
	m := routeRecorder{s.mux}
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	m.HandleFunc("GET /readyz", s.ready)
	m.HandleFunc("GET /metrics", s.metrics)
	m.HandleFunc("GET /openapi.yaml", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		w.Write(openapiYAML)
	})
	m.HandleFunc("GET /logs/{system}/checkpoint", s.checkpoint)
	m.HandleFunc("GET /logs/{system}/vkey", s.vkey)
	m.HandleFunc("GET /logs/{system}/tile/{path...}", s.tile)
	m.HandleFunc("POST /v1/systems", s.registerSystem)
	m.HandleFunc("GET /v1/systems", s.listSystems)
	m.HandleFunc("GET /v1/systems/{system}", s.getSystem)
	m.HandleFunc("POST /v1/systems/{system}/events", s.ingest)
	m.HandleFunc("GET /v1/systems/{system}/events", s.queryEvents)
	m.HandleFunc("GET /v1/systems/{system}/events/{ref}", s.getEvent)
	m.HandleFunc("GET /v1/systems/{system}/proofs/inclusion", s.inclusion)
	m.HandleFunc("GET /v1/systems/{system}/proofs/consistency", s.consistency)
	m.HandleFunc("POST /v1/tokens", s.createToken)
	m.HandleFunc("GET /v1/tokens", s.listTokens)
	m.HandleFunc("DELETE /v1/tokens/{id}", s.revokeToken)
	m.HandleFunc("POST /v1/systems/{system}/reidentify", s.reidentify)
	m.HandleFunc("POST /v1/reidentify/{id}/approve", s.approveReidentify)
	m.HandleFunc("GET /v1/reidentify/{id}", s.collectReidentify)
	m.HandleFunc("POST /v1/vault/erase", s.eraseSubject)
	m.HandleFunc("GET /v1/systems/{system}/retention", s.retentionReport)
	m.HandleFunc("PUT /v1/systems/{system}/retention/holds/{id}", s.placeHold)
	m.HandleFunc("DELETE /v1/systems/{system}/retention/holds/{id}", s.releaseHold)
	s.lifecycleRoutes(m)
	s.documentRoutes(m)
	if t != nil && l != nil { // nil for a server that only describes itself (tests of the OpenAPI document)
		if err := s.SyncTokenLog(context.Background()); err != nil {
			cfg.Logger.Error("recording token changes in _admin", "err", err)
		}
	}
	return s
}

// routes lists every registered pattern, so tests can hold the OpenAPI document to the code.
var routes []string

type routeRecorder struct{ *http.ServeMux }

func (r routeRecorder) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	if !slices.Contains(routes, pattern) {
		routes = append(routes, pattern)
	}
	r.ServeMux.HandleFunc(pattern, h)
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// authorize returns the caller if it holds role for system; otherwise it answers 401/403 and returns nil. A
// missing, unknown, revoked or expired token gets the same 401, or 429 once the client address has failed too often.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, role, system string) *Principal {
	if s.tokens.HasUnlogged() {
		if err := s.SyncTokenLog(r.Context()); err != nil {
			// Tokens whose creation is not recorded do not authenticate; every other one still does.
			s.cfg.Logger.Error("recording token changes in _admin", "err", err)
		}
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	tok = strings.TrimSpace(tok)
	var p *Principal
	switch {
	case !ok:
	case s.cfg.OIDC != nil && oidc.LooksLikeJWT(tok):
		var err error
		if p, err = s.cfg.OIDC.Authenticate(r.Context(), tok); err != nil {
			// Why a token was refused is for the operator, not the caller; it names no claim value.
			s.cfg.Logger.Info("identity provider token refused", "reason", err.Error())
		}
	default:
		p = s.tokens.Authenticate(tok)
	}
	if p == nil {
		s.authFails.Add(1)
		if addr, loopback := clientAddr(r.RemoteAddr); s.failures != nil && !loopback {
			if wait := s.failures.fail(addr); wait > 0 {
				s.limited.Add(1)
				w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
				writeProblem(w, Problem{Status: http.StatusTooManyRequests, Detail: "too many failed authentications from this address; retry later"})
				return nil
			}
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="cairn"`)
		writeProblem(w, Problem{Status: http.StatusUnauthorized, Detail: "a valid bearer token is required"})
		return nil
	}
	if !p.Can(role, system) {
		writeProblem(w, Problem{Status: http.StatusForbidden, Detail: "this token does not allow that"})
		return nil
	}
	return p
}

// authorizeEverywhere is authorize for actions that reach beyond any one system, such as token administration:
// a token limited to some systems may not take them, whatever its role.
func (s *Server) authorizeEverywhere(w http.ResponseWriter, r *http.Request, role string) *Principal {
	p := s.authorize(w, r, role, "")
	if p != nil && !p.CanEverywhere(role) {
		writeProblem(w, Problem{Status: http.StatusForbidden, Detail: "this token does not allow that"})
		return nil
	}
	return p
}

// scoped is the preamble of a route that acts on the system in its path: the caller must hold role there, and the
// system must exist. It has answered the request when ok is false.
func (s *Server) scoped(w http.ResponseWriter, r *http.Request, role string) (p *Principal, lg *ledger.Log, ok bool) {
	if p = s.authorize(w, r, role, r.PathValue("system")); p == nil {
		return nil, nil, false
	}
	if lg, ok = s.log(w, r); !ok {
		return nil, nil, false
	}
	return p, lg, true
}

func (s *Server) log(w http.ResponseWriter, r *http.Request) (*ledger.Log, bool) {
	lg, err := s.ledger.Log(r.PathValue("system"))
	if err != nil {
		writeError(w, err)
		return nil, false
	}
	return lg, true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

// ready answers 503 while any log has stopped after a failure (it then takes no appends until restarted).
func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	for _, name := range s.ledger.Systems() {
		if lg, err := s.ledger.Log(name); err == nil && lg.Broken() != nil {
			writeProblem(w, Problem{Status: http.StatusServiceUnavailable, Detail: "a log has stopped after a storage failure; see the server log"})
			return
		}
	}
	io.WriteString(w, "ready\n")
}

// --- tlog-tiles read API ---

func (s *Server) checkpoint(w http.ResponseWriter, r *http.Request) {
	lg, ok := s.log(w, r)
	if !ok {
		return
	}
	cp, _ := lg.Checkpoint()
	if cp == nil {
		writeProblem(w, Problem{Status: http.StatusNotFound, Detail: "no checkpoint published yet"})
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(cp)
}

func (s *Server) vkey(w http.ResponseWriter, r *http.Request) {
	lg, ok := s.log(w, r)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, s.ledger.VerifierKey(lg.Name())+"\n")
}

func (s *Server) tile(w http.ResponseWriter, r *http.Request) {
	lg, ok := s.log(w, r)
	if !ok {
		return
	}
	level, entries, n, width, err := ledger.ParseTilePath(r.PathValue("path"))
	if err != nil {
		writeProblem(w, Problem{Status: http.StatusNotFound, Detail: "malformed tile path"})
		return
	}
	var data []byte
	if entries {
		if !s.cfg.OpenEntries && s.authorize(w, r, RoleAuditor, lg.Name()) == nil {
			return
		}
		data, err = lg.EntryBundle(r.Context(), n, width)
	} else {
		data, err = lg.TileData(tlog.Tile{H: 8, L: level, N: n, W: width})
	}
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if width == 256 {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-store")
	}
	w.Write(data)
}

// --- systems ---

func (s *Server) registerSystem(w http.ResponseWriter, r *http.Request) {
	p := s.authorize(w, r, RoleAdmin, "")
	if p == nil {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		writeError(w, err)
		return
	}
	if err := checkRetentionApproval(body, p); err != nil {
		writeError(w, err)
		return
	}
	if !validGates(w, body) {
		return
	}
	idx, appended, err := s.ledger.Register(r.Context(), body, p.Name)
	if err != nil {
		writeError(w, err)
		return
	}
	var d struct {
		ID string `json:"id"`
	}
	json.Unmarshal(body, &d)
	lg, err := s.ledger.Log(d.ID)
	if err != nil {
		writeError(w, err)
		return
	}
	status := http.StatusOK
	if appended && idx == 0 {
		status = http.StatusCreated
	}
	writeJSON(w, status, s.systemJSON(lg, appended))
}

type systemResponse struct {
	ID         string          `json:"id"`
	Definition json.RawMessage `json:"definition"`
	Index      uint64          `json:"index"`
	Changed    *bool           `json:"changed,omitempty"`
	TreeSize   uint64          `json:"tree_size"`
	Origin     string          `json:"origin"`
	VKey       string          `json:"vkey"`
}

func (s *Server) systemJSON(lg *ledger.Log, changed bool) systemResponse {
	d := lg.Definition()
	n, _ := lg.Tree()
	out := systemResponse{ID: lg.Name(), TreeSize: n, Origin: s.ledger.Origin(lg.Name()), VKey: s.ledger.VerifierKey(lg.Name())}
	if d != nil {
		out.Definition, out.Index = d.Canonical, d.Index
	}
	out.Changed = &changed
	return out
}

func (s *Server) listSystems(w http.ResponseWriter, r *http.Request) {
	if s.authorize(w, r, RoleAuditor, "") == nil {
		return
	}
	var out []systemResponse
	for _, name := range s.ledger.Systems() {
		if lg, err := s.ledger.Log(name); err == nil {
			sr := s.systemJSON(lg, false)
			sr.Changed = nil
			out = append(out, sr)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"systems": out})
}

func (s *Server) getSystem(w http.ResponseWriter, r *http.Request) {
	_, lg, ok := s.scoped(w, r, RoleAuditor)
	if !ok {
		return
	}
	sr := s.systemJSON(lg, false)
	sr.Changed = nil
	writeJSON(w, http.StatusOK, sr)
}

// --- ingest ---

// IngestResponse answers an ingest request: one receipt per event, in request order.
type IngestResponse struct {
	Events []IngestReceipt `json:"events"`
}

// IngestReceipt is one event's id and leaf index.
type IngestReceipt struct {
	ID        string `json:"id"`
	Index     uint64 `json:"index"`
	Duplicate bool   `json:"duplicate,omitempty"`
}

func (s *Server) ingest(w http.ResponseWriter, r *http.Request) {
	p, lg, ok := s.scoped(w, r, RoleIngest)
	if !ok {
		return
	}
	sys := lg.Name()
	if lg.QueueFull() {
		// Push back before reading and preparing the body, so memory stays bounded under overload.
		writeError(w, ledger.ErrBusy)
		return
	}
	buf := s.bufs.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= 8<<20 {
			s.bufs.Put(buf)
		}
	}()
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, s.cfg.MaxBody)); err != nil {
		s.rejected.Add(1)
		writeError(w, err)
		return
	}
	now := time.Now()
	var items []*ledger.Prepared
	err := event.Split(buf.Bytes(), s.cfg.Limits, func(i int, raw []byte) error {
		ev, err := event.Parse(i, raw, now, s.cfg.Limits, false)
		if err != nil {
			return err
		}
		pr, err := lg.Prepare(ev, p.Name)
		if err != nil {
			if ee, ok := err.(*event.Error); ok {
				ee.Event, ee.ID = i, ev.ID.String()
			}
			return err
		}
		items = append(items, pr)
		return nil
	})
	if err != nil {
		s.rejected.Add(1)
		writeError(w, err)
		return
	}
	rs, err := lg.Append(r.Context(), items)
	if err != nil {
		var ce *ledger.ConflictError
		var ee *event.Error
		if !errors.Is(err, ledger.ErrBusy) && !errors.Is(err, ledger.ErrClosed) && !errors.As(err, &ce) && !errors.As(err, &ee) {
			s.cfg.Logger.Warn("append failed", "system", sys, "events", len(items), "err", err)
		}
		writeError(w, err)
		return
	}
	s.appended.Add(int64(len(rs)))
	out := IngestResponse{Events: make([]IngestReceipt, len(rs))}
	for i, rc := range rs {
		out.Events[i] = IngestReceipt{ID: rc.ID.String(), Index: rc.Index, Duplicate: rc.Duplicate}
	}
	writeJSON(w, http.StatusOK, out)
}

// --- reads and proofs ---

// EventResponse is an event with its leaf and its inclusion proof against the published checkpoint.
type EventResponse struct {
	Index      uint64          `json:"index"`
	Leaf       string          `json:"leaf"`
	LeafHash   string          `json:"leaf_hash"`
	Salt       string          `json:"salt,omitempty"`
	Envelope   json.RawMessage `json:"envelope,omitempty"`
	Payload    json.RawMessage `json:"payload,omitempty"`
	TreeSize   uint64          `json:"tree_size,omitempty"`
	Proof      []string        `json:"inclusion_proof,omitempty"`
	Checkpoint string          `json:"checkpoint,omitempty"`
}

func (s *Server) getEvent(w http.ResponseWriter, r *http.Request) {
	p, lg, ok := s.scoped(w, r, RoleAuditor)
	if !ok {
		return
	}
	sys := lg.Name()
	idx, ok := s.refIndex(w, r, sys)
	if !ok {
		return
	}
	e, err := lg.Entry(r.Context(), idx)
	if err != nil {
		writeError(w, err)
		return
	}
	leaf := e.AppendLeaf(nil)
	if f := r.URL.Query().Get("format"); f == "tlog-proof" {
		s.tlogProof(w, r, p, lg, e.ID.String(), idx, leaf)
		return
	} else if f != "" && f != "json" {
		badRequest(w, "format", "json (default) or tlog-proof")
		return
	}
	lh := tlog.RecordHash(leaf)
	out := EventResponse{Index: idx, Leaf: string(leaf), LeafHash: base64.StdEncoding.EncodeToString(lh[:])}
	if e.Envelope != nil {
		out.Envelope, out.Salt = e.Envelope, hex.EncodeToString(e.Salt[:])
	}
	if cp, n := lg.Checkpoint(); cp != nil && idx < n {
		proof, err := lg.InclusionProof(idx, n)
		if err == nil {
			out.TreeSize, out.Checkpoint = n, string(cp)
			for _, h := range proof {
				out.Proof = append(out.Proof, base64.StdEncoding.EncodeToString(h[:]))
			}
		}
	}
	// Every read is recorded before anything leaves: the envelope, and the payload when asked for.
	wantPayload := r.URL.Query().Get("payload") == "true" && e.Sealed != nil
	scope := "envelope"
	if wantPayload {
		scope = "payload"
	}
	if e.Envelope != nil {
		raw := fmt.Sprintf(`{"type":"access","refs":[%q],"attrs":{"action":"read","scope":%q}}`, e.ID.String(), scope)
		if _, err := s.ledger.AppendServer(r.Context(), sys, []byte(raw), p.Name); err != nil {
			writeError(w, err)
			return
		}
	}
	if wantPayload {
		pt, err := lg.OpenPayload(e)
		if err != nil {
			writeProblem(w, Problem{Status: http.StatusGone, Detail: "the payload cannot be opened: its key was destroyed or it was altered"})
			return
		}
		out.Payload = pt
	}
	writeJSON(w, http.StatusOK, out)
}

// tlogProof answers an event as a c2sp.org/tlog-proof@v1 file: its leaf (in "extra"), its inclusion path and the
// published checkpoint — what an auditor keeps to show offline, with the log's public key alone, that the event is
// in the log. The read is recorded like any other.
func (s *Server) tlogProof(w http.ResponseWriter, r *http.Request, p *Principal, lg *ledger.Log, id string, idx uint64, leaf []byte) {
	cp, n := lg.Checkpoint()
	if cp == nil || idx >= n {
		w.Header().Set("Retry-After", "1")
		writeProblem(w, Problem{Status: http.StatusConflict, Detail: "no published checkpoint covers this event yet; retry shortly"})
		return
	}
	path, err := lg.InclusionProof(idx, n)
	if err != nil {
		writeError(w, err)
		return
	}
	raw := fmt.Sprintf(`{"type":"access","refs":[%q],"attrs":{"action":"read","scope":"proof"}}`, id)
	if _, err := s.ledger.AppendServer(r.Context(), lg.Name(), []byte(raw), p.Name); err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write((&ledger.TlogProof{Extra: leaf, Index: idx, Proof: path, Checkpoint: cp}).Marshal())
}

// QueryResponse is a page of query results.
type QueryResponse struct {
	Events []QueryRow `json:"events"`
	// Next is the After value for the next page; absent on the last page.
	Next *uint64 `json:"next_after,omitempty"`
	// Indexed is how many entries of the log the index covered when it answered.
	Indexed uint64 `json:"indexed"`
}

// QueryRow is one event found by a query: its leaf facts and envelope facts, never its payload.
type QueryRow struct {
	Index        uint64 `json:"index"`
	ID           string `json:"id"`
	Type         string `json:"type"`
	Time         string `json:"time,omitempty"`
	Recorded     string `json:"recorded"`
	ModelName    string `json:"model_name,omitempty"`
	ModelVersion string `json:"model_version,omitempty"`
	Deployment   string `json:"deployment,omitempty"`
	Actor        string `json:"actor,omitempty"`
}

var queryParams = []string{"type", "from", "to", "recorded_from", "recorded_to", "model", "model_version", "deployment", "actor", "after", "limit"}

func (s *Server) queryEvents(w http.ResponseWriter, r *http.Request) {
	p, lg, ok := s.scoped(w, r, RoleAuditor)
	if !ok {
		return
	}
	sys := lg.Name()
	if s.index == nil {
		writeProblem(w, Problem{Status: http.StatusServiceUnavailable, Detail: "the query index is not running"})
		return
	}
	v := r.URL.Query()
	for name := range v {
		if !slices.Contains(queryParams, name) {
			badRequest(w, name, "not a query parameter (want "+strings.Join(queryParams, ", ")+")")
			return
		}
	}
	q := index.Query{System: lg.Name(), ModelName: v.Get("model"), ModelVersion: v.Get("model_version"),
		Deployment: v.Get("deployment"), Actor: v.Get("actor")}
	if t := v.Get("type"); t != "" {
		q.Types = strings.Split(t, ",")
	}
	for _, f := range []struct {
		name string
		dst  *time.Time
	}{{"from", &q.From}, {"to", &q.To}, {"recorded_from", &q.RecordedFrom}, {"recorded_to", &q.RecordedTo}} {
		if s := v.Get(f.name); s != "" {
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				badRequest(w, f.name, "an RFC 3339 time")
				return
			}
			*f.dst = t
		}
	}
	if a := v.Get("after"); a != "" {
		n, err := strconv.ParseUint(a, 10, 64)
		if err != nil {
			badRequest(w, "after", "an event index")
			return
		}
		q.After, q.HasAfter = n, true
	}
	q.Limit = 100
	if l := v.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 10000 {
			badRequest(w, "limit", "a number from 1 to 10000")
			return
		}
		q.Limit = n
	}
	indexed, _ := s.index.Watermark(sys)
	rows, err := s.index.Find(r.Context(), q)
	if err != nil {
		writeError(w, err)
		return
	}
	// The query is a read of the log: record it before answering. Its parameters are the client's words, so
	// they go in the sealed payload, not in the envelope's clear attributes.
	params := map[string]string{}
	for name := range v {
		params[name] = v.Get(name)
	}
	raw, _ := json.Marshal(map[string]any{"type": "access", "attrs": map[string]any{"action": "query", "scope": "events"}, "payload": map[string]any{"query": params}})
	if _, err := s.ledger.AppendServer(r.Context(), sys, raw, p.Name); err != nil {
		writeError(w, err)
		return
	}
	out := QueryResponse{Events: make([]QueryRow, len(rows)), Indexed: indexed}
	for i, row := range rows {
		qr := QueryRow{Index: row.Index, ID: row.ID, Type: row.Type, Recorded: row.Recorded.UTC().Format(time.RFC3339Nano),
			ModelName: row.ModelName, ModelVersion: row.ModelVersion, Deployment: row.Deployment, Actor: row.Actor}
		if !row.Time.IsZero() {
			qr.Time = row.Time.UTC().Format(time.RFC3339Nano)
		}
		out.Events[i] = qr
	}
	if len(rows) == q.Limit {
		last := rows[len(rows)-1].Index
		out.Next = &last
	}
	writeJSON(w, http.StatusOK, out)
}

func queryUint(r *http.Request, name string) (uint64, bool) {
	v, err := strconv.ParseUint(r.URL.Query().Get(name), 10, 64)
	return v, err == nil
}

func (s *Server) inclusion(w http.ResponseWriter, r *http.Request) {
	_, lg, ok := s.scoped(w, r, RoleAuditor)
	if !ok {
		return
	}
	idx, ok1 := queryUint(r, "index")
	n, ok2 := queryUint(r, "size")
	if !ok1 {
		badRequest(w, "index", "a leaf index is required")
		return
	}
	if !ok2 {
		_, n = lg.Checkpoint()
	}
	proof, err := lg.InclusionProof(idx, n)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"index": idx, "tree_size": n, "proof": hashes(proof)})
}

func (s *Server) consistency(w http.ResponseWriter, r *http.Request) {
	_, lg, ok := s.scoped(w, r, RoleAuditor)
	if !ok {
		return
	}
	from, ok1 := queryUint(r, "from")
	to, ok2 := queryUint(r, "to")
	if !ok1 {
		badRequest(w, "from", "the older tree size is required")
		return
	}
	if !ok2 {
		_, to = lg.Checkpoint()
	}
	proof, err := lg.ConsistencyProof(from, to)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"from": from, "to": to, "proof": hashes(proof)})
}

func hashes[H ~[]tlog.Hash](hs H) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = base64.StdEncoding.EncodeToString(h[:])
	}
	return out
}

// --- tokens ---

// TokenRequest asks for a new token. ExpiresIn is a Go duration ("720h"); absent, the token does not expire.
type TokenRequest struct {
	Principal string   `json:"principal"`
	Roles     []string `json:"roles"`
	Systems   []string `json:"systems,omitempty"`
	ExpiresIn string   `json:"expires_in,omitempty"`
}

// TokenCreated answers a token request: the token, shown this once, and its description.
type TokenCreated struct {
	Token string `json:"token"`
	TokenInfo
}

// TokenListItem describes a token and whether it authenticates now.
type TokenListItem struct {
	TokenInfo
	State string `json:"state"`
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) {
	admin := s.authorizeEverywhere(w, r, RoleAdmin)
	if admin == nil {
		return
	}
	var req TokenRequest
	if !decodeStrict(w, r, 64<<10, &req, "{principal, roles, systems, expires_in}") {
		return
	}
	var ttl time.Duration
	var err error
	if req.ExpiresIn != "" {
		if ttl, err = time.ParseDuration(req.ExpiresIn); err != nil || ttl <= 0 {
			writeError(w, &TokenFieldError{Field: "/expires_in", Reason: "a positive duration such as 720h"})
			return
		}
	}
	s.tokenLog.Lock() // so that SyncTokenLog cannot record this token as a change through the file
	defer s.tokenLog.Unlock()
	tok, ti, err := s.tokens.Issue(Principal{Name: req.Principal, Roles: req.Roles, Systems: req.Systems}, ttl)
	if err != nil {
		writeError(w, err)
		return
	}
	// Recorded in the instance's own log before the token is handed out; a token that cannot be recorded is
	// withdrawn.
	if err := s.recordAdmin(r, admin, "token_created", ti); err != nil {
		s.tokens.Revoke(ti.ID)
		writeError(w, err)
		return
	}
	s.cfg.Logger.Info("token created", "id", ti.ID, "roles", ti.Roles)
	writeJSON(w, http.StatusCreated, TokenCreated{Token: tok, TokenInfo: ti})
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) {
	if s.authorizeEverywhere(w, r, RoleAdmin) == nil {
		return
	}
	now := time.Now()
	out := []TokenListItem{}
	for _, ti := range s.tokens.List() {
		out = append(out, TokenListItem{TokenInfo: ti, State: ti.State(now)})
	}
	writeJSON(w, http.StatusOK, map[string]any{"tokens": out})
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request) {
	admin := s.authorizeEverywhere(w, r, RoleAdmin)
	if admin == nil {
		return
	}
	s.tokenLog.Lock()
	defer s.tokenLog.Unlock()
	ti, err := s.tokens.Revoke(r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	if err := s.recordAdmin(r, admin, "token_revoked", ti); err != nil {
		writeError(w, err)
		return
	}
	s.cfg.Logger.Info("token revoked", "id", ti.ID)
	w.WriteHeader(http.StatusNoContent)
}

// SyncTokenLog records in _admin the token changes made through the token file (by `cairn token`, or the first
// start's admin token) that it does not hold yet. A created token authenticates only once recorded.
func (s *Server) SyncTokenLog(ctx context.Context) error {
	s.tokenLog.Lock()
	defer s.tokenLog.Unlock()
	for _, c := range s.tokens.Unlogged() {
		actor := c.By
		if actor == "" {
			actor = "token-file"
		}
		if err := s.recordTokenChange(ctx, actor, c.Action, c.Info); err != nil {
			return err
		}
		if err := s.tokens.MarkLogged(c); err != nil {
			return err
		}
	}
	return nil
}

// recordAdmin appends a token administration event to the _admin log; the token's principal goes in the sealed
// payload, since a principal may name a person.
func (s *Server) recordAdmin(r *http.Request, admin *Principal, action string, ti TokenInfo) error {
	if err := s.recordTokenChange(r.Context(), admin.Name, action, ti); err != nil {
		return err
	}
	return s.tokens.MarkLogged(TokenChange{Action: action, Info: ti})
}

func (s *Server) recordTokenChange(ctx context.Context, actor, action string, ti TokenInfo) error {
	attrs := map[string]any{"action": action, "token_id": ti.ID, "roles": ti.Roles}
	if len(ti.Systems) > 0 {
		attrs["systems"] = ti.Systems
	}
	if ti.Expires != nil {
		attrs["expires"] = ti.Expires.UTC().Format(time.RFC3339)
	}
	raw, _ := json.Marshal(map[string]any{"type": "admin", "attrs": attrs, "payload": map[string]any{"principal": ti.Principal.Name}})
	_, err := s.ledger.AppendServer(ctx, ledger.AdminLog, raw, actor)
	return err
}

// --- metrics ---

func (s *Server) metrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	var b strings.Builder
	fmt.Fprintf(&b, "# HELP cairn_events_appended_total Events acknowledged through the API.\n# TYPE cairn_events_appended_total counter\ncairn_events_appended_total %d\n", s.appended.Load())
	fmt.Fprintf(&b, "# HELP cairn_requests_rejected_total Ingest requests rejected as invalid.\n# TYPE cairn_requests_rejected_total counter\ncairn_requests_rejected_total %d\n", s.rejected.Load())
	fmt.Fprintf(&b, "# HELP cairn_auth_failures_total Requests with a missing or unknown token.\n# TYPE cairn_auth_failures_total counter\ncairn_auth_failures_total %d\n", s.authFails.Load())
	fmt.Fprintf(&b, "# HELP cairn_auth_limited_total Failed authentications answered 429 because their address failed too often.\n# TYPE cairn_auth_limited_total counter\ncairn_auth_limited_total %d\n", s.limited.Load())
	b.WriteString("# HELP cairn_log_size Entries in each log.\n# TYPE cairn_log_size gauge\n")
	systems := s.ledger.Systems()
	for _, name := range systems {
		if lg, err := s.ledger.Log(name); err == nil {
			n, _ := lg.Tree()
			fmt.Fprintf(&b, "cairn_log_size{system=%q} %d\n", name, n)
		}
	}
	b.WriteString("# HELP cairn_log_queue Events waiting to be sequenced.\n# TYPE cairn_log_queue gauge\n")
	for _, name := range systems {
		if lg, err := s.ledger.Log(name); err == nil {
			fmt.Fprintf(&b, "cairn_log_queue{system=%q} %d\n", name, lg.QueueLength())
		}
	}
	b.WriteString("# HELP cairn_checkpoint_size Tree size of the latest published checkpoint.\n# TYPE cairn_checkpoint_size gauge\n")
	for _, name := range systems {
		if lg, err := s.ledger.Log(name); err == nil {
			_, n := lg.Checkpoint()
			fmt.Fprintf(&b, "cairn_checkpoint_size{system=%q} %d\n", name, n)
		}
	}
	if s.index != nil {
		b.WriteString("# HELP cairn_index_lag Entries not yet in the query index.\n# TYPE cairn_index_lag gauge\n")
		for _, name := range systems {
			if lag, err := s.index.Lag(name); err == nil {
				fmt.Fprintf(&b, "cairn_index_lag{system=%q} %d\n", name, lag)
			}
		}
	}
	io.WriteString(w, b.String())
}

// LedgerIndex serves queries from the SQLite index x and measures its lag against the ledger's logs.
func LedgerIndex(x *index.Index, l *ledger.Ledger) Index { return ledgerIndex{x, l} }

type ledgerIndex struct {
	*index.Index
	l *ledger.Ledger
}

func (a ledgerIndex) Lag(system string) (uint64, error) {
	lg, err := a.l.Log(system)
	if err != nil {
		return 0, err
	}
	w, err := a.Watermark(system)
	if err != nil {
		return 0, err
	}
	n, _ := lg.Tree()
	if w > n {
		return 0, nil
	}
	return n - w, nil
}
