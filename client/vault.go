package client

import (
	"context"
	"encoding/json"
	"net/url"
)

// Reidentification is the answer to a re-identification: the original values by pseudonym, or a request waiting for
// a second data protection officer's approval.
type Reidentification struct {
	Request   string                     `json:"request,omitempty"`
	State     string                     `json:"state"` // pending, approved or released
	Approvals int                        `json:"approvals"`
	Values    map[string]json.RawMessage `json:"values,omitempty"`
	NotFound  []string                   `json:"not_found,omitempty"`
	Requester string                     `json:"requester,omitempty"`
	Approver  string                     `json:"approver,omitempty"`
	Purpose   string                     `json:"purpose,omitempty"`
	// Pseudonyms asked for, as the requester gave them.
	Pseudonyms []string `json:"pseudonyms,omitempty"`
}

func (c *Client) reidentification(ctx context.Context, method, path string, body []byte) (*Reidentification, error) {
	b, err := c.do(ctx, method, path, body, true)
	if err != nil {
		return nil, err
	}
	var r Reidentification
	return &r, json.Unmarshal(b, &r)
}

// Reidentify asks for the original values behind vaulted pseudonyms of a system (dpo role), stating why. The server
// records the request in the system's log before answering. When the system needs a second approval, the answer is
// a pending request: another dpo approves it, then the requester collects the values with GetReidentification.
func (c *Client) Reidentify(ctx context.Context, system, purpose string, pseudonyms []string) (*Reidentification, error) {
	body, _ := json.Marshal(map[string]any{"pseudonyms": pseudonyms, "purpose": purpose})
	return c.reidentification(ctx, "POST", "/v1/systems/"+url.PathEscape(system)+"/reidentify", body)
}

// ApproveReidentification approves another dpo's pending re-identification request.
func (c *Client) ApproveReidentification(ctx context.Context, id string) (*Reidentification, error) {
	return c.reidentification(ctx, "POST", "/v1/reidentify/"+url.PathEscape(id)+"/approve", nil)
}

// GetReidentification shows a request; for its requester, once approved, it returns the values (once).
func (c *Client) GetReidentification(ctx context.Context, id string) (*Reidentification, error) {
	return c.reidentification(ctx, "GET", "/v1/reidentify/"+url.PathEscape(id), nil)
}

// EraseSubject deletes the token-vault entries of subjects of a pseudonymisation domain, named by pseudonyms or by
// original values (JSON), and reports how many entries went.
func (c *Client) EraseSubject(ctx context.Context, domain string, pseudonyms []string, values []json.RawMessage) (int, error) {
	body, _ := json.Marshal(map[string]any{"domain": domain, "pseudonyms": pseudonyms, "values": values})
	b, err := c.do(ctx, "POST", "/v1/vault/erase", body, true)
	if err != nil {
		return 0, err
	}
	var r struct{ Erased int }
	return r.Erased, json.Unmarshal(b, &r)
}
