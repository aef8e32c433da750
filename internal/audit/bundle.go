// Package audit reconstructs what an AI system did and why for an auditor — one decision, the model version live
// when it was made with that version's lineage, the human oversight of it — and packs the evidence into a
// self-contained bundle that anyone can verify offline with the log's public key alone.
//
// A bundle holds only what can be checked: leaves, envelopes with their salts, inclusion proofs, one signed
// checkpoint, and for disclosed payloads the ciphertext with its per-event data key. Everything an auditor reads
// from it is derived from verified envelopes, so altering any byte of a bundle makes it fail verification. A
// disclosed data key opens that one payload and nothing else.
package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/cairn-ai/cairn/internal/canon"
	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/seal"
)

// BundleFormat names the bundle encoding.
const BundleFormat = "cairn-bundle/v1"

// Bundle is the evidence of a reconstruction. Its encoding is canonical JSON (RFC 8785); hashes, salts, keys and
// ciphertexts are lowercase hex.
type Bundle struct {
	Format     string        `json:"format"`
	Checkpoint string        `json:"checkpoint"` // signed note (C2SP tlog-checkpoint)
	VKey       string        `json:"vkey"`       // note verifier key of the log
	Events     []BundleEvent `json:"events"`     // the subject first, then the evidence in index order
}

// BundleEvent is one event with what proves it.
type BundleEvent struct {
	Index    uint64         `json:"index"`
	Leaf     jsontext.Value `json:"leaf"`
	Salt     string         `json:"salt"`
	Envelope jsontext.Value `json:"envelope"`
	Proof    []string       `json:"proof"`
	// Sealed is the payload's ciphertext, DataKey its per-event key and Payload the plaintext they open to;
	// present only for disclosed payloads.
	Sealed  string         `json:"sealed,omitzero"`
	DataKey string         `json:"data_key,omitzero"`
	Payload jsontext.Value `json:"payload,omitzero"`
}

// Encode returns the bundle's canonical encoding.
func (b *Bundle) Encode() ([]byte, error) {
	raw, err := json.Marshal(b, json.Deterministic(true))
	if err != nil {
		return nil, err
	}
	return canon.Append(nil, raw)
}

// Verified is a bundle that verified: its system, checkpoint and events as the verified envelopes say.
type Verified struct {
	System     string
	Checkpoint ledger.Checkpoint
	Events     []VerifiedEvent
}

// VerifiedEvent is one verified event.
type VerifiedEvent struct {
	Index    uint64
	Envelope *event.Stored
	Raw      []byte // the canonical envelope
	Payload  []byte // the disclosed plaintext, or nil
}

// VerifyBundle checks a bundle offline: it is in canonical form; the checkpoint is signed by vkey (the bundle's
// own key when vkey is "", which proves integrity but not origin); every leaf commits to its envelope and salt, is
// included in the checkpoint's tree at its index, and agrees with its envelope on id, type and recorded time;
// every disclosed payload matches the envelope's commitments and opens with its data key to the plaintext given.
func VerifyBundle(b []byte, vkey string) (*Verified, error) {
	c, err := canon.Append(nil, b)
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	if !bytes.Equal(c, b) {
		return nil, errors.New("bundle: not in canonical form (altered or re-encoded)")
	}
	var bu Bundle
	if err := json.Unmarshal(b, &bu, json.RejectUnknownMembers(true)); err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	if bu.Format != BundleFormat {
		return nil, fmt.Errorf("bundle: format %q, want %q", bu.Format, BundleFormat)
	}
	if vkey != "" && vkey != bu.VKey {
		return nil, errors.New("bundle: signed under another key than the one given")
	}
	if err := strictSignatures(bu.Checkpoint); err != nil {
		return nil, err
	}
	cp, err := ledger.OpenCheckpoint([]byte(bu.Checkpoint), bu.VKey)
	if err != nil {
		return nil, fmt.Errorf("bundle checkpoint: %w", err)
	}
	// A log's origin is the installation's origin, "/", and the system.
	i := strings.LastIndexByte(cp.Origin, '/')
	if i < 0 {
		return nil, errors.New("bundle checkpoint: origin names no system")
	}
	system := cp.Origin[i+1:]
	if len(bu.Events) == 0 {
		return nil, errors.New("bundle: no events")
	}
	v := &Verified{System: system, Checkpoint: cp}
	for i, be := range bu.Events {
		ve, err := verifyEvent(&be, cp, system)
		if err != nil {
			return nil, fmt.Errorf("bundle event %d (index %d): %w", i, be.Index, err)
		}
		// The subject comes first; the rest follow in index order, each once.
		if (i > 1 && be.Index <= bu.Events[i-1].Index) || (i > 0 && be.Index == bu.Events[0].Index) {
			return nil, fmt.Errorf("bundle event %d: indices out of order or repeated", i)
		}
		v.Events = append(v.Events, ve)
	}
	return v, nil
}

