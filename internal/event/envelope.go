package event

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/cairn-ai/cairn/internal/canon"
)

// PayloadRef is the envelope's commitment to a sealed payload: the digest and size of the ciphertext, the id of
// the period key that wraps the event's data key, and a commitment to the data key itself.
type PayloadRef struct {
	Digest    [32]byte // SHA-256 of the ciphertext
	Size      int      // bytes of ciphertext
	Key       string   // period key id
	KeyCommit [32]byte // seal.KeyCommitment of the per-event data key
}

// Envelope holds an event's non-personal facts. Its canonical JSON is what the leaf digest commits to.
type Envelope struct {
	ID         UUID
	System     string
	Type       string
	Time       time.Time
	Actor      string
	Model      *Model
	Deployment string
	Refs       []UUID
	Attrs      []byte // canonical object or nil
	Payload    *PayloadRef
	// Policy is the version of the field policy that shaped the payload, when one did.
	Policy string
	// InputDigest is a keyed digest of the raw input ("hmac-sha256:…"), so the key holder can later prove which
	// input the system saw without the log storing it.
	InputDigest string
}

// The canonical envelope's members, in RFC 8785 order:
// actor, attrs, deployment, id, input_digest, model, payload, policy, recorded, refs, system, time, type, v.
// "recorded" is stamped by the sequencer, so the encoding is split around it: the head ends just before the
// recorded value and the tail starts just after it. head + FormatRecorded(r) + tail is the canonical envelope.

// AppendHead appends the canonical envelope up to the recorded timestamp's value.
func (e *Envelope) AppendHead(dst []byte) []byte {
	dst = append(dst, `{"actor":`...)
	dst = canon.AppendString(dst, e.Actor)
	if len(e.Attrs) > 0 {
		dst = append(dst, `,"attrs":`...)
		dst = append(dst, e.Attrs...)
	}
	if e.Deployment != "" {
		dst = append(dst, `,"deployment":`...)
		dst = canon.AppendString(dst, e.Deployment)
	}
	dst = append(dst, `,"id":"`...)
	dst = e.ID.AppendText(dst)
	dst = append(dst, '"')
	if e.InputDigest != "" {
		dst = append(dst, `,"input_digest":`...)
		dst = canon.AppendString(dst, e.InputDigest)
	}
	if e.Model != nil {
		dst = append(dst, `,"model":{`...)
		if e.Model.Digest != "" {
			dst = append(dst, `"digest":`...)
			dst = canon.AppendString(dst, e.Model.Digest)
			dst = append(dst, ',')
		}
		dst = append(dst, `"name":`...)
		dst = canon.AppendString(dst, e.Model.Name)
		dst = append(dst, `,"version":`...)
		dst = canon.AppendString(dst, e.Model.Version)
		dst = append(dst, '}')
	}
	if p := e.Payload; p != nil {
		dst = append(dst, `,"payload":{"digest":"sha256:`...)
		dst = hex.AppendEncode(dst, p.Digest[:])
		dst = append(dst, `","key":`...)
		dst = canon.AppendString(dst, p.Key)
		dst = append(dst, `,"key_commit":"sha256:`...)
		dst = hex.AppendEncode(dst, p.KeyCommit[:])
		dst = append(dst, `","size":`...)
		dst = strconv.AppendInt(dst, int64(p.Size), 10)
		dst = append(dst, '}')
	}
	if e.Policy != "" {
		dst = append(dst, `,"policy":`...)
		dst = canon.AppendString(dst, e.Policy)
	}
	return append(dst, `,"recorded":"`...)
}

// AppendTail appends the canonical envelope after the recorded timestamp's value.
func (e *Envelope) AppendTail(dst []byte) []byte {
	dst = append(dst, '"')
	if len(e.Refs) > 0 {
		dst = append(dst, `,"refs":[`...)
		for i, r := range e.Refs {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, '"')
			dst = r.AppendText(dst)
			dst = append(dst, '"')
		}
		dst = append(dst, ']')
	}
	dst = append(dst, `,"system":`...)
	dst = canon.AppendString(dst, e.System)
	dst = append(dst, `,"time":"`...)
	dst = e.Time.UTC().AppendFormat(dst, time.RFC3339Nano) // only digits and "-:.TZ": nothing to escape
	dst = append(dst, '"')
	dst = append(dst, `,"type":`...)
	dst = canon.AppendString(dst, e.Type)
	dst = append(dst, `,"v":`...)
	dst = strconv.AppendInt(dst, SchemaVersion, 10)
	return append(dst, '}')
}

// recordedLayout has a fixed width, so recorded times sort as strings exactly as they sort as times.
const recordedLayout = "2006-01-02T15:04:05.000000000Z"

// FormatRecorded formats a recorded time (Unix nanoseconds) as it appears in leaves and envelopes.
func FormatRecorded(ns int64) string { return time.Unix(0, ns).UTC().Format(recordedLayout) }

// AppendRecorded appends FormatRecorded(ns) to dst.
func AppendRecorded(dst []byte, ns int64) []byte {
	return time.Unix(0, ns).UTC().AppendFormat(dst, recordedLayout)
}

