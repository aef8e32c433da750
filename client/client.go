// Package client is the Go SDK for Cairn: append events, read them with their proofs, and verify checkpoints
// and proofs against a log's public key, trusting nothing the server says without checking it.
package client

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/cairn-ai/cairn/internal/ledger"
)

// Client talks to one Cairn server.
type Client struct {
	URL   string // base URL, e.g. http://127.0.0.1:7700
	Token string
	HTTP  *http.Client
}

// New returns a client for a server URL and bearer token.
func New(url, token string) *Client {
	return &Client{URL: strings.TrimRight(url, "/"), Token: token, HTTP: &http.Client{Timeout: 60 * time.Second}}
}

// Event is an event to append. ID should be a UUIDv7 chosen by the caller so retries are idempotent.
type Event struct {
	ID         string         `json:"id,omitempty"`
	Type       string         `json:"type"`
	Time       string         `json:"time,omitempty"`
	Model      *Model         `json:"model,omitempty"`
	Deployment string         `json:"deployment,omitempty"`
	Refs       []string       `json:"refs,omitempty"`
	Attrs      map[string]any `json:"attrs,omitempty"`
	Payload    map[string]any `json:"payload,omitempty"`
}

// Model identifies a model version.
type Model struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Digest  string `json:"digest,omitempty"`
}

// Receipt is an appended event's id and leaf index.
type Receipt struct {
	ID        string `json:"id"`
	Index     uint64 `json:"index"`
	Duplicate bool   `json:"duplicate,omitempty"`
}

// Problem is an error answer from the server (RFC 9457).
type Problem struct {
	Status int    `json:"status"`
	Title  string `json:"title"`
	Detail string `json:"detail"`
	Errors []struct {
		Event  *int   `json:"event"`
		Field  string `json:"field"`
		Reason string `json:"reason"`
	} `json:"errors"`
	RetryAfter time.Duration `json:"-"`
}

func (p *Problem) Error() string {
	if p.Detail != "" {
		return fmt.Sprintf("%d %s: %s", p.Status, p.Title, p.Detail)
	}
	return fmt.Sprintf("%d %s", p.Status, p.Title)
}

func (c *Client) do(ctx context.Context, method, path string, body []byte, auth bool) ([]byte, error) {
	b, _, err := c.doHeader(ctx, method, path, body, auth)
	return b, err
}

// doHeader is do that also returns the response's headers.
func (c *Client) doHeader(ctx context.Context, method, path string, body []byte, auth bool) ([]byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.URL+path, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth && c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode >= 300 {
		p := &Problem{Status: resp.StatusCode, Title: http.StatusText(resp.StatusCode)}
		json.Unmarshal(b, p)
		if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
			p.RetryAfter = time.Duration(ra) * time.Second
		}
		return nil, resp.Header, p
	}
	return b, resp.Header, nil
}

// Append appends events to a system's log and returns once they are durable.
func (c *Client) Append(ctx context.Context, system string, events []Event) ([]Receipt, error) {
	body, err := json.Marshal(events)
	if err != nil {
		return nil, err
	}
	return c.AppendRaw(ctx, system, body)
}

