package api

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/cairn-ai/cairn/internal/docgen"
	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/gate"
	"github.com/cairn-ai/cairn/internal/registry"
	"github.com/cairn-ai/cairn/internal/signature"
)

// documentRoutes registers document generation, signatures and compliance gates (docs/documents.md,
// docs/gates.md).
func (s *Server) documentRoutes(m routeRecorder) {
	m.HandleFunc("POST /v1/systems/{system}/documents", s.generateDocument)
	m.HandleFunc("GET /v1/systems/{system}/documents", s.findDocuments)
	m.HandleFunc("POST /v1/systems/{system}/documents/{id}/signatures", s.signDocument)
	m.HandleFunc("POST /v1/systems/{system}/gate/check", s.gateCheck)
}

// DocumentRequest is the body of POST /documents.
type DocumentRequest struct {
	Kind         string `json:"kind"`
	ModelVersion string `json:"model_version,omitzero"`
	At           string `json:"at,omitzero"`
	Format       string `json:"format,omitzero"`
	From         string `json:"from,omitzero"`
	To           string `json:"to,omitzero"`
	Event        string `json:"event,omitzero"`
}

var contentTypes = map[string]string{
	docgen.FormatMarkdown: "text/markdown; charset=utf-8", docgen.FormatHTML: "text/html; charset=utf-8",
	docgen.FormatJSON: "application/json", docgen.FormatPDF: "application/pdf",
}

func (s *Server) generateDocument(w http.ResponseWriter, r *http.Request) {
	sys := r.PathValue("system")
	p := s.authorize(w, r, RoleAuditor, sys)
	if p == nil {
		return
	}
	lg, ok := s.log(w, r)
	if !ok {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil {
		writeError(w, err)
		return
	}
	var dr DocumentRequest
	if err := json.Unmarshal(body, &dr, json.RejectUnknownMembers(true)); err != nil {
		badRequest(w, "/", "a JSON object with kind, model_version, at, format, from, to, event")
		return
	}
	if !slices.Contains(docgen.Kinds, dr.Kind) {
		badRequest(w, "/kind", "one of the document kinds (docs/documents.md)")
		return
	}
	if dr.Format == "" {
		dr.Format = docgen.FormatMarkdown
	}
	if !slices.Contains(docgen.Formats, dr.Format) {
		badRequest(w, "/format", "md, html, json or pdf")
		return
	}
	req := docgen.Request{Kind: dr.Kind, ModelVersion: dr.ModelVersion, Event: dr.Event, At: time.Now().UTC()}
	for _, f := range []struct {
		name, v string
		dst     *time.Time
	}{{"/at", dr.At, &req.At}, {"/from", dr.From, &req.From}, {"/to", dr.To, &req.To}} {
		if f.v == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, f.v)
		if err != nil {
			badRequest(w, f.name, "an RFC 3339 time")
			return
		}
		*f.dst = t
	}
	if req.At.After(time.Now()) {
		badRequest(w, "/at", "not in the future: a document reflects the log as it stood")
		return
	}
	d, err := docgen.Generate(r.Context(), lg, s.ledger.VerifierKey(sys), req)
	switch {
	case errors.Is(err, docgen.ErrRequest):
		writeProblem(w, Problem{Status: http.StatusUnprocessableEntity, Detail: err.Error()})
		return
	case errors.Is(err, docgen.ErrEmpty):
		writeProblem(w, Problem{Status: http.StatusNotFound, Detail: err.Error()})
		return
	case err != nil:
		writeError(w, err)
		return
	}
	src := dr.Format
	if src == docgen.FormatPDF {
		src = docgen.FormatHTML
	}
	out, err := docgen.Render(d, src)
	if err != nil {
		writeError(w, err)
		return
	}
	digest := docgen.Digest(out)
	if dr.Format == docgen.FormatPDF {
		if out, err = docgen.PDF(r.Context(), out); errors.Is(err, docgen.ErrNoChromium) {
			writeProblem(w, Problem{Status: http.StatusNotImplemented, Detail: err.Error()})
			return
		} else if err != nil {
			writeError(w, err)
			return
		}
	}
	rc, err := s.ledger.AppendServer(r.Context(), sys, docgen.Event(d, dr.Format, digest), p.Name)
	if err != nil {
		writeError(w, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", contentTypes[dr.Format])
	h.Set("Cairn-Document-Digest", digest)
	h.Set("Cairn-Document-Event", rc.ID.String())
	h.Set("Cairn-Document-Index", strconv.FormatUint(rc.Index, 10))
	w.WriteHeader(http.StatusOK)
	w.Write(out)
}

// DocumentRecord is a recorded document with the signatures recorded for it.
type DocumentRecord struct {
	*registry.Node
	Signatures []*registry.Node `json:"signatures"`
}

func (s *Server) findDocuments(w http.ResponseWriter, r *http.Request) {
	p, sys, ok := s.registryFor(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	for name := range q {
		if name != "digest" && name != "kind" {
			badRequest(w, name, "not a query parameter (want digest, kind)")
			return
		}
	}
	digest, kind := q.Get("digest"), q.Get("kind")
	if digest == "" && kind == "" {
		badRequest(w, "digest", "give a digest or a kind")
		return
	}
	kinds := docgen.Kinds
	if kind != "" {
		kinds = []string{kind}
	}
	out := []DocumentRecord{}
	for _, k := range kinds {
		docs := s.registry.Documents(sys, k)
		for _, n := range docs {
			if n.Attr("signature") != "" || (digest != "" && n.Attr("digest") != digest) {
				continue
			}
			rec := DocumentRecord{Node: n, Signatures: []*registry.Node{}}
			for _, sg := range docs {
				if sg.Attr("signature") != "" && slices.Contains(sg.Refs, n.ID) {
					rec.Signatures = append(rec.Signatures, sg)
				}
			}
			out = append(out, rec)
		}
	}
	if err := s.recordQuery(r, sys, "documents", p); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"documents": out, "indexed": s.registry.Watermark(sys)})
}

// SignatureRequest is the body of POST /documents/{id}/signatures.
type SignatureRequest struct {
	Format    string `json:"format"`
	Signature string `json:"signature"`
	SignerKey string `json:"signer_key"`
}

func (s *Server) signDocument(w http.ResponseWriter, r *http.Request) {
	p, sys, ok := s.registryAs(w, r, RoleIngest)
	if !ok {
		return
	}
	id, err := event.ParseUUID(r.PathValue("id"))
	if err != nil {
		badRequest(w, "id", "the document event's id")
		return
	}
	doc, found := s.registry.Node(sys, id)
	if !found || doc.Type != "document" || doc.Attr("signature") != "" {
		writeProblem(w, Problem{Status: http.StatusNotFound, Detail: "no generated document with that event id"})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 16<<10))
	if err != nil {
		writeError(w, err)
		return
	}
	var sr SignatureRequest
	if err := json.Unmarshal(body, &sr, json.RejectUnknownMembers(true)); err != nil {
		badRequest(w, "/", "a JSON object with format, signature, signer_key")
		return
	}
	signed := docgen.Signed{Document: doc.ID, Kind: doc.Attr("kind"), Digest: doc.Attr("digest"), Format: sr.Format, Signature: sr.Signature, Key: sr.SignerKey}
	if doc.Model != nil {
		signed.Model = map[string]string{"name": doc.Model.Name, "version": doc.Model.Version}
	}
	raw, fp, err := docgen.SignatureEvent(signed)
	if err != nil {
		field := "/signature"
		if _, kerr := signature.ParsePublicKey(sr.SignerKey); kerr != nil {
			field = "/signer_key"
		}
		writeProblem(w, Problem{Status: http.StatusUnprocessableEntity, Detail: err.Error(), Errors: []ProblemField{{Field: field, Reason: err.Error()}}})
		return
	}
	rc, err := s.ledger.AppendServer(r.Context(), sys, raw, p.Name)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"id": rc.ID.String(), "index": rc.Index, "document": doc.ID, "digest": signed.Digest, "signer_fingerprint": fp})
}