// Digest is the salted envelope digest a leaf carries: SHA-256(salt || canonical envelope).
// The salt keeps a low-entropy envelope from being guessed from its leaf once the envelope is destroyed.
func Digest(salt, envelope []byte) [32]byte {
	h := sha256.New()
	h.Write(salt)
	h.Write(envelope)
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// Leaf is the permanent, content-free record the Merkle tree covers.
type Leaf struct {
	ID       UUID
	Recorded int64 // Unix nanoseconds, stamped by the sequencer
	Type     string
	Digest   [32]byte
}

// AppendLeaf appends the canonical leaf entry: {"digest","id","recorded","type","v"}.
func (l *Leaf) AppendLeaf(dst []byte) []byte {
	dst = append(dst, `{"digest":"sha256:`...)
	dst = hex.AppendEncode(dst, l.Digest[:])
	dst = append(dst, `","id":"`...)
	dst = l.ID.AppendText(dst)
	dst = append(dst, `","recorded":"`...)
	dst = AppendRecorded(dst, l.Recorded)
	dst = append(dst, `","type":`...)
	dst = canon.AppendString(dst, l.Type)
	dst = append(dst, `,"v":`...)
	dst = strconv.AppendInt(dst, SchemaVersion, 10)
	return append(dst, '}')
}

// ParseLeaf parses a canonical leaf entry and checks that it is in canonical form.
func ParseLeaf(b []byte) (*Leaf, error) {
	var w struct {
		Digest   string `json:"digest"`
		ID       string `json:"id"`
		Recorded string `json:"recorded"`
		Type     string `json:"type"`
		V        int    `json:"v"`
	}
	if err := json.Unmarshal(b, &w, json.RejectUnknownMembers(true)); err != nil {
		return nil, fmt.Errorf("leaf: %w", err)
	}
	if w.V != SchemaVersion {
		return nil, fmt.Errorf("leaf: unsupported version %d", w.V)
	}
	var l Leaf
	var err error
	if l.ID, err = ParseUUID(w.ID); err != nil {
		return nil, fmt.Errorf("leaf id: %w", err)
	}
	t, err := time.Parse(recordedLayout, w.Recorded)
	if err != nil {
		return nil, fmt.Errorf("leaf recorded: %w", err)
	}
	l.Recorded = t.UnixNano()
	l.Type = w.Type
	d, ok := cutPrefix(w.Digest, "sha256:")
	if !ok || len(d) != 64 {
		return nil, fmt.Errorf("leaf digest: not sha256:<64 hex>")
	}
	if _, err := hex.Decode(l.Digest[:], []byte(d)); err != nil {
		return nil, fmt.Errorf("leaf digest: %w", err)
	}
	if string(l.AppendLeaf(nil)) != string(b) {
		return nil, fmt.Errorf("leaf: not in canonical form")
	}
	return &l, nil
}

func cutPrefix(s, p string) (string, bool) {
	if len(s) >= len(p) && s[:len(p)] == p {
		return s[len(p):], true
	}
	return s, false
}

// Stored is an envelope as read back: the JSON form, for readers and verifiers.
type Stored struct {
	Actor       string         `json:"actor"`
	Attrs       jsontext.Value `json:"attrs,omitzero"`
	Deployment  string         `json:"deployment,omitzero"`
	ID          string         `json:"id"`
	InputDigest string         `json:"input_digest,omitzero"`
	Model       *Model         `json:"model,omitzero"`
	Payload     *StoredPayload `json:"payload,omitzero"`
	Policy      string         `json:"policy,omitzero"`
	Recorded    string         `json:"recorded"`
	Refs        []string       `json:"refs,omitzero"`
	System      string         `json:"system"`
	Time        string         `json:"time"`
	Type        string         `json:"type"`
	V           int            `json:"v"`
}

// StoredPayload is PayloadRef as JSON.
type StoredPayload struct {
	Digest    string `json:"digest"`
	Key       string `json:"key"`
	KeyCommit string `json:"key_commit"`
	Size      int    `json:"size"`
}

// ParseEnvelope parses a stored canonical envelope.
func ParseEnvelope(b []byte) (*Stored, error) {
	var s Stored
	if err := json.Unmarshal(b, &s, json.RejectUnknownMembers(true)); err != nil {
		return nil, fmt.Errorf("envelope: %w", err)
	}
	return &s, nil
}

// SHA256Hex formats a digest as it appears in envelopes: "sha256:<hex>".
func SHA256Hex(d [32]byte) string { return "sha256:" + hex.EncodeToString(d[:]) }

// ParseSHA256 parses a digest as envelopes write it: "sha256:<64 hex>".
func ParseSHA256(s string) ([32]byte, error) {
	var d [32]byte
	h, ok := cutPrefix(s, "sha256:")
	if !ok || len(h) != 64 {
		return d, fmt.Errorf("not a sha256:<64 hex> digest")
	}
	if _, err := hex.Decode(d[:], []byte(h)); err != nil {
		return d, fmt.Errorf("not a sha256:<64 hex> digest")
	}
	return d, nil
}
