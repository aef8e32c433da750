package retention

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/ledger"
)

// Report is what retention holds, until when, under which rule, and what was archived and destroyed when: the
// documented destruction record, and the retention section of the technical documentation.
type Report struct {
	At      time.Time      `json:"at"`
	Systems []SystemReport `json:"systems"`
	// SubjectErasure says whether subject-level erasure (GDPR Art. 17) through the token vault is available.
	SubjectErasure string `json:"subject_erasure"`
}

// SystemReport is the retention state of one system.
type SystemReport struct {
	System    string        `json:"system"`
	LogTime   time.Time     `json:"log_time"`
	Classes   []ClassReport `json:"classes"`
	Holds     []*Hold       `json:"holds"`
	Archived  []*Record     `json:"archived"`
	Destroyed []*Record     `json:"destroyed"`
	Error     string        `json:"error,omitempty"`
}

// ClassReport is the schedule of one retention class in force, and what is due next.
type ClassReport struct {
	Class              string    `json:"class"`
	Rule               string    `json:"rule"`
	FloorMonths        int       `json:"floor_months"`
	RetainMonths       *int      `json:"retain_months"` // nil: kept indefinitely
	ArchiveAfterMonths int       `json:"archive_after_months,omitempty"`
	BelowFloor         bool      `json:"below_floor,omitempty"`
	LegalBasis         string    `json:"legal_basis,omitempty"`
	ApprovedBy         string    `json:"approved_by,omitempty"`
	PendingMonths      *int      `json:"pending_retain_months,omitempty"`
	PendingFrom        time.Time `json:"pending_from,omitzero"`
	// NextDestroy is the oldest month not yet destroyed and when it will be (both clocks permitting).
	NextDestroyMonth string    `json:"next_destroy_month,omitempty"`
	NextDestroyAt    time.Time `json:"next_destroy_at,omitzero"`
}

// Report describes the retention of the given systems (default: every system).
func (w *Worker) Report(ctx context.Context, only ...string) (*Report, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.cfg.Now().UTC()
	rep := &Report{At: now, SubjectErasure: "unavailable: this server runs without a token vault"}
	if w.cfg.Subjects != nil {
		rep.SubjectErasure = "available through the token vault (cairn vault erase), refused while a legal hold applies to a system using the subject's domain"
	}
	systems := w.cfg.Ledger.Systems()
	slices.Sort(systems)
	for _, sys := range systems {
		if sys == ledger.AdminLog || (len(only) > 0 && !slices.Contains(only, sys)) {
			continue
		}
		sr := SystemReport{System: sys}
		st, _, err := w.state(ctx, sys)
		if err != nil {
			sr.Error = err.Error()
			rep.Systems = append(rep.Systems, sr)
			continue
		}
		sr.LogTime = st.LogTime
		for _, h := range st.Holds {
			sr.Holds = append(sr.Holds, h)
		}
		slices.SortFunc(sr.Holds, func(a, b *Hold) int { return int(a.Index) - int(b.Index) })
		for _, r := range st.Records {
			switch r.Action {
			case "archived":
				sr.Archived = append(sr.Archived, r)
			case "destroyed":
				sr.Destroyed = append(sr.Destroyed, r)
			}
		}
		t := now
		if st.LogTime.Before(t) {
			t = st.LogTime
		}
		for _, c := range []string{event.ClassLog, event.ClassDoc} {
			eff, err := effective(st.Changes, c, t, w.cfg.Grace)
			if err != nil {
				sr.Error = "schedule: " + err.Error()
				break
			}
			cr := ClassReport{Class: c, FloorMonths: Floors[c], ArchiveAfterMonths: eff.ArchiveAfter, BelowFloor: eff.BelowFloor,
				LegalBasis: eff.LegalBasis, ApprovedBy: eff.ApprovedBy, PendingMonths: eff.Pending, PendingFrom: eff.PendingFrom}
			if !eff.Set {
				cr.Rule = "no schedule: kept indefinitely (set one: GDPR storage limitation)"
			} else {
				m := eff.Months
				cr.RetainMonths = &m
				cr.Rule = fmt.Sprintf("retain %d months after the month recorded (definition at index %d; floor %d)", m, eff.FromIndex, Floors[c])
				if eff.BelowFloor {
					cr.Rule += "; below the floor under legal basis: " + eff.LegalBasis + ", approved by " + eff.ApprovedBy
				}
				if st.Size > 0 {
					for _, mo := range monthRange(st.FirstRecorded, st.LogTime) {
						if st.Destroyed[group{c, mo.Format("2006-01")}] == nil {
							cr.NextDestroyMonth = mo.Format("2006-01")
							cr.NextDestroyAt = mo.AddDate(0, 1+m, 0).Add(w.cfg.Margin)
							break
						}
					}
				}
			}
			sr.Classes = append(sr.Classes, cr)
		}
		rep.Systems = append(rep.Systems, sr)
	}
	return rep, nil
}

// WriteText writes the report for people.
func (r *Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "retention report at %s\n", r.At.Format(time.RFC3339))
	for _, s := range r.Systems {
		fmt.Fprintf(w, "\n%s (log time %s)\n", s.System, fmtTime(s.LogTime))
		if s.Error != "" {
			fmt.Fprintf(w, "  ERROR %s\n", s.Error)
		}
		for _, c := range s.Classes {
			fmt.Fprintf(w, "  %-4s %s\n", c.Class, c.Rule)
			if c.ArchiveAfterMonths > 0 {
				fmt.Fprintf(w, "       archive after %d months\n", c.ArchiveAfterMonths)
			}
			if c.PendingMonths != nil {
				fmt.Fprintf(w, "       shortened to %d months, in force from %s (grace period)\n", *c.PendingMonths, fmtTime(c.PendingFrom))
			}
			if c.NextDestroyMonth != "" {
				fmt.Fprintf(w, "       next: %s destroyed from %s\n", c.NextDestroyMonth, fmtTime(c.NextDestroyAt))
			}
		}
		for _, h := range s.Holds {
			state := "in force until released"
			if h.Released != nil {
				state = fmt.Sprintf("released %s by %s", fmtTime(h.Released.At), h.Released.By)
			}
			ref := ""
			if h.ReasonRef != "" {
				ref = " (" + h.ReasonRef + ")"
			}
			fmt.Fprintf(w, "  hold %s%s: %s; placed %s by %s; %s\n", h.ID, ref, h.Scope(), fmtTime(h.Placed), h.PlacedBy, state)
		}
		for _, rec := range append(slices.Clone(s.Archived), s.Destroyed...) {
			extra := ""
			if rec.Archive != "" {
				extra = " to " + rec.Archive
			}
			fmt.Fprintf(w, "  %-9s %s %s: %d entries [%d, %d], key %s%s, %s (record %d, %s)\n", rec.Action, rec.Class, rec.Month,
				rec.Count, rec.FirstIndex, rec.LastIndex, rec.KeyID, extra, fmtTime(rec.At), rec.Index, short(strings.TrimPrefix(rec.RangeDigest, "sha256:")))
		}
	}
	fmt.Fprintf(w, "\nsubject-level erasure: %s\n", r.SubjectErasure)
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}
