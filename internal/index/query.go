package index

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
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

// Find returns matching rows in index order, at most q.Limit of them. To page, repeat with HasAfter and After
// set to the last row's Index until fewer than Limit rows come back.
func (x *Index) Find(ctx context.Context, q Query) ([]Row, error) {
	if q.System == "" {
		return nil, errors.New("index: query without a system")
	}
	limit := q.Limit
	if limit <= 0 {
		limit = defaultLimit
	}
	limit = min(limit, maxLimit)
	if q.HasAfter && q.After >= math.MaxInt64 {
		return nil, nil
	}

	// One read transaction: the recorded-time bounds and the query see the same snapshot.
	tx, err := x.r.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("index query: %w", err)
	}
	defer tx.Rollback()

	var where strings.Builder
	args := []any{q.System}
	where.WriteString(`system = ?`)
	cond := func(c string, a ...any) {
		where.WriteString(` AND `)
		where.WriteString(c)
		args = append(args, a...)
	}
	if len(q.Types) > 0 {
		where.WriteString(` AND type IN (?`)
		where.WriteString(strings.Repeat(`,?`, len(q.Types)-1))
		where.WriteString(`)`)
		for _, t := range q.Types {
			args = append(args, t)
		}
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
			return nil, err
		}
		lo, hi := uint64(0), n
		if !q.RecordedFrom.IsZero() {
			ns := q.RecordedFrom.UnixNano()
			if lo, err = x.recordedBound(ctx, tx, q.System, n, ns); err != nil {
				return nil, err
			}
			cond(`recorded >= ?`, ns)
		}
		if !q.RecordedTo.IsZero() {
			ns := q.RecordedTo.UnixNano()
			if hi, err = x.recordedBound(ctx, tx, q.System, n, ns); err != nil {
				return nil, err
			}
			cond(`recorded < ?`, ns)
		}
		if lo >= hi {
			return nil, nil
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
	args = append(args, limit)

	rs, err := tx.QueryContext(ctx, `SELECT idx, id, type, time, recorded, model_name, model_version, deployment, actor
		FROM events WHERE `+where.String()+` ORDER BY idx LIMIT ?`, args...)
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
