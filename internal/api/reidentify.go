package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode"

	jsonv2 "github.com/go-json-experiment/json"

	"github.com/cairn-ai/cairn/internal/canon"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/vault"
)

// Re-identification and erasure through the token vault. Every step that discloses or destroys is recorded in a
// log before it happens: a disclosure as an access event in the affected system's log, an erasure in _admin.

// ReidentifyRequest asks for the original values behind pseudonyms of one system.
type ReidentifyRequest struct {
	Pseudonyms []string `json:"pseudonyms"`
	Purpose    string   `json:"purpose"`
}

// ReidentifyResponse answers a re-identification: the values (canonical JSON, by pseudonym) and the pseudonyms the
// vault does not hold, or — when the system needs a second dpo's approval — the pending request.
type ReidentifyResponse struct {
	Request   string                     `json:"request,omitempty"`
	State     string                     `json:"state"`
	Approvals int                        `json:"approvals"`
	Values    map[string]json.RawMessage `json:"values,omitempty"`
	NotFound  []string                   `json:"not_found,omitempty"`
	// The request as its requester made it, shown to the dpo principals who may approve it.
	Requester  string   `json:"requester,omitempty"`
	Approver   string   `json:"approver,omitempty"`
	Purpose    string   `json:"purpose,omitempty"`
	Pseudonyms []string `json:"pseudonyms,omitempty"`
}

// EraseRequest asks the vault to forget subjects of one domain: by pseudonym, or by the original values (which are
// then used only to find the entries, and never recorded).
type EraseRequest struct {
	Domain     string            `json:"domain"`
	Pseudonyms []string          `json:"pseudonyms,omitempty"`
	Values     []json.RawMessage `json:"values,omitempty"`
}

const maxPseudonyms = 1000

func (s *Server) noVault(w http.ResponseWriter) bool {
	if s.cfg.Vault == nil {
		writeProblem(w, Problem{Status: http.StatusServiceUnavailable, Detail: "this server runs without a token vault"})
		return true
	}
	return false
}

// decodeStrict reads a JSON body of at most limit bytes into v, rejecting unknown members; on failure it answers a
// problem naming the member at fault (want says what a request holds) and returns false.
func decodeStrict(w http.ResponseWriter, r *http.Request, limit int64, v any, want string) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		writeError(w, err)
		return false
	}
	if err := jsonv2.Unmarshal(body, v, jsonv2.RejectUnknownMembers(true)); err != nil {
		field := ""
		var se *jsonv2.SemanticError
		if errors.As(err, &se) {
			field = string(se.JSONPointer)
		}
		writeError(w, &TokenFieldError{Field: field, Reason: "malformed request: want " + want})
		return false
	}
	return true
}

func checkPseudonyms(pns []string, required bool) error {
	if required && len(pns) == 0 {
		return &TokenFieldError{"/pseudonyms", "at least one pseudonym is required"}
	}
	if len(pns) > maxPseudonyms {
		return &TokenFieldError{"/pseudonyms", "at most 1000 pseudonyms per request"}
	}
	for i, pn := range pns {
		if !strings.HasPrefix(pn, "pn:") || len(pn) > 64 {
			return &TokenFieldError{"/pseudonyms/" + strconv.Itoa(i), "not a pseudonym (pn:…)"}
		}
	}
	return nil
}

func checkPurpose(p string) error {
	switch {
	case strings.TrimSpace(p) == "":
		return &TokenFieldError{"/purpose", "required: say why the subject must be re-identified"}
	case len(p) > 2000:
		return &TokenFieldError{"/purpose", "longer than 2000 bytes"}
	case strings.ContainsFunc(p, func(r rune) bool { return unicode.IsControl(r) && r != '\n' }):
		return &TokenFieldError{"/purpose", "contains a control character"}
	}
	return nil
}

func (s *Server) reidentify(w http.ResponseWriter, r *http.Request) {
	p, lg, ok := s.scoped(w, r, RoleDPO)
	if !ok || s.noVault(w) {
		return
	}
	sys := lg.Name()
	var req ReidentifyRequest
	if !decodeStrict(w, r, 1<<20, &req, "{pseudonyms, purpose}") {
		return
	}
	if err := checkPurpose(req.Purpose); err != nil {
		writeError(w, err)
		return
	}
	if err := checkPseudonyms(req.Pseudonyms, true); err != nil {
		writeError(w, err)
		return
	}
	d := lg.Definition()
	if d == nil || d.Policy == nil || !d.Policy.NeedsVault() {
		writeProblem(w, Problem{Status: http.StatusConflict, Detail: "this system's field policy vaults nothing, so nothing of it can be re-identified"})
		return
	}
	if n := d.Policy.Approvals(); n > 1 {
		rq, err := s.cfg.Vault.CreateRequest(r.Context(), vault.Request{System: sys, Requester: p.Name, Purpose: req.Purpose,
			Pseudonyms: req.Pseudonyms, Approvals: n})
		if err != nil {
			writeError(w, err)
			return
		}
		if err := s.recordAccess(r.Context(), sys, p.Name, "reidentify_request", map[string]any{
			"request": rq.ID, "purpose": req.Purpose, "pseudonyms": req.Pseudonyms}); err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusAccepted, ReidentifyResponse{Request: rq.ID, State: rq.State, Approvals: n})
		return
	}
	out, err := s.disclose(r.Context(), lg, p.Name, req.Pseudonyms, map[string]any{"purpose": req.Purpose, "pseudonyms": req.Pseudonyms})
	if err != nil {
		writeError(w, err)
		return
	}
	out.Approvals = 1
	writeJSON(w, http.StatusOK, out)
}

