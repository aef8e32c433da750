package index

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/cairn-ai/cairn/internal/event"
)

// Query selects events of one system. Every set field must match; zero fields do not filter.
type Query struct {
	System string
	Types  []string // any of
	// From, To bound the events' own "time" (client time); zero = unbounded; To exclusive. Entries whose
	// envelope was destroyed have no time and never match a time bound.
	From, To time.Time
	// RecordedFrom, RecordedTo bound the recorded (sequencer) time; zero = unbounded; To exclusive.
	RecordedFrom, RecordedTo time.Time

	ModelName, ModelVersion, Deployment, Actor string

	After    uint64 // return indices > After when HasAfter (pagination)
	HasAfter bool
	Limit    int // default 100, max 10000
}

// Row is one indexed event. The envelope fields (Time, model, Deployment, Actor) are zero when the entry's
// envelope was destroyed by retention.
type Row struct {
	Index    uint64
	ID       string
	Type     string
	Time     time.Time
	Recorded time.Time

	ModelName, ModelVersion, Deployment, Actor string
}

// timeProbeLimit: a client-time range holding fewer rows than this is served from the time index (then sorted
// by idx); a wider one is not (see plan). A variable so tests can drive every plan.
var timeProbeLimit = 10000

const columns = `idx, id, type, time, recorded, model_name, model_version, deployment, actor`

// Find returns matching rows in index order, at most q.Limit of them. To page, repeat with HasAfter and After
// set to the last row's Index until fewer than Limit rows come back.
func (x *Index) Find(ctx context.Context, q Query) ([]Row, error) {
	if q.System == "" {
		return nil, errors.New("index: query without a system")
	}
	// One read transaction: the plan's probes and the query see the same snapshot.
	tx, err := x.r.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("index query: %w", err)
	}
	defer tx.Rollback()
	query, args, err := x.plan(ctx, tx, q)
	if err != nil || query == "" {
		return nil, err
	}
	rs, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("index query: %w", err)
	}
	defer rs.Close()
	var out []Row
	for rs.Next() {
		var (
			idx, rec                       int64
			id                             []byte
			typ                            string
			tm                             sql.NullInt64
			mname, mversion, deploy, actor sql.NullString
		)
		if err := rs.Scan(&idx, &id, &typ, &tm, &rec, &mname, &mversion, &deploy, &actor); err != nil {
			return nil, fmt.Errorf("index query: %w", err)
		}
		r := Row{
			Index: uint64(idx), Type: typ, Recorded: time.Unix(0, rec).UTC(),
			ModelName: mname.String, ModelVersion: mversion.String, Deployment: deploy.String, Actor: actor.String,
		}
		if len(id) == len(event.UUID{}) {
			r.ID = event.UUID(id).String()
		}
		if tm.Valid {
			r.Time = time.Unix(0, tm.Int64).UTC()
		}
		out = append(out, r)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("index query: %w", err)
	}
	return out, nil
}

