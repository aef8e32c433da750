package event

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/cairn-ai/cairn/internal/canon"
)

// Limits bound what one request and one event may hold.
type Limits struct {
	MaxEvents     int // events per request
	MaxEventBytes int // bytes of one event's JSON
	MaxRefs       int
}

// DefaultLimits are the limits used when a caller sets none.
var DefaultLimits = Limits{MaxEvents: 10000, MaxEventBytes: 1 << 20, MaxRefs: 256}

// Model identifies the model that an event concerns.
type Model struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Digest  string `json:"digest,omitzero"`
}

// input is an event exactly as a client sends it (the members scanInput accepts; any other is rejected).
type input struct {
	ID, Type, Time, Deployment string
	Model                      *Model
	Refs                       []string
	Attrs, Payload             []byte // canonical objects
}

// Event is a validated client event. Its byte slices are canonical JSON (RFC 8785).
type Event struct {
	ID      UUID
	IDGiven bool // the client chose the id, so it is an idempotency key
	Type    string
	Spec    *Spec
	Time    time.Time // when it happened; the receipt time when the client gave none
	Model   *Model
	// Deployment names the deployment (environment) the event concerns.
	Deployment string
	Refs       []UUID
	Attrs      []byte // canonical object, or nil
	Payload    []byte // canonical value, or nil; personal: only ever stored sealed
	// Canonical is the canonical form of the whole client event: what idempotency compares (by keyed digest).
	Canonical []byte
}

// Error is a rejected event: which event of the request, which field (a JSON Pointer), and why.
// It never quotes a field's value, which may be personal.
type Error struct {
	Event  int // position in the request, from 0; -1 for the request as a whole
	ID     string
	Field  string
	Reason string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Event >= 0 {
		fmt.Fprintf(&b, "event %d", e.Event)
	} else {
		b.WriteString("request")
	}
	if e.Field != "" {
		fmt.Fprintf(&b, " field %s", e.Field)
	}
	b.WriteString(": ")
	b.WriteString(e.Reason)
	return b.String()
}

// ErrTooLarge marks a request or event over its size limit.
var ErrTooLarge = errors.New("too large")

// Split calls fn for each event of a request body, which is either a JSON array of objects or NDJSON
// (objects separated by newlines). raw is only valid during the call.
func Split(body []byte, lim Limits, fn func(i int, raw []byte) error) error {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return &Error{Event: -1, Reason: "empty body: send a JSON array of events or NDJSON"}
	}
	dec := jsontext.NewDecoder(bytes.NewReader(trimmed))
	array := trimmed[0] == '['
	if array {
		if _, err := dec.ReadToken(); err != nil {
			return &Error{Event: -1, Reason: "malformed JSON: " + scrub(err)}
		}
	}
	for i := 0; ; i++ {
		if array && dec.PeekKind() == ']' {
			dec.ReadToken()
			if _, err := dec.ReadToken(); err != io.EOF {
				return &Error{Event: -1, Reason: "trailing data after the array"}
			}
			if i == 0 {
				return &Error{Event: -1, Reason: "no events"}
			}
			return nil
		}
		raw, err := dec.ReadValue()
		if err == io.EOF && !array {
			if i == 0 {
				return &Error{Event: -1, Reason: "no events"}
			}
			return nil
		}
		if err != nil {
			return &Error{Event: i, Reason: "malformed JSON: " + scrub(err)}
		}
		if i >= lim.MaxEvents {
			return &Error{Event: i, Reason: fmt.Sprintf("more than %d events in one request", lim.MaxEvents)}
		}
		if len(raw) > lim.MaxEventBytes {
			return &Error{Event: i, Reason: fmt.Sprintf("event is %d bytes, over the limit of %d", len(raw), lim.MaxEventBytes)}
		}
		if raw.Kind() != '{' {
			return &Error{Event: i, Reason: "an event must be a JSON object"}
		}
		if err := fn(i, raw); err != nil {
			return err
		}
	}
}

// scrub turns a decoder error into a message that names a place, never a value.
func scrub(err error) string {
	var se *jsontext.SyntacticError
	if errors.As(err, &se) {
		msg := se.Err.Error()
		if se.JSONPointer != "" {
			return fmt.Sprintf("%s (at %s, byte %d)", msg, se.JSONPointer, se.ByteOffset)
		}
		return fmt.Sprintf("%s (byte %d)", msg, se.ByteOffset)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return "unexpected end of input"
	}
	return "invalid JSON"
}