// disclose looks the pseudonyms up in the vault under the domains of the system's current policy, records the
// disclosure as an access event, and only then returns the values.
func (s *Server) disclose(ctx context.Context, lg *ledger.Log, actor string, pns []string, record map[string]any) (ReidentifyResponse, error) {
	d := lg.Definition()
	if d == nil || d.Policy == nil {
		return ReidentifyResponse{}, errors.New("the system has no field policy")
	}
	found, err := s.cfg.Vault.Lookup(ctx, d.Policy.Domains(), pns)
	if err != nil {
		return ReidentifyResponse{}, err
	}
	out := ReidentifyResponse{State: vault.Released, Values: map[string]json.RawMessage{}}
	for _, pn := range pns {
		if v, ok := found[pn]; ok {
			out.Values[pn] = v
		} else if !slices.Contains(out.NotFound, pn) {
			out.NotFound = append(out.NotFound, pn)
		}
	}
	record["found"] = len(out.Values)
	if err := s.recordAccess(ctx, lg.Name(), actor, "reidentify", record); err != nil {
		return ReidentifyResponse{}, err
	}
	return out, nil
}

// recordAccess appends an access event to a system's log; what the caller said (purpose, pseudonyms) goes in the
// sealed payload, never in the clear attributes.
func (s *Server) recordAccess(ctx context.Context, system, actor, action string, payload map[string]any) error {
	raw, _ := json.Marshal(map[string]any{"type": "access", "attrs": map[string]any{"action": action, "scope": "vault"}, "payload": payload})
	_, err := s.ledger.AppendServer(ctx, system, raw, actor)
	return err
}

// request loads a re-identification request and checks that the caller is a dpo of its system.
func (s *Server) request(w http.ResponseWriter, r *http.Request) (*Principal, vault.Request, bool) {
	p := s.authorize(w, r, RoleDPO, "")
	if p == nil || s.noVault(w) {
		return nil, vault.Request{}, false
	}
	rq, err := s.cfg.Vault.GetRequest(r.Context(), r.PathValue("id"))
	if errors.Is(err, vault.ErrNotFound) {
		writeProblem(w, Problem{Status: http.StatusNotFound, Detail: "no such re-identification request"})
		return nil, vault.Request{}, false
	}
	if err != nil {
		writeError(w, err)
		return nil, vault.Request{}, false
	}
	if !p.Can(RoleDPO, rq.System) {
		writeProblem(w, Problem{Status: http.StatusForbidden, Detail: "this token does not allow that"})
		return nil, vault.Request{}, false
	}
	return p, rq, true
}

func (s *Server) approveReidentify(w http.ResponseWriter, r *http.Request) {
	p, rq, ok := s.request(w, r)
	if !ok {
		return
	}
	if p.Name == rq.Requester {
		writeProblem(w, Problem{Status: http.StatusForbidden, Detail: "the second approval must come from another dpo principal"})
		return
	}
	if rq.State != vault.Pending {
		writeProblem(w, Problem{Status: http.StatusConflict, Detail: "the request is " + rq.State + ", not pending"})
		return
	}
	if err := s.recordAccess(r.Context(), rq.System, p.Name, "reidentify_approve", map[string]any{
		"request": rq.ID, "requester": rq.Requester, "purpose": rq.Purpose}); err != nil {
		writeError(w, err)
		return
	}
	moved, err := s.cfg.Vault.Transition(r.Context(), rq.ID, vault.Pending, vault.Approved, p.Name)
	if err != nil {
		writeError(w, err)
		return
	}
	if !moved {
		writeProblem(w, Problem{Status: http.StatusConflict, Detail: "the request was decided concurrently"})
		return
	}
	writeJSON(w, http.StatusOK, ReidentifyResponse{Request: rq.ID, State: vault.Approved, Approvals: rq.Approvals})
}

