// Package retention owns how long a system's records are kept and how they go: schedules per retention class
// (read from the system definition's "retention" member), legal holds (recorded as events), and the worker that
// archives months past their archive-after period and, at the end of retention, crypto-shreds them — destroys
// the period key, erases ciphertext, envelopes and index rows, keeps the leaves — and records each action as a
// `retention` event, so that verification can tell destruction by record from tampering.
//
// It never destroys anything that a floor, a hold or the definition in force still needs, never acts on one
// clock alone (the wall clock and the log's own recorded times must both be past the period plus a safety
// margin), and never logs a personal value or key material.
package retention

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/system"
)

// Floors in months: automatically generated logs at least six months (AI Act Art. 19(1), 26(6)); documentation
// ten years (Art. 18(1)). A schedule below a floor needs a recorded legal basis and the DPO's approval.
var Floors = map[string]int{event.ClassLog: 6, event.ClassDoc: 120}

// MaxMonths bounds a retention or archive-after period (a hundred years).
const MaxMonths = 1200

// ClassSchedule is the schedule of one retention class.
type ClassSchedule struct {
	// RetainMonths is how long a month's records are kept, counted from the end of the month they were recorded
	// in: month M is destroyed once M has ended RetainMonths months ago (plus the safety margin).
	RetainMonths int `json:"retain_months"`
	// ArchiveAfterMonths copies a month to the archive target once it ended this many months ago (0: never).
	ArchiveAfterMonths int `json:"archive_after_months,omitzero"`
}

// Schedule is a system's retention schedule: the "retention" member of its definition.
//
//	retention:
//	  log: {retain_months: 60, archive_after_months: 12}
//	  doc: {retain_months: 120}
//	  legal_basis: "…"   # required when a class is below its floor
//	  approved_by: "dpo-name" # the DPO principal who approved it (the API checks it is the caller, with the dpo role)
//
// A class without a schedule is kept indefinitely: nothing is destroyed without an explicit period.
type Schedule struct {
	Log        *ClassSchedule `json:"log,omitzero"`
	Doc        *ClassSchedule `json:"doc,omitzero"`
	LegalBasis string         `json:"legal_basis,omitzero"`
	ApprovedBy string         `json:"approved_by,omitzero"`
}

// Class returns the schedule of a class, or nil when the class is kept indefinitely.
func (s *Schedule) Class(c string) *ClassSchedule {
	if s == nil {
		return nil
	}
	switch c {
	case event.ClassLog:
		return s.Log
	case event.ClassDoc:
		return s.Doc
	}
	return nil
}

// BelowFloor lists the classes whose retention is below their floor.
func (s *Schedule) BelowFloor() []string {
	var out []string
	for _, c := range []string{event.ClassLog, event.ClassDoc} {
		if cs := s.Class(c); cs != nil && cs.RetainMonths < Floors[c] {
			out = append(out, c)
		}
	}
	return out
}

