package api

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cairn-ai/cairn/internal/docgen"
	"github.com/cairn-ai/cairn/internal/signature"
)

// TestDocumentsAndGate: a generated document is answered with its digest and recorded; a signature over it is
// checked and recorded with it; a gate's result is recorded.
func TestDocumentsAndGate(t *testing.T) {
	ts := newTestServer(t, Config{})
	code, body, resp := ts.call(t, "POST", "/v1/systems/credit/documents", ts.root, `{"kind":"technical-documentation","format":"html"}`)
	if code != 200 || !strings.HasPrefix(body, "<!DOCTYPE html>") || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("generate: %d %s", code, body[:min(len(body), 200)])
	}
	digest, id := resp.Header.Get("Cairn-Document-Digest"), resp.Header.Get("Cairn-Document-Event")
	if digest != docgen.Digest([]byte(body)) || id == "" {
		t.Fatalf("digest header %s for a body of digest %s; event %q", digest, docgen.Digest([]byte(body)), id)
	}
	// Without "at", the document states the time of the log's latest event; asked again for that time, after more
	// events (its own document event among them), it is the same bytes.
	_, first, _ := ts.call(t, "POST", "/v1/systems/credit/documents", ts.root, `{"kind":"model-card","format":"json"}`)
	var d struct {
		At string `json:"at"`
	}
	json.Unmarshal([]byte(first), &d)
	ts.do(t, "POST", "/v1/systems/credit/events", ts.root, event1, 200)
	if again := ts.do(t, "POST", "/v1/systems/credit/documents", ts.root, `{"kind":"model-card","format":"json","at":"`+d.At+`"}`, 200); again != first {
		t.Errorf("regenerated at %s: different bytes", d.At)
	}
	// A time in the future, an unknown member, an unknown event for a reconstruction.
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	ts.do(t, "POST", "/v1/systems/credit/documents", ts.root, `{"kind":"model-card","at":"`+future+`"}`, 400)
	ts.do(t, "POST", "/v1/systems/credit/documents", ts.root, `{"kind":"model-card","colour":"red"}`, 400)
	ts.do(t, "POST", "/v1/systems/credit/documents", ts.root, `{"kind":"reconstruction","event":"999"}`, 422)

	priv := ed25519.NewKeyFromSeed(make([]byte, 32))
	key := signature.AuthorizedKey(priv.Public().(ed25519.PublicKey))
	sign := func(d string) string {
		b, _ := json.Marshal(map[string]string{"format": "ed25519", "signature": signature.SignEd25519(priv, d), "signer_key": key})
		return string(b)
	}
	path := "/v1/systems/credit/documents/" + id + "/signatures"
	ts.do(t, "POST", path, ts.root, sign("sha256:"+strings.Repeat("0", 64)), 422) // over another digest
	out := ts.do(t, "POST", path, ts.root, sign(digest), 201)
	if !strings.Contains(out, signature.Fingerprint(priv.Public().(ed25519.PublicKey))) {
		t.Errorf("signature answer: %s", out)
	}
	var found struct {
		Documents []struct {
			ID         string `json:"id"`
			Signatures []struct {
				Attrs map[string]string `json:"attrs"`
			} `json:"signatures"`
		} `json:"documents"`
	}
	json.Unmarshal([]byte(ts.do(t, "GET", "/v1/systems/credit/documents?digest="+digest, ts.root, "", 200)), &found)
	if len(found.Documents) != 1 || found.Documents[0].ID != id || len(found.Documents[0].Signatures) != 1 || found.Documents[0].Signatures[0].Attrs["signer_key"] != key {
		t.Errorf("found %+v", found)
	}

	out = ts.do(t, "POST", "/v1/systems/credit/gate/check?model_version=m@1", ts.root, "logging: {max_event_age: 1h}\nfield_policy: {}", 200)
	var res struct {
		Passed bool   `json:"passed"`
		Failed int    `json:"failed"`
		Event  string `json:"event"`
		Rules  []struct {
			Name   string `json:"name"`
			Passed bool   `json:"passed"`
		} `json:"rules"`
	}
	json.Unmarshal([]byte(out), &res)
	// Logging is active; the definition has no input schema, so field-policy coverage cannot be shown.
	if res.Passed || res.Failed != 1 || res.Event == "" || fmt.Sprint(res.Rules) != "[{logging/recent-event true} {logging/checkpoint true} {field-policy false}]" {
		t.Errorf("gate: %s", out)
	}
	ts.do(t, "POST", "/v1/systems/credit/gate/check", ts.root, "approval: {}", 400)
	// Without a policy in the request, the definition's gates member is the policy; it is checked when applied.
	ts.do(t, "POST", "/v1/systems/credit/gate/check?model_version=m@1", ts.root, "", 422)
	withGates := strings.TrimSuffix(credit, "}")
	ts.do(t, "POST", "/v1/systems", ts.root, withGates+`,"gates":{"approvals":{}}}`, 422)
	ts.do(t, "POST", "/v1/systems", ts.root, withGates+`,"gates":{"approval":{"environment":"prod"}}}`, 200)
	out = ts.do(t, "POST", "/v1/systems/credit/gate/check?model_version=m@1", ts.root, "", 200)
	if !strings.Contains(out, `"name":"approval"`) || !strings.Contains(out, "deployment_unapproved") {
		t.Errorf("gate with the definition's policy: %s", out)
	}
	ts.do(t, "POST", "/v1/systems/credit/gate/check?model_version=m@1", ts.root, "approvals: {}", 422)
}
