package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"time"
)

// Live asks which model version was live at t in each environment of a system (env "" for all); the answer is the
// JSON of GET /v1/systems/{system}/live.
func (c *Client) Live(ctx context.Context, system string, t time.Time, env string) (json.RawMessage, error) {
	q := url.Values{"at": {t.UTC().Format(time.RFC3339Nano)}}
	if env != "" {
		q.Set("environment", env)
	}
	return c.do(ctx, "GET", "/v1/systems/"+url.PathEscape(system)+"/live?"+q.Encode(), nil, true)
}

// Models lists a system's model versions.
func (c *Client) Models(ctx context.Context, system string) (json.RawMessage, error) {
	return c.do(ctx, "GET", "/v1/systems/"+url.PathEscape(system)+"/models", nil, true)
}

// Lineage returns the lineage graph of a model version.
func (c *Client) Lineage(ctx context.Context, system, name, version string) (json.RawMessage, error) {
	return c.do(ctx, "GET", fmt.Sprintf("/v1/systems/%s/models/%s/versions/%s/lineage", url.PathEscape(system), url.PathEscape(name), url.PathEscape(version)), nil, true)
}

// Reconstruct returns the tabletop audit of an event (ref: its index or id). The server records the read.
func (c *Client) Reconstruct(ctx context.Context, system, ref string) (json.RawMessage, error) {
	return c.do(ctx, "GET", "/v1/systems/"+url.PathEscape(system)+"/reconstruct/"+url.PathEscape(ref), nil, true)
}

// Export returns the evidence bundle of an event's reconstruction. The server records the export.
func (c *Client) Export(ctx context.Context, system, ref string) ([]byte, error) {
	return c.do(ctx, "GET", "/v1/systems/"+url.PathEscape(system)+"/export/"+url.PathEscape(ref), nil, true)
}

// CheckResult says whether an event would comply with a system's lifecycle rules.
type CheckResult struct {
	Compliant  bool     `json:"compliant"`
	Violations []string `json:"violations"`
}

// CheckLifecycle asks whether ev, appended now with this client's token, would comply with the system's
// lifecycle rules (for gates: "would this deployment be compliant?"). Nothing is recorded.
func (c *Client) CheckLifecycle(ctx context.Context, system string, ev Event) (*CheckResult, error) {
	body, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	b, err := c.do(ctx, "POST", "/v1/systems/"+url.PathEscape(system)+"/lifecycle/check", body, true)
	if err != nil {
		return nil, err
	}
	var r CheckResult
	return &r, json.Unmarshal(b, &r)
}

// GetID reads an event by its id (needs the auditor role; the read is recorded as an access event).
func (c *Client) GetID(ctx context.Context, system, id string) (*EventRecord, error) {
	b, err := c.do(ctx, "GET", "/v1/systems/"+url.PathEscape(system)+"/events/"+url.PathEscape(id), nil, true)
	if err != nil {
		return nil, err
	}
	var r EventRecord
	return &r, json.Unmarshal(b, &r)
}