// Parse parses and validates a schedule (the raw "retention" member; empty means none). Errors are
// *system.FieldError naming the member at fault, from "/retention".
func Parse(raw jsontext.Value) (*Schedule, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, nil
	}
	var s Schedule
	if err := json.Unmarshal(raw, &s, json.RejectUnknownMembers(true)); err != nil {
		var se *json.SemanticError
		if errors.As(err, &se) {
			return nil, &system.FieldError{Field: "/retention" + string(se.JSONPointer), Reason: "unknown member or wrong type (classes: log, doc; each retain_months, archive_after_months)"}
		}
		return nil, &system.FieldError{Field: "/retention", Reason: "must be an object"}
	}
	for _, c := range []string{event.ClassLog, event.ClassDoc} {
		cs := s.Class(c)
		if cs == nil {
			continue
		}
		f := "/retention/" + c
		switch {
		case cs.RetainMonths < 0 || cs.RetainMonths > MaxMonths:
			return nil, &system.FieldError{Field: f + "/retain_months", Reason: fmt.Sprintf("must be between 0 and %d", MaxMonths)}
		case cs.ArchiveAfterMonths < 0 || cs.ArchiveAfterMonths > MaxMonths:
			return nil, &system.FieldError{Field: f + "/archive_after_months", Reason: fmt.Sprintf("must be between 0 and %d", MaxMonths)}
		case cs.ArchiveAfterMonths > 0 && cs.ArchiveAfterMonths >= cs.RetainMonths:
			return nil, &system.FieldError{Field: f + "/archive_after_months", Reason: "must be shorter than retain_months (a month is destroyed before it would be archived)"}
		}
	}
	if below := s.BelowFloor(); len(below) > 0 {
		c := below[0]
		f := "/retention/" + c + "/retain_months"
		if s.LegalBasis == "" {
			return nil, &system.FieldError{Field: f, Reason: fmt.Sprintf("below the %d-month floor for the %s class (AI Act %s): lowering it needs legal_basis (the law that requires earlier deletion) and approved_by (the DPO)", Floors[c], c, floorArticle[c])}
		}
		if s.ApprovedBy == "" {
			return nil, &system.FieldError{Field: "/retention/approved_by", Reason: "a schedule below a floor needs the approving DPO"}
		}
	}
	return &s, nil
}

var floorArticle = map[string]string{event.ClassLog: "Art. 19(1), 26(6)", event.ClassDoc: "Art. 18(1)"}

// Change is a schedule as recorded in the log: in force from the definition event at Index, recorded at At.
type Change struct {
	Index    uint64
	At       time.Time
	Schedule *Schedule // nil: no schedule
	Err      error     // the recorded schedule does not parse: the worker acts on none of it
}

// Effective is the schedule of one class in force at a time, with a shortening still waiting out its grace.
type Effective struct {
	Class  string
	Months int  // retention in force; meaningful when Set
	Set    bool // false: kept indefinitely
	// ArchiveAfter is the archive-after period in force (0: no archival).
	ArchiveAfter int
	// Pending is a shorter retention recorded but not yet in force, and when it takes effect.
	Pending     *int
	PendingFrom time.Time
	FromIndex   uint64 // the definition event the value in force comes from
	BelowFloor  bool
	LegalBasis  string
	ApprovedBy  string
}

// effective folds the recorded schedule changes into the schedule of class c in force at now: a change that
// keeps records longer (or as long) applies at once; one that would destroy sooner applies only once it has
// been recorded for grace.
func effective(changes []Change, c string, now time.Time, grace time.Duration) (Effective, error) {
	e := Effective{Class: c}
	for i, ch := range changes {
		if ch.Err != nil {
			return e, fmt.Errorf("schedule recorded at index %d: %w", ch.Index, ch.Err)
		}
		cs := ch.Schedule.Class(c)
		next := -1 // indefinitely
		if cs != nil {
			next = cs.RetainMonths
		}
		cur := -1
		if e.Set {
			cur = e.Months
		}
		shorter := next >= 0 && (cur < 0 || next < cur)
		// The first definition has nothing before it to protect: it applies at once.
		if shorter && i > 0 && now.Before(ch.At.Add(grace)) {
			n := next
			e.Pending, e.PendingFrom = &n, ch.At.Add(grace)
			if cs != nil {
				e.ArchiveAfter = cs.ArchiveAfterMonths
			}
			continue
		}
		e.Pending = nil
		e.Set, e.Months, e.FromIndex = next >= 0, next, ch.Index
		e.ArchiveAfter = 0
		if cs != nil {
			e.ArchiveAfter = cs.ArchiveAfterMonths
		}
		e.BelowFloor = e.Set && e.Months < Floors[c]
		e.LegalBasis, e.ApprovedBy = "", ""
		if ch.Schedule != nil {
			e.LegalBasis, e.ApprovedBy = ch.Schedule.LegalBasis, ch.Schedule.ApprovedBy
		}
	}
	return e, nil
}
