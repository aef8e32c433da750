package docgen

import (
	"encoding/json"
	"fmt"

	"github.com/cairn-ai/cairn/internal/signature"
)

// Recorded is what the log holds of a generated document: the document event's attributes.
type Recorded struct {
	Kind           string `json:"kind"`
	Digest         string `json:"digest"`
	Format         string `json:"format"`
	At             string `json:"at"`
	CheckpointSize uint64 `json:"checkpoint_size"`
	PeriodFrom     string `json:"period_from,omitempty"`
	PeriodTo       string `json:"period_to,omitempty"`
	Subject        string `json:"subject,omitempty"`
}

// Event returns the document event to record for a document rendered in format with digest (for pdf, the
// digest of its HTML): a client-form event whose model is the document's model version.
func Event(d *Document, format, digest string) []byte {
	a := Recorded{Kind: d.Kind, Digest: digest, Format: format, At: d.At, CheckpointSize: d.Checkpoint.TreeSize}
	if d.Period != nil {
		a.PeriodFrom, a.PeriodTo = d.Period.From, d.Period.To
	}
	ev := map[string]any{"type": "document", "attrs": a}
	if d.subject != "" {
		a.Subject = d.subject
		ev["attrs"] = a
		ev["refs"] = []string{d.subject}
	}
	if d.model.Name != "" {
		ev["model"] = map[string]string{"name": d.model.Name, "version": d.model.Version}
	}
	b, _ := json.Marshal(ev)
	return b
}

// Signed describes a signature to record for a document event.
type Signed struct {
	// Document is the id of the document event signed; Kind, Digest and Model are copied from it.
	Document string
	Kind     string
	Digest   string
	Model    map[string]string
	// Format is signature.FormatSSH or signature.FormatEd25519; Signature the detached signature; Key the
	// signer's public key.
	Format, Signature, Key string
}

// SignatureEvent checks a signature over a document digest and returns the document event that records it
// (referring to the signed document event) with the key's fingerprint.
func SignatureEvent(s Signed) ([]byte, string, error) {
	fp, err := signature.Verify(s.Format, s.Signature, s.Key, s.Digest)
	if err != nil {
		return nil, "", fmt.Errorf("signature over %s: %w", s.Digest, err)
	}
	ev := map[string]any{"type": "document", "refs": []string{s.Document}, "attrs": map[string]any{
		"kind": s.Kind, "digest": s.Digest, "signature": s.Signature, "signature_format": s.Format,
		"signer_key": s.Key, "signer_fingerprint": fp,
	}}
	if s.Model != nil {
		ev["model"] = s.Model
	}
	b, _ := json.Marshal(ev)
	return b, fp, nil
}
