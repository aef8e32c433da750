package retention

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/seal"
	"github.com/cairn-ai/cairn/internal/store"
	"github.com/cairn-ai/cairn/internal/system"
)

// Record is a `retention` event as read back: an archival, a destruction, a hold or a release.
type Record struct {
	Index       uint64    `json:"index"`
	At          time.Time `json:"recorded"`
	Actor       string    `json:"actor"`
	Action      string    `json:"action"`
	Class       string    `json:"class,omitempty"`
	Month       string    `json:"month,omitempty"`
	KeyID       string    `json:"key_id,omitempty"`
	Count       uint64    `json:"count,omitempty"`
	RangeDigest string    `json:"range_digest,omitempty"`
	FirstIndex  uint64    `json:"first_index,omitempty"`
	LastIndex   uint64    `json:"last_index,omitempty"`
	Archive     string    `json:"archive,omitempty"`
	HoldID      string    `json:"hold_id,omitempty"`
}

// recordAttrs is the attrs object of a `retention` event.
type recordAttrs struct {
	Action      string   `json:"action"`
	Class       string   `json:"class,omitempty"`
	Month       string   `json:"month,omitempty"`
	KeyID       string   `json:"key_id,omitempty"`
	Count       *uint64  `json:"count,omitempty"`
	RangeDigest string   `json:"range_digest,omitempty"`
	FirstIndex  *uint64  `json:"first_index,omitempty"`
	LastIndex   *uint64  `json:"last_index,omitempty"`
	Archive     string   `json:"archive,omitempty"`
	HoldID      string   `json:"hold_id,omitempty"`
	From        string   `json:"from,omitempty"`
	To          string   `json:"to,omitempty"`
	Types       []string `json:"types,omitempty"`
	ReasonRef   string   `json:"reason_ref,omitempty"`
}

func u64(v uint64) *uint64 { return &v }

// group is one retention class of one month: what one period key covers.
type group struct{ Class, Month string }

// state is what the log says about retention: schedules, holds, and what was archived and destroyed.
type state struct {
	System        string
	Size          uint64
	FirstRecorded time.Time
	// LogTime is the latest recorded time of an event not appended by retention itself: the log's own clock.
	LogTime   time.Time
	Changes   []Change
	DefIndex  uint64 // the definition in force
	HasDef    bool
	Holds     map[string]*Hold
	Records   []*Record
	Archived  map[group]*Record
	Destroyed map[group]*Record // the latest destruction record of each group
	// LastRelease is the index of the latest hold release or definition change: destroyed groups recorded before
	// it may hold entries that are no longer kept.
	LastRelease uint64

	holdEventID map[string]event.UUID
	// settled remembers, per action and group, that a run found nothing to do there, and the LastRelease it saw:
	// until a release or a definition change, a later run need not read that month again.
	settled map[settleKey]uint64
}

type settleKey struct {
	action string
	group
}

func (st *state) isSettled(action string, g group) bool {
	v, ok := st.settled[settleKey{action, g}]
	return ok && v == st.LastRelease
}

func (st *state) settle(action string, g group) { st.settled[settleKey{action, g}] = st.LastRelease }

func newState(sys string) *state {
	return &state{System: sys, Holds: map[string]*Hold{}, Archived: map[group]*Record{}, Destroyed: map[group]*Record{}, holdEventID: map[string]event.UUID{}, settled: map[settleKey]uint64{}}
}

// scanLog reads a system's log from the start.
func scanLog(ctx context.Context, l *ledger.Ledger, sys string) (*state, error) {
	lg, err := l.Log(sys)
	if err != nil {
		return nil, err
	}
	st := newState(sys)
	return st, st.update(ctx, lg)
}

// update reads the entries appended since the state was last updated.
func (st *state) update(ctx context.Context, lg *ledger.Log) error {
	n, _ := lg.Tree()
	err := lg.Store().Entries(ctx, st.Size, n, func(e *store.Entry) error {
		rec := time.Unix(0, e.Recorded).UTC()
		if e.Index == 0 {
			st.FirstRecorded = rec
		}
		if e.Type != "retention" {
			st.LogTime = rec
		}
		switch e.Type {
		case "system.registered", "system.updated":
			st.DefIndex, st.HasDef, st.LastRelease = e.Index, true, e.Index
			ch := Change{Index: e.Index, At: rec}
			pt, err := lg.OpenPayload(e)
			if err != nil && (e.Envelope == nil || errors.Is(err, seal.ErrDestroyed) || errors.Is(err, seal.ErrOpen)) {
				// A superseded definition destroyed by retention (the one in force is always kept): its
				// schedule no longer matters, it was replaced long before.
				return nil
			}
			if err != nil {
				ch.Err = fmt.Errorf("definition unreadable: %w", err)
			} else if d, _, err := system.Parse(pt); err != nil {
				ch.Err = err
			} else {
				ch.Schedule, ch.Err = Parse(d.Retention)
			}
			st.Changes = append(st.Changes, ch)
		case "retention":
			if e.Envelope == nil {
				return nil
			}
			env, err := event.ParseEnvelope(e.Envelope)
			if err != nil {
				return fmt.Errorf("retention record %d: %w", e.Index, err)
			}
			var a recordAttrs
			if err := json.Unmarshal(env.Attrs, &a); err != nil {
				return fmt.Errorf("retention record %d: attrs: %w", e.Index, err)
			}
			st.apply(e, rec, env, &a)
		}
		return nil
	})
	if err != nil {
		return err
	}
	st.Size = n
	return nil
}

func (st *state) apply(e *store.Entry, rec time.Time, env *event.Stored, a *recordAttrs) {
	r := Record{Index: e.Index, At: rec, Actor: env.Actor, Action: a.Action, Class: a.Class, Month: a.Month, KeyID: a.KeyID,
		RangeDigest: a.RangeDigest, Archive: a.Archive, HoldID: a.HoldID}
	if a.Count != nil {
		r.Count = *a.Count
	}
	if a.FirstIndex != nil {
		r.FirstIndex = *a.FirstIndex
	}
	if a.LastIndex != nil {
		r.LastIndex = *a.LastIndex
	}
	st.Records = append(st.Records, &r)
	g := group{a.Class, a.Month}
	switch a.Action {
	case "archived":
		st.Archived[g] = &r
	case "destroyed":
		st.Destroyed[g] = &r
	case "hold":
		h := &Hold{ID: a.HoldID, Types: a.Types, ReasonRef: a.ReasonRef, Index: e.Index, Placed: rec, PlacedBy: env.Actor}
		h.From, _ = time.Parse(time.RFC3339Nano, a.From)
		h.To, _ = time.Parse(time.RFC3339Nano, a.To)
		for _, s := range env.Refs {
			if id, err := event.ParseUUID(s); err == nil {
				h.Events = append(h.Events, id)
			}
		}
		st.Holds[h.ID] = h
		st.holdEventID[h.ID] = e.ID
	case "release":
		if h := st.Holds[a.HoldID]; h != nil && h.Released == nil {
			h.Released = &Release{Index: e.Index, At: rec, By: env.Actor}
		}
		st.LastRelease = e.Index
	}
}

// active returns the holds in force.
func (st *state) active() []*Hold {
	var out []*Hold
	for _, h := range st.Holds {
		if h.Released == nil {
			out = append(out, h)
		}
	}
	return out
}