// Parse validates one client event. now is the receipt time; i is the event's position in its request.
// Server-only types are rejected unless server is true.
func Parse(i int, raw []byte, now time.Time, lim Limits, server bool) (*Event, error) {
	fail := func(field, reason string) error { return &Error{Event: i, Field: field, Reason: reason} }
	// One strict pass canonicalises (and so validates) the event; the rest walks the canonical bytes.
	c, err := canon.Append(make([]byte, 0, len(raw)), raw)
	if err != nil {
		var ce *canon.Error
		if errors.As(err, &ce) {
			return nil, fail(ce.Path, ce.Reason)
		}
		return nil, fail("", err.Error())
	}
	var in input
	if err := scanInput(c, &in); err != nil {
		var ke *kindError
		if errors.As(err, &ke) {
			return nil, fail(ke.field, ke.reason)
		}
		return nil, fail("", "invalid event")
	}
	ev := &Event{Type: in.Type, Deployment: in.Deployment, Canonical: c}
	if in.Type == "" {
		return nil, fail("/type", "missing")
	}
	spec := Specs[in.Type]
	if spec == nil {
		return nil, fail("/type", "unknown event type (see the event types in docs/events.md)")
	}
	if spec.ServerOnly && !server {
		return nil, fail("/type", "this type is recorded by Cairn itself and cannot be appended")
	}
	ev.Spec = spec
	if in.ID != "" {
		id, err := ParseUUID(in.ID)
		if err != nil {
			return nil, fail("/id", err.Error())
		}
		if id.Version() != 7 {
			return nil, fail("/id", "must be a UUIDv7 (time-ordered), so that retries can be recognised")
		}
		ev.ID, ev.IDGiven = id, true
	} else {
		ev.ID = NewV7(now)
	}
	ev.Time = now
	if in.Time != "" {
		t, err := time.Parse(time.RFC3339Nano, in.Time)
		if err != nil {
			return nil, fail("/time", "not an RFC 3339 timestamp")
		}
		ev.Time = t
	}
	if in.Model != nil {
		if in.Model.Name == "" {
			return nil, fail("/model/name", "missing")
		}
		if in.Model.Version == "" {
			return nil, fail("/model/version", "missing")
		}
		ev.Model = in.Model
	}
	if spec.NeedModel && ev.Model == nil {
		return nil, fail("/model", "missing: this event type needs the model name and version")
	}
	if spec.NeedDeployment && in.Deployment == "" {
		return nil, fail("/deployment", "missing")
	}
	if len(in.Refs) > lim.MaxRefs {
		return nil, fail("/refs", fmt.Sprintf("more than %d references", lim.MaxRefs))
	}
	for j, r := range in.Refs {
		id, err := ParseUUID(r)
		if err != nil {
			return nil, fail(fmt.Sprintf("/refs/%d", j), err.Error())
		}
		ev.Refs = append(ev.Refs, id)
	}
	if spec.NeedRefs && len(ev.Refs) == 0 {
		return nil, fail("/refs", "missing: this event type refers to the events it concerns")
	}
	present := map[string]bool{}
	if len(in.Attrs) > 2 {
		if err := checkAttrs(in.Attrs, spec, in.Type, present); err != nil {
			var ke *kindError
			if errors.As(err, &ke) {
				return nil, fail(ke.field, ke.reason)
			}
			return nil, fail("/attrs", "invalid")
		}
		ev.Attrs = in.Attrs
		if !server && hasMember(ev.Attrs, RuleViolations) {
			return nil, fail("/attrs/"+RuleViolations, "set by Cairn when an event breaks a lifecycle rule; a client cannot send it")
		}
	}
	if len(in.Payload) > 2 {
		ev.Payload = in.Payload
		if len(spec.RequireOneOf) > 0 && hasMember(ev.Payload, "output") {
			present["payload.output"] = true
		}
	}
	for _, r := range spec.Require {
		if !present[r] {
			return nil, fail("/attrs/"+r, "missing")
		}
	}
	if len(spec.RequireOneOf) > 0 {
		ok := false
		for _, r := range spec.RequireOneOf {
			ok = ok || present[r]
		}
		if !ok {
			return nil, fail("", "missing: one of "+strings.Join(pointers(spec.RequireOneOf), ", "))
		}
	}
	if spec.Check != nil {
		if field, reason := spec.Check(ev); reason != "" {
			return nil, fail(field, reason)
		}
	}
	return ev, nil
}

func pointers(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		if rest, ok := strings.CutPrefix(n, "payload."); ok {
			out[i] = "/payload/" + rest
		} else {
			out[i] = "/attrs/" + n
		}
	}
	return out
}
