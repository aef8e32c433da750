package retention

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/seal"
	"github.com/cairn-ai/cairn/internal/store"
	"github.com/cairn-ai/cairn/internal/verify"
)

// Forgetter removes what a query index holds of destroyed entries beyond their leaf fields (package index).
type Forgetter interface {
	Forget(ctx context.Context, system string, indexes []uint64) error
}

// SubjectEraser is the hook for subject-level erasure (GDPR Art. 17) through the token vault: destroying one
// data subject's pseudonymisation tokens where no hold or legal obligation applies. Without a token vault
// Config.Subjects is nil and reports say subject erasure is unavailable.
type SubjectEraser interface {
	// EraseSubject destroys the vault entries of a subject in a system, unless held; it reports what it did.
	EraseSubject(ctx context.Context, system, subjectToken string) (string, error)
}

// Config configures a Worker. Zero values select the defaults.
type Config struct {
	Ledger *ledger.Ledger
	Keys   *seal.Keyring
	// Archive receives archived months; nil: archive-after periods are reported, not acted on.
	Archive Archive
	// Index is the query index to clean of destroyed entries' envelope fields; nil: none.
	Index Forgetter
	// Now is the wall clock (tests inject one).
	Now func() time.Time
	// Grace is how long a schedule change that would destroy sooner waits before it takes effect (default 30 days).
	Grace time.Duration
	// Margin is how far past the end of retention both clocks must be before a month is destroyed (default 7 days).
	Margin time.Duration
	// Actor is the principal recorded on retention events (default "cairn:retention").
	Actor string
	// Subjects is the subject-erasure hook (nil: the server has no token vault).
	Subjects SubjectEraser
	Logger   *slog.Logger
}

// Worker archives and destroys what schedules say is due. Runs are serialised; it is safe for concurrent use.
type Worker struct {
	cfg    Config
	mu     sync.Mutex
	states map[string]*state // per system, updated incrementally from the log
}

// NewWorker makes a worker.
func NewWorker(cfg Config) *Worker {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Grace == 0 {
		cfg.Grace = 30 * 24 * time.Hour
	}
	if cfg.Margin == 0 {
		cfg.Margin = 7 * 24 * time.Hour
	}
	if cfg.Actor == "" {
		cfg.Actor = "cairn:retention"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Worker{cfg: cfg, states: map[string]*state{}}
}

// Action is one thing a run did (or, in a dry run, would do).
type Action struct {
	System string `json:"system"`
	Kind   string `json:"action"` // "archive" or "destroy"
	Class  string `json:"class"`
	Month  string `json:"month"`
	KeyID  string `json:"key_id"`
	// Count is the number of entries archived or destroyed by this action; Kept the entries of the month kept
	// (held, the definition in force, retention records).
	Count int `json:"count"`
	Kept  int `json:"kept"`
	// Rule says why: the schedule and its period.
	Rule string `json:"rule"`
	// Record is the index of the `retention` event that records it (0 in a dry run).
	Record uint64 `json:"record,omitempty"`
	Done   bool   `json:"done"`
}

// Skip is a system a run did not act on, and why.
type Skip struct {
	System string `json:"system"`
	Reason string `json:"reason"`
}

// RunReport is the outcome of a run.
type RunReport struct {
	At      time.Time `json:"at"`
	LogTime map[string]time.Time
	DryRun  bool     `json:"dry_run"`
	Actions []Action `json:"actions"`
	Skipped []Skip   `json:"skipped,omitempty"`
}

// Run archives and destroys whatever is due in every system. With dryRun it only reports what it would do.
func (w *Worker) Run(ctx context.Context, dryRun bool) (*RunReport, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.cfg.Now().UTC()
	rep := &RunReport{At: now, DryRun: dryRun, LogTime: map[string]time.Time{}}
	systems := w.cfg.Ledger.Systems()
	slices.Sort(systems)
	var errs []error
	for _, sys := range systems {
		if sys == ledger.AdminLog {
			continue
		}
		if err := w.runSystem(ctx, sys, now, dryRun, rep); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", sys, err))
			rep.Skipped = append(rep.Skipped, Skip{System: sys, Reason: err.Error()})
		}
	}
	return rep, errors.Join(errs...)
}

func (w *Worker) state(ctx context.Context, sys string) (*state, *ledger.Log, error) {
	lg, err := w.cfg.Ledger.Log(sys)
	if err != nil {
		return nil, nil, err
	}
	st := w.states[sys]
	if st == nil {
		st = newState(sys)
		w.states[sys] = st
	}
	if err := st.update(ctx, lg); err != nil {
		delete(w.states, sys)
		return nil, nil, err
	}
	return st, lg, nil
}