// strictSignatures rejects a signed note whose signatures are not in canonical base64: a note verifier decodes
// leniently, so a changed padding bit would otherwise leave the signature valid and the bundle altered.
func strictSignatures(note string) error {
	_, sigs, ok := strings.Cut(note, "\n\n")
	if !ok {
		return errors.New("bundle checkpoint: not a signed note")
	}
	for _, line := range strings.Split(strings.TrimSuffix(sigs, "\n"), "\n") {
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			return errors.New("bundle checkpoint: malformed signature line")
		}
		if _, err := base64.StdEncoding.Strict().DecodeString(line[i+1:]); err != nil {
			return errors.New("bundle checkpoint: signature not in canonical base64")
		}
	}
	return nil
}

// decodeHex decodes lowercase hex of exactly n bytes (n < 0: any length).
func decodeHex(s string, n int) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil || (n >= 0 && len(b) != n) || hex.EncodeToString(b) != s {
		return nil, errors.New("not lowercase hex of the right length")
	}
	return b, nil
}

func verifyEvent(be *BundleEvent, cp ledger.Checkpoint, system string) (VerifiedEvent, error) {
	ve := VerifiedEvent{Index: be.Index}
	leaf, err := event.ParseLeaf(be.Leaf)
	if err != nil {
		return ve, err
	}
	salt, err := decodeHex(be.Salt, 16)
	if err != nil {
		return ve, fmt.Errorf("salt: %w", err)
	}
	if event.Digest(salt, be.Envelope) != leaf.Digest {
		return ve, errors.New("envelope does not match its leaf's digest")
	}
	env, err := event.ParseEnvelope(be.Envelope)
	if err != nil {
		return ve, err
	}
	if env.ID != leaf.ID.String() || env.Type != leaf.Type || env.Recorded != event.FormatRecorded(leaf.Recorded) || env.System != system {
		return ve, errors.New("envelope and leaf disagree (id, type, recorded time or system)")
	}
	if be.Index >= cp.Size {
		return ve, fmt.Errorf("index beyond the checkpoint's tree of %d", cp.Size)
	}
	proof := make(tlog.RecordProof, len(be.Proof))
	for i, h := range be.Proof {
		b, err := decodeHex(h, tlog.HashSize)
		if err != nil {
			return ve, fmt.Errorf("proof hash %d: %w", i, err)
		}
		copy(proof[i][:], b)
	}
	if err := tlog.CheckRecord(proof, int64(cp.Size), cp.Root, int64(be.Index), tlog.RecordHash(be.Leaf)); err != nil {
		return ve, fmt.Errorf("inclusion proof: %w", err)
	}
	ve.Envelope, ve.Raw = env, be.Envelope
	if be.Sealed == "" && be.DataKey == "" && len(be.Payload) == 0 {
		return ve, nil
	}
	if be.Sealed == "" || be.DataKey == "" || len(be.Payload) == 0 || env.Payload == nil {
		return ve, errors.New("a disclosed payload needs its ciphertext, data key, plaintext and an envelope commitment")
	}
	ct, err := decodeHex(be.Sealed, -1)
	if err != nil {
		return ve, fmt.Errorf("sealed: %w", err)
	}
	dk, err := decodeHex(be.DataKey, seal.DataKeySize)
	if err != nil {
		return ve, fmt.Errorf("data key: %w", err)
	}
	d, err := event.ParseSHA256(env.Payload.Digest)
	if err != nil {
		return ve, err
	}
	if sha256.Sum256(ct) != d || len(ct) != env.Payload.Size {
		return ve, errors.New("ciphertext does not match the envelope's payload digest")
	}
	kc, err := event.ParseSHA256(env.Payload.KeyCommit)
	if err != nil {
		return ve, err
	}
	pt, err := seal.OpenDisclosed(dk, leaf.ID[:], ct, kc)
	if err != nil {
		return ve, fmt.Errorf("payload: %w", err)
	}
	cpt, err := canon.Append(nil, pt)
	if err != nil || !bytes.Equal(cpt, be.Payload) {
		return ve, errors.New("the disclosed plaintext is not what the ciphertext opens to")
	}
	ve.Payload = pt
	return ve, nil
}
