package api

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/retention"
	"github.com/cairn-ai/cairn/internal/system"
)

// checkRetentionApproval holds a definition whose retention schedule goes below a floor to its approval: it must
// be applied by the DPO it names (approved_by), with a token carrying the dpo role itself (admin alone is not
// enough), so the approving principal is the recorded actor of the definition event.
func checkRetentionApproval(body []byte, p *Principal) error {
	d, _, err := system.Parse(body)
	if err != nil {
		return nil // Register reports it
	}
	s, err := retention.Parse(d.Retention)
	if err != nil {
		return err
	}
	if len(s.BelowFloor()) > 0 && (!slices.Contains(p.Roles, RoleDPO) || s.ApprovedBy != p.Name) {
		return &system.FieldError{Field: "/retention/approved_by", Reason: "a schedule below a floor must be applied by the approving DPO: a token with the dpo role for the principal named here"}
	}
	return nil
}

// retentionWorker returns the configured worker, or one that can only report (no keys, no archive).
func (s *Server) retentionWorker() *retention.Worker {
	if s.cfg.Retention != nil {
		return s.cfg.Retention
	}
	return retention.NewWorker(retention.Config{Ledger: s.ledger})
}

func (s *Server) retentionReport(w http.ResponseWriter, r *http.Request) {
	p, sys := s.authorizeDPO(w, r)
	if p == nil {
		return
	}
	rep, err := s.retentionWorker().Report(r.Context(), sys)
	if err != nil {
		writeError(w, err)
		return
	}
	if len(rep.Systems) == 0 { // the instance's own log is not subject to retention
		writeError(w, ledger.ErrUnknownSystem)
		return
	}
	writeJSON(w, http.StatusOK, rep.Systems[0])
}

// authorizeDPO authorizes a retention route on the system in the path: the dpo role, and a system that exists.
func (s *Server) authorizeDPO(w http.ResponseWriter, r *http.Request) (*Principal, string) {
	p, lg, ok := s.scoped(w, r, RoleDPO)
	if !ok {
		return nil, ""
	}
	return p, lg.Name()
}

// holdRequest is the body of PUT /v1/systems/{system}/retention/holds/{id}.
type holdRequest struct {
	Events    []string  `json:"events,omitempty"`
	From      time.Time `json:"from,omitzero"`
	To        time.Time `json:"to,omitzero"`
	Types     []string  `json:"types,omitempty"`
	ReasonRef string    `json:"reason_ref,omitempty"`
}

func (s *Server) placeHold(w http.ResponseWriter, r *http.Request) {
	p, sys := s.authorizeDPO(w, r)
	if p == nil {
		return
	}
	var req holdRequest
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err == nil && len(body) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		err = dec.Decode(&req)
	}
	if err != nil {
		writeError(w, &event.Error{Event: -1, Field: "/", Reason: "want a hold: {events, from, to, types, reason_ref}"})
		return
	}
	h := retention.Hold{ID: r.PathValue("id"), From: req.From, To: req.To, Types: req.Types, ReasonRef: req.ReasonRef}
	for i, e := range req.Events {
		u, err := event.ParseUUID(e)
		if err != nil {
			writeError(w, &event.Error{Event: -1, Field: "/events/" + strconv.Itoa(i), Reason: "not an event id"})
			return
		}
		h.Events = append(h.Events, u)
	}
	rc, err := s.retentionWorker().PlaceHold(r.Context(), sys, h, p.Name)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"hold": h.ID, "id": rc.ID.String(), "index": rc.Index})
}

func (s *Server) releaseHold(w http.ResponseWriter, r *http.Request) {
	p, sys := s.authorizeDPO(w, r)
	if p == nil {
		return
	}
	rc, err := s.retentionWorker().ReleaseHold(r.Context(), sys, r.PathValue("id"), p.Name)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"hold": r.PathValue("id"), "id": rc.ID.String(), "index": rc.Index})
}