// collectReidentify shows a request to any dpo of its system — the second approver must see what they approve — and
// hands the values, once, to the requester after the approval.
func (s *Server) collectReidentify(w http.ResponseWriter, r *http.Request) {
	p, rq, ok := s.request(w, r)
	if !ok {
		return
	}
	if p.Name != rq.Requester || rq.State == vault.Pending {
		writeJSON(w, http.StatusOK, ReidentifyResponse{Request: rq.ID, State: rq.State, Approvals: rq.Approvals,
			Requester: rq.Requester, Approver: rq.Approver, Purpose: rq.Purpose, Pseudonyms: rq.Pseudonyms})
		return
	}
	if rq.State == vault.Released {
		writeProblem(w, Problem{Status: http.StatusGone, Detail: "the values were already collected; make a new request"})
		return
	}
	lg, err := s.ledger.Log(rq.System)
	if err != nil {
		writeError(w, err)
		return
	}
	// Claim the release first, so two collections cannot both disclose; give it back if the disclosure fails.
	moved, err := s.cfg.Vault.Transition(r.Context(), rq.ID, vault.Approved, vault.Released, "")
	if err != nil {
		writeError(w, err)
		return
	}
	if !moved {
		writeProblem(w, Problem{Status: http.StatusGone, Detail: "the values were already collected; make a new request"})
		return
	}
	out, err := s.disclose(r.Context(), lg, p.Name, rq.Pseudonyms, map[string]any{"request": rq.ID, "purpose": rq.Purpose,
		"pseudonyms": rq.Pseudonyms, "approver": rq.Approver})
	if err != nil {
		s.cfg.Vault.Transition(context.WithoutCancel(r.Context()), rq.ID, vault.Released, vault.Approved, "")
		writeError(w, err)
		return
	}
	out.Request, out.Approvals = rq.ID, rq.Approvals
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) eraseSubject(w http.ResponseWriter, r *http.Request) {
	p := s.authorizeEverywhere(w, r, RoleDPO)
	if p == nil || s.noVault(w) {
		return
	}
	var req EraseRequest
	if !decodeStrict(w, r, 1<<20, &req, "{domain, pseudonyms, values}") {
		return
	}
	if req.Domain == "" {
		writeError(w, &TokenFieldError{"/domain", "required"})
		return
	}
	if err := checkPseudonyms(req.Pseudonyms, false); err != nil {
		writeError(w, err)
		return
	}
	if len(req.Pseudonyms)+len(req.Values) == 0 {
		writeError(w, &TokenFieldError{"/pseudonyms", "name the subject by pseudonyms or values"})
		return
	}
	if len(req.Values) > maxPseudonyms {
		writeError(w, &TokenFieldError{"/values", "at most 1000 values per request"})
		return
	}
	values := make([][]byte, len(req.Values))
	for i, v := range req.Values {
		c, err := canon.Append(nil, v)
		if err != nil {
			writeError(w, &TokenFieldError{"/values/" + strconv.Itoa(i), "not strict JSON"})
			return
		}
		values[i] = c
	}
	// GDPR Art. 17(3): no erasure while a legal hold applies to a system whose policy pseudonymises into this domain
	// (the subject's events there are under the hold, and the vault is what makes them attributable).
	if held := s.heldSystems(r.Context(), req.Domain); len(held) > 0 {
		writeProblem(w, Problem{Status: http.StatusConflict, Detail: "a legal hold applies: " + strings.Join(held, ", ") +
			"; the subject cannot be erased until it is released"})
		return
	}
	// Recorded before anything is deleted; the values themselves are never recorded, only how many were given.
	raw, _ := json.Marshal(map[string]any{"type": "admin", "attrs": map[string]any{"action": "vault_erased", "domain": req.Domain},
		"payload": map[string]any{"pseudonyms": req.Pseudonyms, "values_given": len(values)}})
	if _, err := s.ledger.AppendServer(r.Context(), ledger.AdminLog, raw, p.Name); err != nil {
		writeError(w, err)
		return
	}
	n, err := s.cfg.Vault.Erase(r.Context(), req.Domain, req.Pseudonyms, values)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"erased": n})
}

// heldSystems names the active legal holds ("system/hold-id") of systems whose current field policy uses domain.
func (s *Server) heldSystems(ctx context.Context, domain string) []string {
	if s.cfg.Retention == nil {
		return nil
	}
	var systems []string
	for _, name := range s.ledger.Systems() {
		lg, err := s.ledger.Log(name)
		if err != nil {
			continue
		}
		if d := lg.Definition(); d != nil && d.Policy != nil && slices.Contains(d.Policy.Domains(), domain) {
			systems = append(systems, name)
		}
	}
	if len(systems) == 0 {
		return nil
	}
	rep, err := s.cfg.Retention.Report(ctx, systems...)
	if err != nil {
		return []string{"(retention state unreadable: " + err.Error() + ")"}
	}
	var held []string
	for _, sr := range rep.Systems {
		for _, h := range sr.Holds {
			if h.Released == nil {
				held = append(held, sr.System+"/"+h.ID)
			}
		}
	}
	return held
}