func (s *Server) gateCheck(w http.ResponseWriter, r *http.Request) {
	p, sys, ok := s.registryAs(w, r, RoleIngest)
	if !ok {
		return
	}
	lg, _ := s.ledger.Log(sys)
	mv := r.URL.Query().Get("model_version")
	if mv == "" {
		badRequest(w, "model_version", "NAME@VERSION of the model version to check")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil {
		writeError(w, err)
		return
	}
	if len(bytes.TrimSpace(body)) == 0 {
		// No policy sent: the system definition's own gate policy.
		if cur := lg.Definition(); cur != nil && len(cur.Definition.Gates) > 0 {
			body = cur.Definition.Gates
		} else {
			writeProblem(w, Problem{Status: http.StatusUnprocessableEntity, Detail: "no policy: send one, or set gates in the system definition",
				Errors: []ProblemField{{Field: "policy", Reason: "missing"}}})
			return
		}
	}
	pol, digest, err := gate.ParsePolicy(body)
	if err != nil {
		writeProblem(w, Problem{Status: http.StatusUnprocessableEntity, Detail: err.Error(), Errors: []ProblemField{{Field: "policy", Reason: err.Error()}}})
		return
	}
	src := gate.Source{Log: lg, Registry: s.registry, VKey: s.ledger.VerifierKey(sys), Actor: p.Name}
	res, err := gate.Check(r.Context(), src, mv, pol, digest, time.Now())
	if err != nil {
		writeProblem(w, Problem{Status: http.StatusUnprocessableEntity, Detail: err.Error(), Errors: []ProblemField{{Field: "model_version", Reason: err.Error()}}})
		return
	}
	rc, err := s.ledger.AppendServer(r.Context(), sys, gate.Event(res), p.Name)
	if err != nil {
		writeError(w, err)
		return
	}
	res.Event, res.Index = rc.ID.String(), rc.Index
	writeJSON(w, http.StatusOK, res)
}

// validGates checks the gates member of a system definition as a gate policy, answering 422 when it is not one.
func validGates(w http.ResponseWriter, def []byte) bool {
	var d struct {
		Gates jsontext.Value `json:"gates"`
	}
	if json.Unmarshal(def, &d) != nil || len(d.Gates) == 0 {
		return true // the definition's own validation reports what is wrong with it
	}
	if _, _, err := gate.ParsePolicy(d.Gates); err != nil {
		writeProblem(w, Problem{Type: "https://cairn.dev/problems/invalid-definition", Title: "Invalid system definition", Status: http.StatusUnprocessableEntity,
			Detail: err.Error(), Errors: []ProblemField{{Field: "/gates", Reason: err.Error()}}})
		return false
	}
	return true
}