// clockSkew is how far the wall clock may be behind the log's latest recorded time before a run refuses to act.
const clockSkew = 5 * time.Minute

func (w *Worker) runSystem(ctx context.Context, sys string, now time.Time, dryRun bool, rep *RunReport) error {
	st, lg, err := w.state(ctx, sys)
	if err != nil {
		return err
	}
	if st.Size == 0 {
		return nil
	}
	rep.LogTime[sys] = st.LogTime
	if now.Before(st.LogTime.Add(-clockSkew)) {
		return fmt.Errorf("the wall clock (%s) is behind the log's recorded time (%s): one of them is wrong; nothing done", now.Format(time.RFC3339), st.LogTime.Format(time.RFC3339))
	}
	// Both clocks must agree: act on the earlier of the wall clock and the log's own latest recorded time.
	t := now
	if st.LogTime.Before(t) {
		t = st.LogTime
	}
	months := monthRange(st.FirstRecorded, st.LogTime)
	for _, class := range []string{event.ClassLog, event.ClassDoc} {
		eff, err := effective(st.Changes, class, t, w.cfg.Grace)
		if err != nil {
			return fmt.Errorf("schedule: %w", err)
		}
		for _, m := range months {
			g := group{class, m.Format("2006-01")}
			end := m.AddDate(0, 1, 0)
			if eff.Set && !t.Before(end.AddDate(0, eff.Months, 0).Add(w.cfg.Margin)) {
				if d := st.Destroyed[g]; (d != nil && d.Index > st.LastRelease) || st.isSettled("destroy", g) {
					continue // destroyed, or nothing to destroy, and nothing kept then has been released since
				}
				rule := fmt.Sprintf("retain %d months (definition at index %d), safety margin %s", eff.Months, eff.FromIndex, w.cfg.Margin)
				if eff.BelowFloor {
					rule += ", below the floor under legal basis: " + eff.LegalBasis + " (approved by " + eff.ApprovedBy + ")"
				}
				if err := w.destroy(ctx, st, lg, g, m, rule, dryRun, rep); err != nil {
					return fmt.Errorf("destroy %s %s: %w", class, g.Month, err)
				}
				continue
			}
			if eff.ArchiveAfter > 0 && w.cfg.Archive != nil && st.Archived[g] == nil && st.Destroyed[g] == nil &&
				!st.isSettled("archive", g) && !t.Before(end.AddDate(0, eff.ArchiveAfter, 0)) {
				rule := fmt.Sprintf("archive after %d months (definition at index %d)", eff.ArchiveAfter, eff.FromIndex)
				if err := w.archive(ctx, st, lg, g, m, rule, dryRun, rep); err != nil {
					return fmt.Errorf("archive %s %s: %w", class, g.Month, err)
				}
			}
		}
	}
	return nil
}

// monthRange lists the first instants (UTC) of the months from a's to b's.
func monthRange(a, b time.Time) []time.Time {
	var out []time.Time
	m := time.Date(a.Year(), a.Month(), 1, 0, 0, 0, 0, time.UTC)
	for !m.After(b) {
		out = append(out, m)
		m = m.AddDate(0, 1, 0)
	}
	return out
}

// month is the entries of one class recorded in one month. recorded never decreases along a log, so the month
// is a contiguous index range [lo, hi), found by binary search; the class is the entry's type's. Its entries are
// streamed, never held in memory all at once: a month of a busy system can hold hundreds of millions.
type month struct {
	lg     *ledger.Log
	class  string
	lo, hi uint64
}

func monthOf(ctx context.Context, lg *ledger.Log, size uint64, class string, m time.Time) (*month, error) {
	sl := lg.Store()
	search := func(t time.Time) (uint64, error) {
		lo, hi := uint64(0), size
		for lo < hi {
			mid := lo + (hi-lo)/2
			e, err := sl.Entry(ctx, mid)
			if err != nil {
				return 0, err
			}
			if e.Recorded < t.UnixNano() {
				lo = mid + 1
			} else {
				hi = mid
			}
		}
		return lo, nil
	}
	lo, err := search(m)
	if err != nil {
		return nil, err
	}
	hi, err := search(m.AddDate(0, 1, 0))
	if err != nil {
		return nil, err
	}
	return &month{lg: lg, class: class, lo: lo, hi: hi}, nil
}

// each calls fn for every entry of the month's class, in index order.
func (mo *month) each(ctx context.Context, fn func(*store.Entry) error) error {
	return mo.lg.Store().Entries(ctx, mo.lo, mo.hi, func(e *store.Entry) error {
		if ClassOf(e.Type) != mo.class {
			return nil
		}
		return fn(e)
	})
}

