package api

import (
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cairn-ai/cairn/internal/audit"
	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/registry"
)

// SetRegistry gives the server the lineage registry that answers model, lineage, live and reconstruction
// requests; without one they answer 503.
func (s *Server) SetRegistry(r *registry.Registry) { s.registry = r }

// lifecycleRoutes registers the model lifecycle and audit routes.
func (s *Server) lifecycleRoutes(m routeRecorder) {
	m.HandleFunc("GET /v1/systems/{system}/models", s.listModels)
	m.HandleFunc("GET /v1/systems/{system}/models/{name}/versions/{version}/lineage", s.lineage)
	m.HandleFunc("GET /v1/systems/{system}/live", s.live)
	m.HandleFunc("POST /v1/systems/{system}/lifecycle/check", s.lifecycleCheck)
	m.HandleFunc("GET /v1/systems/{system}/reconstruct/{ref}", s.reconstruct)
	m.HandleFunc("GET /v1/systems/{system}/export/{ref}", s.export)
}

// registryFor authorises an auditor read of the system in the path and checks that the registry runs.
func (s *Server) registryFor(w http.ResponseWriter, r *http.Request) (*Principal, string, bool) {
	return s.registryAs(w, r, RoleAuditor)
}

// registryAs is registryFor for a caller holding role.
func (s *Server) registryAs(w http.ResponseWriter, r *http.Request, role string) (*Principal, string, bool) {
	p, lg, ok := s.scoped(w, r, role)
	if !ok {
		return nil, "", false
	}
	sys := lg.Name()
	if s.registry == nil {
		writeProblem(w, Problem{Status: http.StatusServiceUnavailable, Detail: "the lineage registry is not running"})
		return nil, "", false
	}
	// Answer on everything acknowledged before the request when the registry gets there within a moment; the
	// answer's "indexed" says how far it reflects the log otherwise.
	n, _ := lg.Tree()
	for deadline := time.Now().Add(2 * time.Second); s.registry.Watermark(sys) < n && time.Now().Before(deadline); {
		select {
		case <-r.Context().Done():
			return nil, "", false
		case <-time.After(5 * time.Millisecond):
		}
	}
	return p, sys, true
}

// recordQuery records a read of lifecycle facts as an access event before answering.
func (s *Server) recordQuery(r *http.Request, sys, scope string, p *Principal) error {
	raw := `{"type":"access","attrs":{"action":"query","scope":"` + scope + `"}}`
	_, err := s.ledger.AppendServer(r.Context(), sys, []byte(raw), p.Name)
	return err
}

func (s *Server) listModels(w http.ResponseWriter, r *http.Request) {
	p, sys, ok := s.registryFor(w, r)
	if !ok {
		return
	}
	vs, err := s.registry.Versions(sys)
	if err != nil && err != registry.ErrUnknown {
		writeError(w, err)
		return
	}
	if vs == nil {
		vs = []registry.VersionSummary{}
	}
	if err := s.recordQuery(r, sys, "models", p); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"versions": vs, "indexed": s.registry.Watermark(sys)})
}

func (s *Server) lineage(w http.ResponseWriter, r *http.Request) {
	p, sys, ok := s.registryFor(w, r)
	if !ok {
		return
	}
	l, err := s.registry.Lineage(sys, r.PathValue("name"), r.PathValue("version"))
	if err == registry.ErrUnknown {
		writeProblem(w, Problem{Status: http.StatusNotFound, Detail: "no such model version in the registry (it may lag ingest briefly)"})
		return
	}
	if err != nil {
		writeError(w, err)
		return
	}
	if err := s.recordQuery(r, sys, "lineage", p); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, l)
}

// LiveResponse answers GET /live: per environment, what was live at At.
type LiveResponse struct {
	At           string          `json:"at"`
	Environments []registry.Live `json:"environments"`
	Indexed      uint64          `json:"indexed"`
}

func (s *Server) live(w http.ResponseWriter, r *http.Request) {
	p, sys, ok := s.registryFor(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	for name := range q {
		if name != "at" && name != "environment" {
			badRequest(w, name, "not a query parameter (want at, environment)")
			return
		}
	}
	at := time.Now()
	if v := q.Get("at"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			badRequest(w, "at", "an RFC 3339 time")
			return
		}
		at = t
	}
	envs, n, err := s.registry.LiveAt(sys, at)
	if err != nil && err != registry.ErrUnknown {
		writeError(w, err)
		return
	}
	if env := q.Get("environment"); env != "" {
		envs = slices.DeleteFunc(envs, func(l registry.Live) bool { return l.Environment != env })
	}
	if envs == nil {
		envs = []registry.Live{}
	}
	if err := s.recordQuery(r, sys, "live", p); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, LiveResponse{At: at.UTC().Format(time.RFC3339Nano), Environments: envs, Indexed: n})
}