// plan builds the SQL for q, or "" when q cannot match anything.
//
// Every query has the same shape, "the first Limit matches after After in idx order", so the best access path
// is an index that yields rows already in idx order: walking it stops after Limit matches, at any depth of
// pagination, and it visits only rows with the indexed value, a subset of what a walk of the table visits.
// SQLite's planner, which knows average selectivities but not skew, often prefers a walk of the whole table or
// an index followed by a sort of every match; so plan chooses the path itself:
//
//  1. A narrow client-time range (fewer than timeProbeLimit rows, counted on the index with a capped probe):
//     the time index, then a sort of those few rows by idx.
//  2. Model name and version: events_model, in idx order within one (name, version).
//  3. Types: events_type, one walk per type in idx order, merged (UNION ALL ... ORDER BY idx is a merge).
//  4. Deployment: events_deployment, in idx order.
//  5. Otherwise, SQLite's choice: usually the table itself in idx order, bounded by After and by the idx range
//     of any recorded-time bounds.
func (x *Index) plan(ctx context.Context, tx *sql.Tx, q Query) (string, []any, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = defaultLimit
	}
	limit = min(limit, maxLimit)
	if q.HasAfter && q.After >= math.MaxInt64 {
		return "", nil, nil
	}

	// The conditions common to every path, without types.
	var where strings.Builder
	args := []any{q.System}
	where.WriteString(`system = ?`)
	cond := func(c string, a ...any) {
		where.WriteString(` AND `)
		where.WriteString(c)
		args = append(args, a...)
	}
	if q.HasAfter {
		cond(`idx > ?`, int64(q.After))
	}
	if !q.From.IsZero() {
		cond(`time >= ?`, q.From.UnixNano())
	}
	if !q.To.IsZero() {
		cond(`time < ?`, q.To.UnixNano())
	}
	if !q.RecordedFrom.IsZero() || !q.RecordedTo.IsZero() {
		// Recorded times never decrease along a log, so a recorded range is an index range: find its ends by
		// binary search on the primary key instead of keeping an index on recorded. The recorded predicates
		// stay, so the answer is exact even if that order were ever broken.
		n, err := scanWatermark(tx.QueryRowContext(ctx, `SELECT size FROM watermarks WHERE system = ?`, q.System))
		if err != nil {
			return "", nil, err
		}
		lo, hi := uint64(0), n
		if !q.RecordedFrom.IsZero() {
			ns := q.RecordedFrom.UnixNano()
			if lo, err = x.recordedBound(ctx, tx, q.System, n, ns); err != nil {
				return "", nil, err
			}
			cond(`recorded >= ?`, ns)
		}
		if !q.RecordedTo.IsZero() {
			ns := q.RecordedTo.UnixNano()
			if hi, err = x.recordedBound(ctx, tx, q.System, n, ns); err != nil {
				return "", nil, err
			}
			cond(`recorded < ?`, ns)
		}
		if lo >= hi {
			return "", nil, nil
		}
		cond(`idx >= ? AND idx < ?`, int64(lo), int64(hi))
	}
	if q.ModelName != "" {
		cond(`model_name = ?`, q.ModelName)
	}
	if q.ModelVersion != "" {
		cond(`model_version = ?`, q.ModelVersion)
	}
	if q.Deployment != "" {
		cond(`deployment = ?`, q.Deployment)
	}
	if q.Actor != "" {
		cond(`actor = ?`, q.Actor)
	}
	types := slices.Compact(slices.Sorted(slices.Values(q.Types)))

	// The access path.
	var via string
	switch {
	case (!q.From.IsZero() || !q.To.IsZero()) && x.narrowTime(ctx, tx, q):
		via = `events_time`
	case q.ModelName != "" && q.ModelVersion != "":
		via = `events_model`
	case len(types) > 0:
		// One arm per type, each walking events_type in idx order; the compound's ORDER BY merges them.
		var b strings.Builder
		var all []any
		for i, t := range types {
			if i > 0 {
				b.WriteString(` UNION ALL `)
			}
			b.WriteString(`SELECT ` + columns + ` FROM events INDEXED BY events_type WHERE `)
			b.WriteString(where.String())
			b.WriteString(` AND type = ?`)
			all = append(append(all, args...), t)
		}
		b.WriteString(` ORDER BY idx LIMIT ?`)
		return b.String(), append(all, limit), nil
	case q.Deployment != "":
		via = `events_deployment`
	}
	if len(types) > 0 {
		where.WriteString(` AND type IN (?`)
		where.WriteString(strings.Repeat(`,?`, len(types)-1))
		where.WriteString(`)`)
		for _, t := range types {
			args = append(args, t)
		}
	}
	from := `events`
	if via != "" {
		from += ` INDEXED BY ` + via
	}
	return `SELECT ` + columns + ` FROM ` + from + ` WHERE ` + where.String() + ` ORDER BY idx LIMIT ?`,
		append(args, limit), nil
}

// narrowTime reports whether q's client-time range holds fewer than timeProbeLimit rows of its system. The
// probe reads at most that many entries of the time index (no table rows).
func (x *Index) narrowTime(ctx context.Context, tx *sql.Tx, q Query) bool {
	query := `SELECT count(*) FROM (SELECT 1 FROM events INDEXED BY events_time WHERE system = ?`
	args := []any{q.System}
	if !q.From.IsZero() {
		query += ` AND time >= ?`
		args = append(args, q.From.UnixNano())
	}
	if !q.To.IsZero() {
		query += ` AND time < ?`
		args = append(args, q.To.UnixNano())
	}
	var n int
	err := tx.QueryRowContext(ctx, query+` LIMIT ?)`, append(args, timeProbeLimit)...).Scan(&n)
	return err == nil && n < timeProbeLimit
}

// recordedBound returns the first index in [0, n) whose recorded time is at least ns (n if none), by binary
// search: O(log n) primary-key lookups.
func (x *Index) recordedBound(ctx context.Context, tx *sql.Tx, system string, n uint64, ns int64) (uint64, error) {
	st := tx.StmtContext(ctx, x.recAt)
	lo, hi := uint64(0), n
	for lo < hi {
		mid := lo + (hi-lo)/2
		var rec int64
		if err := st.QueryRowContext(ctx, system, int64(mid)).Scan(&rec); err != nil {
			return 0, fmt.Errorf("index query: recorded at %d: %w", mid, err)
		}
		if rec < ns {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo, nil
}

// ByID returns the index of an event id in a system. An id that is not a UUID is simply not found.
func (x *Index) ByID(ctx context.Context, system, id string) (uint64, bool, error) {
	u, err := event.ParseUUID(id)
	if err != nil {
		return 0, false, nil
	}
	var idx int64
	err = x.r.QueryRowContext(ctx, `SELECT idx FROM events WHERE id = ? AND system = ? ORDER BY idx LIMIT 1`, u[:], system).Scan(&idx)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("index: by id: %w", err)
	}
	return uint64(idx), true, nil
}
