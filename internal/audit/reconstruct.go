package audit

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cairn-ai/cairn/internal/canon"
	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/registry"
	"github.com/cairn-ai/cairn/internal/store"
)

// Reconstruction answers "what happened here and why" for one event, typically an inference.
type Reconstruction struct {
	System string `json:"system"`
	Index  uint64 `json:"index"`
	// Envelope is the event's envelope; Payload its sealed payload, opened (the read is recorded first).
	Envelope json.RawMessage `json:"envelope"`
	Payload  json.RawMessage `json:"payload,omitempty"`
	// Live is what was live in the event's deployment at the event's time, with approval, data and config.
	Live *registry.Live `json:"live,omitempty"`
	// ModelMatchesLive is false when the model the event names is not the version live in its deployment then.
	ModelMatchesLive *bool `json:"model_matches_live,omitempty"`
	// Lineage is the lineage of the model version the event names.
	Lineage *registry.Lineage `json:"lineage,omitempty"`
	// Oversight lists the oversight events that refer to the event, with their opened payloads.
	Oversight []Oversight `json:"oversight"`
	// TreeSize and Checkpoint are what the proofs are against; Verified says the evidence bundle verified
	// against the log's key before this answer was given.
	TreeSize   uint64 `json:"tree_size"`
	Checkpoint string `json:"checkpoint"`
	// Leaf and Proof are the event's leaf entry and its RFC 6962 inclusion proof (hex hashes) in that tree.
	Leaf     json.RawMessage `json:"leaf"`
	Proof    []string        `json:"inclusion_proof"`
	Verified bool            `json:"verified"`
	// Evidence counts the events in the bundle (`cairn export` writes it).
	Evidence int `json:"evidence_events"`
}

// Oversight is one human action on the event.
type Oversight struct {
	*registry.Node
	Payload json.RawMessage `json:"payload,omitempty"`
}

// Source is what a reconstruction reads: the ledger and the lineage registry.
type Source struct {
	Ledger   *ledger.Ledger
	Registry *registry.Registry
}

// ErrNotFollowed: the registry has not yet applied the event being reconstructed; retry shortly.
var ErrNotFollowed = errors.New("the lineage registry has not caught up with this event yet")