// eraseChunk is how many entries one store.Log.Erase call takes.
const eraseChunk = 4096

// kept reports whether an entry must survive its month's destruction: a retention record (the proof of
// retention itself), the definition in force (the log cannot be opened without it), or an entry under a hold.
func (st *state) kept(e *store.Entry) bool {
	if e.Type == "retention" || (st.HasDef && e.Index == st.DefIndex) {
		return true
	}
	for _, h := range st.active() {
		if h.Covers(e) {
			return true
		}
	}
	return false
}

func (w *Worker) destroy(ctx context.Context, st *state, lg *ledger.Log, g group, m time.Time, rule string, dryRun bool, rep *RunReport) error {
	mo, err := monthOf(ctx, lg, st.Size, g.Class, m)
	if err != nil {
		return err
	}
	// Pass 1: what goes and what stays.
	var members, doomed, kept, keptPayload int
	var first, last uint64
	err = mo.each(ctx, func(e *store.Entry) error {
		if members == 0 {
			first = e.Index
		}
		members++
		last = e.Index
		switch {
		case st.kept(e):
			kept++
			if e.Sealed != nil {
				keptPayload++
			}
		case e.Envelope != nil || e.Sealed != nil:
			doomed++
		}
		return nil
	})
	if err != nil {
		return err
	}
	if members == 0 {
		st.settle("destroy", g)
		return nil
	}
	periodID := seal.PeriodID(st.System, g.Class, m)
	holdID := seal.HoldKeyID(periodID)
	_, perr := w.cfg.Keys.Lookup(periodID)
	periodAlive := perr == nil
	_, herr := w.cfg.Keys.Lookup(holdID)
	holdAlive := herr == nil
	destroyHold := holdAlive && keptPayload == 0
	if doomed == 0 && !destroyHold && (!periodAlive || kept == members) {
		st.settle("destroy", g)
		return nil // nothing to destroy: all of it held, or done before
	}
	a := Action{System: st.System, Kind: "destroy", Class: g.Class, Month: g.Month, KeyID: periodID, Count: doomed, Kept: kept, Rule: rule}
	if !periodAlive && destroyHold {
		a.KeyID = holdID
	}
	if dryRun {
		rep.Actions = append(rep.Actions, a)
		return nil
	}
	sl := lg.Store()
	// Pass 2: what must survive is re-wrapped under the period's hold key before the period key goes.
	if periodAlive && keptPayload > 0 {
		pk, err := w.cfg.Keys.Lookup(periodID)
		if err != nil {
			return err
		}
		hk, err := w.cfg.Keys.Period(st.System, "hold-"+g.Class, m)
		if err != nil {
			return err
		}
		err = mo.each(ctx, func(e *store.Entry) error {
			if e.Sealed == nil || !st.kept(e) {
				return nil
			}
			sealed, err := seal.Rewrap(pk, hk, e.ID[:], e.Sealed)
			if errors.Is(err, seal.ErrOpen) {
				return nil // re-wrapped by an earlier, interrupted run
			}
			if err != nil {
				return fmt.Errorf("re-wrap %d: %w", e.Index, err)
			}
			return sl.ReplaceSealed(ctx, e.Index, sealed)
		})
		if err != nil {
			return err
		}
	}
	// Crypto-shredding: the period key (and the hold key once nothing needs it).
	if periodAlive {
		if err := w.cfg.Keys.Destroy(periodID); err != nil {
			return err
		}
	}
	if destroyHold {
		if err := w.cfg.Keys.Destroy(holdID); err != nil {
			return err
		}
	}
	// Pass 3: ciphertext, envelopes and index rows go, in chunks; leaves stay. The record's range digest covers
	// every erased entry of the month and class, by index and leaf, this run's and earlier runs'.
	rh := verify.NewRangeHash()
	var chunk []uint64
	flush := func() error {
		if len(chunk) == 0 {
			return nil
		}
		if err := sl.Erase(ctx, chunk); err != nil {
			return err
		}
		if w.cfg.Index != nil {
			if err := w.cfg.Index.Forget(ctx, st.System, chunk); err != nil {
				return fmt.Errorf("query index: %w", err)
			}
		}
		chunk = chunk[:0]
		return nil
	}
	err = mo.each(ctx, func(e *store.Entry) error {
		switch {
		case e.Envelope == nil && e.Sealed == nil:
			rh.Add(e)
		case !st.kept(e):
			rh.Add(e)
			if chunk = append(chunk, e.Index); len(chunk) == eraseChunk {
				return flush()
			}
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return err
	}
	if w.cfg.Archive != nil {
		if err := w.cfg.Archive.Delete(ctx, ArchiveName(st.System, g.Class, g.Month)); err != nil {
			return fmt.Errorf("archive: %w", err)
		}
	}
	attrs := recordAttrs{Action: "destroyed", Class: g.Class, Month: g.Month, KeyID: a.KeyID, Count: u64(rh.Count()),
		RangeDigest: rh.Sum(), FirstIndex: u64(first), LastIndex: u64(last)}
	r, err := w.record(ctx, st, lg, attrs)
	if err != nil {
		return err
	}
	a.Record, a.Done = r.Index, true
	rep.Actions = append(rep.Actions, a)
	w.cfg.Logger.Info("retention: destroyed", "system", st.System, "class", g.Class, "month", g.Month, "key", a.KeyID, "count", a.Count, "kept", kept, "record", r.Index)
	return nil
}

// archivable reports whether archival copies an entry: one with its envelope, not a retention record.
func archivable(e *store.Entry) bool { return e.Envelope != nil && e.Type != "retention" }

func (w *Worker) archive(ctx context.Context, st *state, lg *ledger.Log, g group, m time.Time, rule string, dryRun bool, rep *RunReport) error {
	mo, err := monthOf(ctx, lg, st.Size, g.Class, m)
	if err != nil {
		return err
	}
	count := 0
	var first, last uint64
	err = mo.each(ctx, func(e *store.Entry) error {
		if archivable(e) {
			if count == 0 {
				first = e.Index
			}
			count++
			last = e.Index
		}
		return nil
	})
	if err != nil {
		return err
	}
	if count == 0 {
		st.settle("archive", g)
		return nil
	}
	if _, size := lg.Checkpoint(); last >= size {
		return nil // no signed checkpoint covers the month yet: the next run archives it
	}
	periodID := seal.PeriodID(st.System, g.Class, m)
	a := Action{System: st.System, Kind: "archive", Class: g.Class, Month: g.Month, KeyID: periodID, Count: count, Rule: rule}
	if dryRun {
		rep.Actions = append(rep.Actions, a)
		return nil
	}
	name := ArchiveName(st.System, g.Class, g.Month)
	pr, pw := io.Pipe()
	var trailer archiveTrailer
	go func() {
		var err error
		trailer, err = writeArchive(pw, lg, archiveHeader{System: st.System, Class: g.Class, Month: g.Month, KeyID: periodID},
			func(fn func(*store.Entry) error) error {
				return mo.each(ctx, func(e *store.Entry) error {
					if !archivable(e) {
						return nil
					}
					return fn(e)
				})
			})
		pw.CloseWithError(err)
	}()
	if err := w.cfg.Archive.Put(ctx, name, pr); err != nil {
		pr.CloseWithError(err)
		return err
	}
	attrs := recordAttrs{Action: "archived", Class: g.Class, Month: g.Month, KeyID: periodID, Count: u64(trailer.Count),
		RangeDigest: trailer.RangeDigest, FirstIndex: u64(first), LastIndex: u64(last), Archive: name}
	r, err := w.record(ctx, st, lg, attrs)
	if err != nil {
		return err
	}
	a.Record, a.Done, a.Count = r.Index, true, int(trailer.Count)
	rep.Actions = append(rep.Actions, a)
	w.cfg.Logger.Info("retention: archived", "system", st.System, "class", g.Class, "month", g.Month, "count", a.Count, "archive", name, "record", r.Index)
	return nil
}

// record appends a retention record and folds it (and anything appended meanwhile) into the state.
func (w *Worker) record(ctx context.Context, st *state, lg *ledger.Log, a recordAttrs) (ledger.Receipt, error) {
	raw, _ := json.Marshal(map[string]any{"type": "retention", "attrs": a})
	r, err := w.cfg.Ledger.AppendServer(ctx, st.System, raw, w.cfg.Actor)
	if err != nil {
		return r, fmt.Errorf("record: %w", err)
	}
	return r, st.update(ctx, lg)
}

// Start runs the worker a minute after it starts (or after interval, if shorter) and then every interval, until
// ctx ends; stop waits for a run in progress.
func (w *Worker) Start(ctx context.Context, interval time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The first run comes soon after start, so a server restarted more often than the interval still runs.
		t := time.NewTimer(min(interval, time.Minute))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				t.Reset(interval)
				rep, err := w.Run(ctx, false)
				if err != nil {
					w.cfg.Logger.Error("retention run", "err", err)
				} else {
					w.cfg.Logger.Info("retention run", "actions", len(rep.Actions))
				}
			}
		}
	}()
	return func() { cancel(); <-done }
}
