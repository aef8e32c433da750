package retention

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/store"
)

// Hold is a legal hold: while it is in force, nothing it covers is destroyed. It covers every event of the
// system, or the events matching all of its given criteria: listed event ids, a recorded-time window, event
// types. Every criterion is a leaf field, so what a hold covers can be decided from the permanent leaves.
type Hold struct {
	ID     string       `json:"id"`
	Events []event.UUID `json:"events,omitempty"`
	From   time.Time    `json:"from,omitzero"` // recorded at or after
	To     time.Time    `json:"to,omitzero"`   // recorded before
	Types  []string     `json:"types,omitempty"`
	// ReasonRef is a reference to the matter (an incident or litigation number): never free text about a person.
	ReasonRef string `json:"reason_ref,omitempty"`

	// Set from the log.
	Index    uint64    `json:"index"`
	Placed   time.Time `json:"placed"`
	PlacedBy string    `json:"placed_by"`
	Released *Release  `json:"released,omitempty"`
}

// Release records when a hold was lifted.
type Release struct {
	Index uint64    `json:"index"`
	At    time.Time `json:"at"`
	By    string    `json:"by"`
}

// Covers reports whether the hold covers an entry (by its leaf fields).
func (h *Hold) Covers(e *store.Entry) bool {
	if len(h.Events) > 0 && !slices.Contains(h.Events, e.ID) {
		return false
	}
	if len(h.Types) > 0 && !slices.Contains(h.Types, e.Type) {
		return false
	}
	r := time.Unix(0, e.Recorded)
	if !h.From.IsZero() && r.Before(h.From) {
		return false
	}
	if !h.To.IsZero() && !r.Before(h.To) {
		return false
	}
	return true
}

// Scope describes what a hold covers, for reports.
func (h *Hold) Scope() string {
	if len(h.Events) == 0 && len(h.Types) == 0 && h.From.IsZero() && h.To.IsZero() {
		return "the whole system"
	}
	s := ""
	if len(h.Events) > 0 {
		s += fmt.Sprintf("%d listed events", len(h.Events))
	}
	if len(h.Types) > 0 {
		s = join(s, fmt.Sprintf("types %v", h.Types))
	}
	if !h.From.IsZero() || !h.To.IsZero() {
		s = join(s, fmt.Sprintf("recorded in [%s, %s)", fmtTime(h.From), fmtTime(h.To)))
	}
	return s
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + ", " + b
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "…"
	}
	return t.UTC().Format(time.RFC3339)
}

var holdIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Errors of hold requests.
var (
	// ErrHold: a hold request is invalid (a reused id, a bad scope, a hold already released).
	ErrHold = errors.New("invalid hold")
	// ErrNoHold: no hold of that id on the system.
	ErrNoHold = errors.New("no such hold")
)

// PlaceHold records a legal hold in a system's log (a `retention` event, action "hold"), appended by actor. It
// waits for a run in progress, so a run never misses a hold acknowledged before it decided what to destroy.
func (w *Worker) PlaceHold(ctx context.Context, sys string, h Hold, actor string) (ledger.Receipt, error) {
	if !holdIDRE.MatchString(h.ID) {
		return ledger.Receipt{}, fmt.Errorf("%w: id must be 1-64 letters, digits, '.', '_' or '-'", ErrHold)
	}
	if len(h.Events) > event.DefaultLimits.MaxRefs {
		return ledger.Receipt{}, fmt.Errorf("%w: at most %d listed events per hold (place several holds)", ErrHold, event.DefaultLimits.MaxRefs)
	}
	for _, t := range h.Types {
		if event.Specs[t] == nil {
			return ledger.Receipt{}, fmt.Errorf("%w: unknown event type %q", ErrHold, t)
		}
	}
	if !h.From.IsZero() && !h.To.IsZero() && !h.From.Before(h.To) {
		return ledger.Receipt{}, fmt.Errorf("%w: from must be before to", ErrHold)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	st, _, err := w.state(ctx, sys)
	if err != nil {
		return ledger.Receipt{}, err
	}
	if old := st.Holds[h.ID]; old != nil {
		return ledger.Receipt{}, fmt.Errorf("%w: a hold %q was already placed (index %d); hold ids are never reused", ErrHold, h.ID, old.Index)
	}
	attrs := map[string]any{"action": "hold", "hold_id": h.ID}
	if len(h.Types) > 0 {
		attrs["types"] = h.Types
	}
	if !h.From.IsZero() {
		attrs["from"] = h.From.UTC().Format(time.RFC3339Nano)
	}
	if !h.To.IsZero() {
		attrs["to"] = h.To.UTC().Format(time.RFC3339Nano)
	}
	if h.ReasonRef != "" {
		attrs["reason_ref"] = h.ReasonRef
	}
	ev := map[string]any{"type": "retention", "attrs": attrs}
	if len(h.Events) > 0 {
		refs := make([]string, len(h.Events))
		for i, id := range h.Events {
			refs[i] = id.String()
		}
		ev["refs"] = refs
	}
	raw, _ := json.Marshal(ev)
	return w.cfg.Ledger.AppendServer(ctx, sys, raw, actor)
}

// ReleaseHold records the release of a hold (a `retention` event, action "release"). What the hold kept is
// destroyed by the next retention run if its period has ended and no other hold covers it.
func (w *Worker) ReleaseHold(ctx context.Context, sys, id, actor string) (ledger.Receipt, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	st, _, err := w.state(ctx, sys)
	if err != nil {
		return ledger.Receipt{}, err
	}
	h := st.Holds[id]
	if h == nil {
		return ledger.Receipt{}, fmt.Errorf("%w: %q on %s", ErrNoHold, id, sys)
	}
	if h.Released != nil {
		return ledger.Receipt{}, fmt.Errorf("%w: hold %q was already released (index %d)", ErrHold, id, h.Released.Index)
	}
	raw, _ := json.Marshal(map[string]any{"type": "retention", "attrs": map[string]any{"action": "release", "hold_id": id}, "refs": []string{st.holdEventID[id].String()}})
	return w.cfg.Ledger.AppendServer(ctx, sys, raw, actor)
}

// MarshalJSON writes event ids as strings.
func (h *Hold) MarshalJSON() ([]byte, error) {
	type plain Hold
	ids := make([]string, len(h.Events))
	for i, id := range h.Events {
		ids[i] = id.String()
	}
	return json.Marshal(struct {
		*plain
		Events []string `json:"events,omitempty"`
	}{(*plain)(h), ids})
}