// AppendRaw appends a request body as is (a JSON array or NDJSON).
func (c *Client) AppendRaw(ctx context.Context, system string, body []byte) ([]Receipt, error) {
	b, err := c.do(ctx, "POST", "/v1/systems/"+system+"/events", body, true)
	if err != nil {
		return nil, err
	}
	var out struct {
		Events []Receipt `json:"events"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	return out.Events, nil
}

// ApplySystem registers or updates a system from its JSON definition.
func (c *Client) ApplySystem(ctx context.Context, def []byte) (json.RawMessage, error) {
	b, err := c.do(ctx, "POST", "/v1/systems", def, true)
	return b, err
}

// System reads a system's current definition (auditor role).
func (c *Client) System(ctx context.Context, system string) (json.RawMessage, error) {
	return c.do(ctx, "GET", "/v1/systems/"+system, nil, true)
}

// EventRecord is an event as read back, with its inclusion proof.
type EventRecord struct {
	Index      uint64          `json:"index"`
	Leaf       string          `json:"leaf"`
	LeafHash   string          `json:"leaf_hash"`
	Salt       string          `json:"salt"`
	Envelope   json.RawMessage `json:"envelope"`
	Payload    json.RawMessage `json:"payload"`
	TreeSize   uint64          `json:"tree_size"`
	Proof      []string        `json:"inclusion_proof"`
	Checkpoint string          `json:"checkpoint"`
}

// Get reads an event by index; with payload, the sealed payload too (the read is recorded as an access event).
func (c *Client) Get(ctx context.Context, system string, index uint64, payload bool) (*EventRecord, error) {
	path := fmt.Sprintf("/v1/systems/%s/events/%d", system, index)
	if payload {
		path += "?payload=true"
	}
	b, err := c.do(ctx, "GET", path, nil, true)
	if err != nil {
		return nil, err
	}
	var r EventRecord
	return &r, json.Unmarshal(b, &r)
}

// VerifyEvent checks an event record: its leaf hash, its inclusion proof against its checkpoint, and the
// checkpoint's signature with vkey. It returns the verified checkpoint.
func VerifyEvent(r *EventRecord, vkey string) (ledger.Checkpoint, error) {
	cp, err := ledger.OpenCheckpoint([]byte(r.Checkpoint), vkey)
	if err != nil {
		return cp, err
	}
	if cp.Size != r.TreeSize {
		return cp, fmt.Errorf("proof is for tree size %d, checkpoint for %d", r.TreeSize, cp.Size)
	}
	lh := tlog.RecordHash([]byte(r.Leaf))
	if base64.StdEncoding.EncodeToString(lh[:]) != r.LeafHash {
		return cp, fmt.Errorf("leaf hash does not match the leaf")
	}
	proof, err := decodeHashes(r.Proof)
	if err != nil {
		return cp, err
	}
	if err := tlog.CheckRecord(proof, int64(cp.Size), cp.Root, int64(r.Index), lh); err != nil {
		return cp, fmt.Errorf("inclusion proof: %w", err)
	}
	return cp, nil
}

func decodeHashes(ss []string) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(ss))
	for i, s := range ss {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(b) != tlog.HashSize {
			return nil, fmt.Errorf("bad hash in proof")
		}
		copy(out[i][:], b)
	}
	return out, nil
}

// Checkpoint fetches a log's latest signed checkpoint and verifies it with vkey.
func (c *Client) Checkpoint(ctx context.Context, system, vkey string) (ledger.Checkpoint, []byte, error) {
	b, err := c.do(ctx, "GET", "/logs/"+system+"/checkpoint", nil, false)
	if err != nil {
		return ledger.Checkpoint{}, nil, err
	}
	cp, err := ledger.OpenCheckpoint(b, vkey)
	return cp, b, err
}

// VKey fetches a log's verifier key. Only trust it if it came from somewhere other than the server you verify.
func (c *Client) VKey(ctx context.Context, system string) (string, error) {
	b, err := c.do(ctx, "GET", "/logs/"+system+"/vkey", nil, false)
	return strings.TrimSpace(string(b)), err
}

// Consistency fetches a consistency proof between tree sizes and checks it against two verified checkpoints.
func (c *Client) Consistency(ctx context.Context, system string, old, cur ledger.Checkpoint) error {
	if old.Size == cur.Size {
		if old.Root != cur.Root {
			return fmt.Errorf("two different trees of size %d: the log forked", old.Size)
		}
		return nil
	}
	b, err := c.do(ctx, "GET", fmt.Sprintf("/v1/systems/%s/proofs/consistency?from=%d&to=%d", system, old.Size, cur.Size), nil, true)
	if err != nil {
		return err
	}
	var out struct {
		Proof []string `json:"proof"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return err
	}
	p, err := decodeHashes(out.Proof)
	if err != nil {
		return err
	}
	return tlog.CheckTree(p, int64(cur.Size), cur.Root, int64(old.Size), old.Root)
}

// TileReader reads tiles from a log's tlog-tiles API; use it with tlog.TileHashReader, which checks every tile
// against a verified checkpoint's root.
type TileReader struct {
	C      *Client
	System string
}

func (t *TileReader) Height() int { return 8 }

func (t *TileReader) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, tile := range tiles {
		b, err := t.C.do(context.Background(), "GET", "/logs/"+t.System+"/tile/"+ledger.TilePath(tile.L, false, tile.N, tile.W), nil, false)
		if err != nil {
			return nil, err
		}
		out[i] = b
	}
	return out, nil
}

func (t *TileReader) SaveTiles(tiles []tlog.Tile, data [][]byte) {}

// EntryBundle fetches the leaf entries [n*256, n*256+w) and splits the bundle into leaves.
func (c *Client) EntryBundle(ctx context.Context, system string, n int64, w int) ([][]byte, error) {
	b, err := c.do(ctx, "GET", "/logs/"+system+"/tile/"+ledger.TilePath(0, true, n, w), nil, true)
	if err != nil {
		return nil, err
	}
	out, err := ledger.ParseEntryBundle(b)
	if err != nil {
		return nil, err
	}
	if len(out) != w {
		return nil, fmt.Errorf("entry bundle holds %d entries, want %d", len(out), w)
	}
	return out, nil
}