// CheckResponse answers a lifecycle check: whether the event would comply, and the rules it would break.
type CheckResponse struct {
	Compliant  bool     `json:"compliant"`
	Violations []string `json:"violations"`
}

// lifecycleCheck answers whether an event (typically a deployment), appended now by the caller, would comply
// with the system's lifecycle rules. Nothing is recorded: a gate records its own decision.
func (s *Server) lifecycleCheck(w http.ResponseWriter, r *http.Request) {
	p, lg, ok := s.scoped(w, r, RoleIngest)
	if !ok {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(s.cfg.Limits.MaxEventBytes)))
	if err != nil {
		writeError(w, err)
		return
	}
	ev, err := event.Parse(-1, body, time.Now(), s.cfg.Limits, false)
	if err != nil {
		writeError(w, err)
		return
	}
	vs := lg.CheckLifecycle(ev, p.Name)
	if vs == nil {
		vs = []string{}
	}
	writeJSON(w, http.StatusOK, CheckResponse{Compliant: len(vs) == 0, Violations: vs})
}

// refIndex resolves the {ref} path value (an index or an event id) to an index.
func (s *Server) refIndex(w http.ResponseWriter, r *http.Request, sys string) (uint64, bool) {
	ref := r.PathValue("ref")
	if idx, err := strconv.ParseUint(ref, 10, 64); err == nil {
		return idx, true
	}
	if _, err := event.ParseUUID(ref); err != nil {
		badRequest(w, "ref", "an event index or id")
		return 0, false
	}
	if s.index == nil {
		writeProblem(w, Problem{Status: http.StatusServiceUnavailable, Detail: "lookup by id needs the query index"})
		return 0, false
	}
	i, ok, err := s.index.ByID(r.Context(), sys, strings.ToLower(ref))
	if err != nil {
		writeError(w, err)
		return 0, false
	}
	if !ok {
		writeProblem(w, Problem{Status: http.StatusNotFound, Detail: "no event with that id is indexed (the index may lag ingest briefly)"})
		return 0, false
	}
	return i, true
}

func (s *Server) reconstructRef(w http.ResponseWriter, r *http.Request, export bool) (*audit.Reconstruction, []byte, bool) {
	p, sys, ok := s.registryFor(w, r)
	if !ok {
		return nil, nil, false
	}
	idx, ok := s.refIndex(w, r, sys)
	if !ok {
		return nil, nil, false
	}
	if lg, err := s.ledger.Log(sys); err != nil {
		writeError(w, err)
		return nil, nil, false
	} else if n, _ := lg.Tree(); idx >= n {
		writeProblem(w, Problem{Status: http.StatusNotFound, Detail: "no event at that index"})
		return nil, nil, false
	}
	rec, bundle, err := audit.Source{Ledger: s.ledger, Registry: s.registry}.Reconstruct(r.Context(), sys, idx, p.Name, export)
	if err == audit.ErrNotFollowed {
		w.Header().Set("Retry-After", "1")
		writeProblem(w, Problem{Status: http.StatusServiceUnavailable, Detail: err.Error()})
		return nil, nil, false
	}
	if err != nil {
		writeError(w, err)
		return nil, nil, false
	}
	return rec, bundle, true
}

// reconstruct answers the tabletop audit of one event: the event and its opened payload, the model version live
// when it ran with its lineage, the oversight of it, and a verified inclusion proof. The read is recorded first.
func (s *Server) reconstruct(w http.ResponseWriter, r *http.Request) {
	rec, _, ok := s.reconstructRef(w, r, false)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

// export answers the evidence bundle of a reconstruction (audit.BundleFormat), which `cairn verify bundle`
// checks offline. The export is recorded first.
func (s *Server) export(w http.ResponseWriter, r *http.Request) {
	_, bundle, ok := s.reconstructRef(w, r, true)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Disposition", `attachment; filename="cairn-bundle.json"`)
	w.Write(bundle)
}
