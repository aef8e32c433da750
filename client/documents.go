package client

import (
	"context"
	"encoding/json"
	"net/url"
	"strconv"
)

// DocumentRequest asks for a generated document (docs/documents.md); Kind is required.
type DocumentRequest struct {
	Kind         string `json:"kind"`
	ModelVersion string `json:"model_version,omitempty"`
	At           string `json:"at,omitempty"`
	Format       string `json:"format,omitempty"`
	From         string `json:"from,omitempty"`
	To           string `json:"to,omitempty"`
	Event        string `json:"event,omitempty"`
}

// Document is a generated document and the document event that records it.
type Document struct {
	Bytes []byte
	// Digest is what the document is recorded and signed under (for a PDF, its HTML's digest).
	Digest string
	Event  string
	Index  uint64
}

// GenerateDocument generates a document from the log state at req.At; the server records it.
func (c *Client) GenerateDocument(ctx context.Context, system string, req DocumentRequest) (*Document, error) {
	body, _ := json.Marshal(req)
	b, h, err := c.doHeader(ctx, "POST", "/v1/systems/"+url.PathEscape(system)+"/documents", body, true)
	if err != nil {
		return nil, err
	}
	idx, _ := strconv.ParseUint(h.Get("Cairn-Document-Index"), 10, 64)
	return &Document{Bytes: b, Digest: h.Get("Cairn-Document-Digest"), Event: h.Get("Cairn-Document-Event"), Index: idx}, nil
}

// FindDocuments lists the recorded documents with a digest (or of a kind), each with its recorded signatures.
func (c *Client) FindDocuments(ctx context.Context, system, digest, kind string) (json.RawMessage, error) {
	q := url.Values{}
	if digest != "" {
		q.Set("digest", digest)
	}
	if kind != "" {
		q.Set("kind", kind)
	}
	return c.do(ctx, "GET", "/v1/systems/"+url.PathEscape(system)+"/documents?"+q.Encode(), nil, true)
}

// SignDocument records a detached signature over a document event's digest.
func (c *Client) SignDocument(ctx context.Context, system, documentEvent, format, signature, signerKey string) (json.RawMessage, error) {
	body, _ := json.Marshal(map[string]string{"format": format, "signature": signature, "signer_key": signerKey})
	return c.do(ctx, "POST", "/v1/systems/"+url.PathEscape(system)+"/documents/"+url.PathEscape(documentEvent)+"/signatures", body, true)
}

// GateCheck runs a gate policy (YAML or JSON) for a model version; the server records the result.
func (c *Client) GateCheck(ctx context.Context, system, modelVersion string, policy []byte) (json.RawMessage, error) {
	return c.do(ctx, "POST", "/v1/systems/"+url.PathEscape(system)+"/gate/check?model_version="+url.QueryEscape(modelVersion), policy, true)
}