// Reconstruct reconstructs the event at index of system for actor, recording the access (action "read", or
// "export" when export is set) before any payload leaves, and returns the reconstruction with its evidence bundle,
// verified.
func (src Source) Reconstruct(ctx context.Context, system string, index uint64, actor string, export bool) (*Reconstruction, []byte, error) {
	lg, err := src.Ledger.Log(system)
	if err != nil {
		return nil, nil, err
	}
	e, err := lg.Entry(ctx, index)
	if err != nil {
		return nil, nil, err
	}
	if e.Envelope == nil {
		return nil, nil, fmt.Errorf("%w: event %d's envelope was destroyed by retention", store.ErrNotFound, index)
	}
	// The registry follows ingest closely; give it a moment to reach an event that was just appended.
	for deadline := time.Now().Add(5 * time.Second); src.Registry.Watermark(system) <= index; {
		if time.Now().After(deadline) {
			return nil, nil, ErrNotFollowed
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	env, err := event.ParseEnvelope(e.Envelope)
	if err != nil {
		return nil, nil, err
	}
	t, err := time.Parse(time.RFC3339Nano, env.Time)
	if err != nil {
		return nil, nil, err
	}
	r := &Reconstruction{System: system, Index: index, Envelope: e.Envelope, Oversight: []Oversight{}}
	evidence := map[uint64]bool{}
	addNode := func(n *registry.Node) {
		if n != nil && n.Index != index {
			evidence[n.Index] = true
		}
	}
	if env.Deployment != "" {
		if live, err := src.Registry.LiveIn(system, env.Deployment, t); err == nil {
			r.Live = live
			m := env.Model != nil && live.State == "live" && live.Name == env.Model.Name && live.Version == env.Model.Version
			r.ModelMatchesLive = &m
			addNode(live.Deployment)
			addNode(live.Approval)
		}
	}
	if env.Model != nil {
		if lin, err := src.Registry.Lineage(system, env.Model.Name, env.Model.Version); err == nil {
			r.Lineage = lin
			addNode(lin.Registered)
			addNode(lin.Run)
			for _, n := range lin.Datasets {
				addNode(n)
			}
			for _, n := range lin.Evaluations {
				addNode(n)
			}
			for _, n := range lin.Approvals {
				addNode(n)
			}
		}
	}
	over := src.Registry.Oversight(system, e.ID)
	disclose := map[uint64]bool{index: e.Sealed != nil}
	refs := []string{e.ID.String()}
	for _, n := range over {
		evidence[n.Index] = true
		disclose[n.Index] = true
		refs = append(refs, n.ID)
	}
	// Record the access before anything personal leaves.
	action, format := "read", ""
	if export {
		action, format = "export", `,"export_format":"`+BundleFormat+`"`
	}
	rb, _ := json.Marshal(refs)
	raw := `{"type":"access","refs":` + string(rb) + `,"attrs":{"action":"` + action + `","scope":"reconstruct"` + format + `}}`
	if _, err := src.Ledger.AppendServer(ctx, system, []byte(raw), actor); err != nil {
		return nil, nil, fmt.Errorf("record access: %w", err)
	}
	order := []uint64{index}
	rest := make([]uint64, 0, len(evidence))
	for i := range evidence {
		rest = append(rest, i)
	}
	slices.Sort(rest)
	order = append(order, rest...)
	cp, n, err := waitCheckpoint(ctx, lg, rest, index)
	if err != nil {
		return nil, nil, err
	}
	b := &Bundle{Format: BundleFormat, Checkpoint: string(cp), VKey: src.Ledger.VerifierKey(system)}
	payloads := map[uint64][]byte{}
	for _, i := range order {
		be, pt, err := bundleEvent(ctx, lg, i, n, disclose[i])
		if err != nil {
			return nil, nil, fmt.Errorf("event %d: %w", i, err)
		}
		b.Events = append(b.Events, be)
		payloads[i] = pt
	}
	enc, err := b.Encode()
	if err != nil {
		return nil, nil, err
	}
	if _, err := VerifyBundle(enc, src.Ledger.VerifierKey(system)); err != nil {
		return nil, nil, fmt.Errorf("the evidence does not verify: %w", err)
	}
	r.Verified, r.TreeSize, r.Checkpoint, r.Evidence = true, n, string(cp), len(b.Events)
	r.Leaf, r.Proof = json.RawMessage(b.Events[0].Leaf), b.Events[0].Proof
	r.Payload = payloads[index]
	for _, o := range over {
		r.Oversight = append(r.Oversight, Oversight{Node: o, Payload: payloads[o.Index]})
	}
	return r, enc, nil
}

// waitCheckpoint returns the published checkpoint once it covers every index given (events the registry has
// seen are durable, so it soon does).
func waitCheckpoint(ctx context.Context, lg *ledger.Log, idx []uint64, first uint64) ([]byte, uint64, error) {
	need := first
	for _, i := range idx {
		need = max(need, i)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		cp, n := lg.Checkpoint()
		if cp != nil && n > need {
			return cp, n, nil
		}
		if time.Now().After(deadline) {
			return nil, 0, errors.New("no checkpoint covers the evidence yet")
		}
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func bundleEvent(ctx context.Context, lg *ledger.Log, index, size uint64, disclose bool) (BundleEvent, json.RawMessage, error) {
	e, err := lg.Entry(ctx, index)
	if err != nil {
		return BundleEvent{}, nil, err
	}
	if e.Envelope == nil {
		return BundleEvent{}, nil, errors.New("envelope destroyed by retention")
	}
	proof, err := lg.InclusionProof(index, size)
	if err != nil {
		return BundleEvent{}, nil, err
	}
	be := BundleEvent{Index: index, Leaf: e.AppendLeaf(nil), Salt: hex.EncodeToString(e.Salt[:]), Envelope: e.Envelope,
		Proof: make([]string, len(proof))}
	for i, h := range proof {
		be.Proof[i] = hex.EncodeToString(h[:])
	}
	var pt json.RawMessage
	if disclose && e.Sealed != nil {
		dk, ct, err := lg.DisclosePayload(e)
		if err != nil {
			return BundleEvent{}, nil, fmt.Errorf("payload cannot be opened (its key was destroyed?): %w", err)
		}
		p, err := lg.OpenPayload(e)
		if err != nil {
			return BundleEvent{}, nil, err
		}
		if p, err = canon.Append(nil, p); err != nil {
			return BundleEvent{}, nil, err
		}
		be.Sealed, be.DataKey, be.Payload, pt = hex.EncodeToString(ct), hex.EncodeToString(dk), p, p
	}
	return be, pt, nil
}
