// Package index is Cairn's query index: a SQLite projection of the logs that answers "which events of this
// system match these filters" (by type, time, model, deployment, actor, recorded time, id) without scanning a
// log.
//
// The index is a follower, never on the ingest path: it is written behind ingest by Follow, which tails each
// log from the index's watermark, and ingest never waits for it. It holds nothing that is not in the logs, so it
// can be deleted and rebuilt from index 0 at any time (Reset, then CatchUp; `cairn reindex`). Each log's
// watermark is committed in the same transaction as the rows it covers, so the index is always consistent with
// its watermark, whatever crashes.
//
// The index never stores payloads, attrs or refs: only an entry's leaf fields (index, id, type, recorded time)
// and a few envelope fields (time, model name and version, deployment, actor). It therefore holds no personal
// data beyond what envelopes hold. An entry whose envelope was destroyed by retention is indexed by its leaf
// fields alone, the envelope columns NULL.
package index

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // database/sql driver "sqlite"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/store"
)

const (
	// chunkRows is the most rows indexed in one transaction.
	chunkRows = 5000
	// pollInterval is how often Follow looks for new entries when not woken.
	pollInterval = 200 * time.Millisecond
	// maxBackoff caps Follow's retry delay after an error.
	maxBackoff = 5 * time.Second
	// insertRows is how many rows one multi-row INSERT carries: binding a statement once per 64 rows rather than
	// once per row cuts the per-statement overhead of database/sql and the driver, the main cost after parsing.
	insertRows = 64
	// insertCols is the number of columns (and parameters) per row of an INSERT.
	insertCols = 10

	defaultLimit = 100
	maxLimit     = 10000

	// schemaVersion is kept in PRAGMA user_version. An index file of another version is dropped and rebuilt: it is
	// only a projection.
	schemaVersion = 1
)

// The schema.
//
// events is a WITHOUT ROWID table clustered on (system, idx): one B-tree holds the rows, appends for a system
// land at the right edge of its range, and a scan in index order (what every query returns) is a range scan of
// the table itself. Every secondary index implicitly ends with the primary key (system, idx), so an index on
// (system, type) is also ordered by idx within a type: pagination with "idx > After ORDER BY idx LIMIT n" walks
// it without sorting.
//
// Every secondary index is a B-tree insert per row on the follower's hot path (together they roughly halve the
// follower's throughput), so there are five, each for a filter that is common and can be selective:
//
//   - events_id (id): ByID, and "find the event this ref points to". Ids are UUIDv7, so inserts land near the
//     right edge. Stored as 16-byte BLOBs, not 36-byte text.
//   - events_type (system, type): the most common filter (one or a few types), served in index order.
//   - events_time (system, time): client-time ranges. Client time is not monotonic along the log, so it needs
//     its own index.
//   - events_model (system, model_name, model_version), partial on model_name IS NOT NULL: "everything model X
//     (version Y) did". Partial, so events without a model (system events, most human actions) cost nothing.
//   - events_deployment (system, deployment), partial on deployment IS NOT NULL, for the same reason.
//
// Deliberately not indexed:
//
//   - recorded: the sequencer stamps recorded times that never decrease along a log, so a recorded-time range is
//     an idx range, found by binary search on the primary key (see recordedBound). No index needed.
//   - actor: usually combined with a type or time filter that narrows first; an actor-only query scans the
//     system's range of the table (cheap per row: the rows are small and contiguous).
const schema = `
CREATE TABLE IF NOT EXISTS events (
	system        TEXT    NOT NULL,
	idx           INTEGER NOT NULL,
	id            BLOB    NOT NULL,
	type          TEXT    NOT NULL,
	time          INTEGER,          -- the event's own time, Unix ns; NULL when the envelope is gone
	recorded      INTEGER NOT NULL, -- the sequencer's time, Unix ns (a leaf field: never NULL)
	model_name    TEXT,
	model_version TEXT,
	deployment    TEXT,
	actor         TEXT,
	PRIMARY KEY (system, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_id ON events (id);
CREATE INDEX IF NOT EXISTS events_type ON events (system, type);
CREATE INDEX IF NOT EXISTS events_time ON events (system, time);
CREATE INDEX IF NOT EXISTS events_model ON events (system, model_name, model_version) WHERE model_name IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_deployment ON events (system, deployment) WHERE deployment IS NOT NULL;
CREATE TABLE IF NOT EXISTS watermarks (
	system TEXT PRIMARY KEY,
	size   INTEGER NOT NULL -- entries [0, size) of the system's log are indexed
) WITHOUT ROWID;
`

// ErrAhead: the index holds more entries of a system than its log does. The index was built from another log
// of that name (the store was replaced); reset the system and reindex.
var ErrAhead = errors.New("index is ahead of its log: it was built from another log; reindex")

// Index is the query index. It is safe for concurrent use: writes are serialised on one connection, queries
// run on a separate read-only pool and see the last committed chunk.
type Index struct {
	w *sql.DB // the single writer connection
	r *sql.DB // read-only pool

	insMany, insOne, getWM, setWM *sql.Stmt // on w
	recAt                         *sql.Stmt // on r
	log                           *slog.Logger

	// sinceOptimize counts rows written since the planner statistics were last refreshed.
	sinceOptimize atomic.Int64
}

// Open opens (creating) the index database at path (one file for all systems).
//
// The database runs in WAL mode with synchronous=NORMAL: commits do not fsync (only checkpoints do), which costs
// the follower nothing measurable, and unlike synchronous=OFF a power loss can lose the last chunks but never
// corrupt the file. Losing chunks is harmless: the watermark is committed with its rows, so the index is still
// consistent and the follower re-indexes from the surviving watermark.
func Open(path string) (*Index, error) {
	base := "file:" + (&url.URL{Path: path}).EscapedPath()
	w, err := sql.Open("sqlite", base+"?_txlock=immediate&_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)"+
		"&_pragma=synchronous(NORMAL)&_pragma=cache_size(-65536)&_pragma=temp_store(MEMORY)")
	if err != nil {
		return nil, fmt.Errorf("open index: %w", err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	x := &Index{w: w, log: slog.Default()}
	if err := x.init(); err != nil {
		w.Close()
		return nil, err
	}
	// The reader pool is opened after the writer created the file and set WAL mode.
	r, err := sql.Open("sqlite", base+"?_pragma=busy_timeout(10000)&_pragma=query_only(1)&_pragma=cache_size(-16384)")
	if err != nil {
		x.Close()
		return nil, fmt.Errorf("open index: %w", err)
	}
	r.SetMaxOpenConns(4)
	r.SetMaxIdleConns(4)
	x.r = r
	if x.recAt, err = r.Prepare(`SELECT recorded FROM events WHERE system = ? AND idx = ?`); err != nil {
		x.Close()
		return nil, fmt.Errorf("open index: %w", err)
	}
	return x, nil
}

func (x *Index) init() error {
	ctx := context.Background()
	var v int
	if err := x.w.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
		return fmt.Errorf("open index: %w", err)
	}
	if v != 0 && v != schemaVersion {
		// Another schema: drop it and rebuild from the logs.
		x.log.Warn("index schema changed: rebuilding", "from", v, "to", schemaVersion)
		if _, err := x.w.ExecContext(ctx, `DROP TABLE IF EXISTS events; DROP TABLE IF EXISTS watermarks;`); err != nil {
			return fmt.Errorf("open index: drop old schema: %w", err)
		}
	}
	if _, err := x.w.ExecContext(ctx, schema); err != nil {
		return fmt.Errorf("open index: create schema: %w", err)
	}
	if _, err := x.w.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, schemaVersion)); err != nil {
		return fmt.Errorf("open index: %w", err)
	}
	var err error
	prep := func(q string) *sql.Stmt {
		if err != nil {
			return nil
		}
		var s *sql.Stmt
		s, err = x.w.Prepare(q)
		return s
	}
	// Refresh the planner's statistics where they are stale (cheap: analysis_limit samples each index).
	x.optimize()
	x.insMany = prep(insertSQL(insertRows))
	x.insOne = prep(insertSQL(1))
	x.getWM = prep(`SELECT size FROM watermarks WHERE system = ?`)
	x.setWM = prep(`INSERT INTO watermarks (system, size) VALUES (?, ?) ON CONFLICT (system) DO UPDATE SET size = excluded.size`)
	if err != nil {
		return fmt.Errorf("open index: prepare: %w", err)
	}
	return nil
}

// optimizeEvery is how many indexed rows trigger a refresh of the planner's statistics.
const optimizeEvery = 1 << 20

// optimize refreshes the planner's statistics of tables that changed a lot since they were last gathered. Only
// the fallback plans (see plan) depend on them; a failure is harmless and only logged.
func (x *Index) optimize() {
	x.sinceOptimize.Store(0)
	if _, err := x.w.Exec(`PRAGMA analysis_limit = 400; PRAGMA optimize = 0x10002`); err != nil {
		x.log.Warn("index: refresh planner statistics", "err", err)
	}
}

func insertSQL(rows int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO events (system, idx, id, type, time, recorded, model_name, model_version, deployment, actor) VALUES `)
	for i := range rows {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`(?,?,?,?,?,?,?,?,?,?)`)
	}
	return b.String()
}

// Close closes the index. Followers must have stopped.
func (x *Index) Close() error {
	var errs []error
	for _, s := range []*sql.Stmt{x.insMany, x.insOne, x.getWM, x.setWM, x.recAt} {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	if x.r != nil {
		errs = append(errs, x.r.Close())
	}
	errs = append(errs, x.w.Close())
	return errors.Join(errs...)
}

// Watermark returns how many entries of system are indexed; lag = lg.Size() - watermark.
func (x *Index) Watermark(system string) (uint64, error) {
	return scanWatermark(x.r.QueryRow(`SELECT size FROM watermarks WHERE system = ?`, system))
}

func scanWatermark(r *sql.Row) (uint64, error) {
	var n int64
	err := r.Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("index watermark: %w", err)
	}
	return uint64(n), nil
}

// Reset drops everything indexed for system (reindex from 0).
func (x *Index) Reset(system string) error {
	tx, err := x.w.Begin()
	if err != nil {
		return fmt.Errorf("index reset: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec(`DELETE FROM events WHERE system = ?`, system); err != nil {
		return fmt.Errorf("index reset: %w", err)
	}
	if _, err := tx.Exec(`DELETE FROM watermarks WHERE system = ?`, system); err != nil {
		return fmt.Errorf("index reset: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("index reset: %w", err)
	}
	return nil
}

// Follow tails one log from the index's watermark for that system until ctx ends: whenever wake fires (or every
// 200ms), it indexes entries [watermark, lg.Size()) in transactions of up to 5000 rows. wake may be nil; a send
// on it should not block (a buffered channel of one, sent to with select/default, coalesces wake-ups).
//
// Follow returns nil when ctx ends. Errors of the database or the log are logged and retried with backoff, since
// a follower that gave up would silently let the index fall behind; it returns early only with ErrAhead, which
// no retry can cure. There should be one follower per system; a concurrent CatchUp or Reset of the same system
// is safe (each chunk commits only if the watermark is still where the chunk starts).
func (x *Index) Follow(ctx context.Context, system string, lg store.Log, wake <-chan struct{}) error {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var backoff time.Duration
	for {
		err := x.CatchUp(ctx, system, lg)
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case errors.Is(err, ErrAhead):
			return err
		case err != nil:
			backoff = min(max(2*backoff, pollInterval), maxBackoff)
			x.log.Error("index follower", "system", system, "err", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-wake:
			if !ok {
				wake = nil // closed: fall back to polling rather than spin
			}
		case <-tick.C:
		}
	}
}

// CatchUp indexes synchronously up to lg.Size() as it is when CatchUp starts (used by `cairn reindex` and
// tests).
func (x *Index) CatchUp(ctx context.Context, system string, lg store.Log) error {
	end := lg.Size()
	for {
		moved, err := x.catchUp(ctx, system, lg, end)
		if err != nil || !moved {
			return err
		}
		// Another writer (a Reset, a second follower) moved the watermark: go on from where it is now.
	}
}

func (x *Index) catchUp(ctx context.Context, system string, lg store.Log, end uint64) (moved bool, err error) {
	// Read on the reader pool, so as not to queue behind another system's chunk; write checks it again.
	start, err := scanWatermark(x.r.QueryRowContext(ctx, `SELECT size FROM watermarks WHERE system = ?`, system))
	if err != nil {
		return false, err
	}
	if start > end {
		if n := lg.Size(); start <= n {
			return false, nil // a concurrent follower already went further than asked
		}
		return false, fmt.Errorf("%w: system %s: index holds %d entries, the log %d", ErrAhead, system, start, lg.Size())
	}
	if start == end {
		return false, nil
	}
	// Reading and parsing a chunk (the log's I/O, JSON) runs in a goroutine one chunk ahead of the transaction
	// that writes the previous chunk (SQLite), so the two overlap on separate cores.
	ctx, cancel := context.WithCancel(ctx)
	type loaded struct {
		start uint64
		rows  []row
		err   error
	}
	ch := make(chan loaded, 1)
	free := make(chan []row, 2)
	free <- make([]row, 0, min(end-start, chunkRows))
	free <- make([]row, 0, min(end-start, chunkRows))
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(ch)
		for at := start; at < end; {
			var buf []row
			select {
			case buf = <-free:
			case <-ctx.Done():
				return
			}
			n := min(end-at, chunkRows)
			rows, err := x.load(ctx, lg, at, at+n, buf[:0])
			select {
			case ch <- loaded{start: at, rows: rows, err: err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
			at += n
		}
	}()
	// Stop the reader and wait for it: it must not touch the log after CatchUp returns.
	defer func() {
		cancel()
		<-done
	}()
	for c := range ch {
		if c.err != nil {
			return false, c.err
		}
		if moved, err := x.write(ctx, system, c.start, c.rows); err != nil || moved {
			return moved, err
		}
		free <- c.rows
	}
	return false, ctx.Err()
}

// row is one entry as indexed. Empty strings are stored as NULL.
type row struct {
	idx                                        uint64
	id                                         event.UUID
	typ                                        string
	time                                       int64
	hasTime                                    bool
	recorded                                   int64
	modelName, modelVersion, deployment, actor string
}

// load reads and parses entries [start, end) of lg.
func (x *Index) load(ctx context.Context, lg store.Log, start, end uint64, rows []row) ([]row, error) {
	next := start
	err := lg.Entries(ctx, start, end, func(e *store.Entry) error {
		if e.Index != next {
			return fmt.Errorf("index: log returned entry %d, want %d", e.Index, next)
		}
		next++
		rows = append(rows, x.rowOf(e))
		return nil
	})
	if err == nil && next != end {
		err = fmt.Errorf("index: log returned entries [%d, %d), want [%d, %d)", start, next, start, end)
	}
	if err != nil {
		return rows, fmt.Errorf("index: read log: %w", err)
	}
	return rows, nil
}

// rowOf projects an entry. The leaf fields come from the entry itself (they are permanent); the rest from its
// envelope, if it still has one.
func (x *Index) rowOf(e *store.Entry) row {
	r := row{idx: e.Index, id: e.ID, typ: e.Type, recorded: e.Recorded}
	if e.Envelope == nil {
		return r
	}
	s, err := event.ParseEnvelope(e.Envelope)
	if err != nil {
		// A damaged envelope is the verifier's business; the index still lists the entry by its leaf.
		x.log.Warn("index: unparseable envelope, indexing leaf fields only", "index", e.Index, "err", err)
		return r
	}
	if t, err := time.Parse(time.RFC3339Nano, s.Time); err == nil {
		r.time, r.hasTime = t.UnixNano(), true
	}
	if s.Model != nil {
		r.modelName, r.modelVersion = s.Model.Name, s.Model.Version
	}
	r.deployment, r.actor = s.Deployment, s.Actor
	return r
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func appendArgs(args []any, system string, r *row) []any {
	var t any
	if r.hasTime {
		t = r.time
	}
	return append(args, system, int64(r.idx), r.id[:], r.typ, t, r.recorded,
		nullable(r.modelName), nullable(r.modelVersion), nullable(r.deployment), nullable(r.actor))
}

// write commits rows (entries [start, start+len(rows))) and the new watermark in one transaction. It reports
// moved, writing nothing, when the watermark is no longer start.
func (x *Index) write(ctx context.Context, system string, start uint64, rows []row) (moved bool, err error) {
	tx, err := x.w.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("index: begin: %w", err)
	}
	defer tx.Rollback()
	wm, err := scanWatermark(tx.StmtContext(ctx, x.getWM).QueryRowContext(ctx, system))
	if err != nil {
		return false, err
	}
	if wm != start {
		return true, nil
	}
	many, one := tx.StmtContext(ctx, x.insMany), tx.StmtContext(ctx, x.insOne)
	args := make([]any, 0, insertRows*insertCols)
	i := 0
	for ; i+insertRows <= len(rows); i += insertRows {
		args = args[:0]
		for j := i; j < i+insertRows; j++ {
			args = appendArgs(args, system, &rows[j])
		}
		if _, err := many.ExecContext(ctx, args...); err != nil {
			return false, fmt.Errorf("index: insert: %w", err)
		}
	}
	for ; i < len(rows); i++ {
		if _, err := one.ExecContext(ctx, appendArgs(args[:0], system, &rows[i])...); err != nil {
			return false, fmt.Errorf("index: insert: %w", err)
		}
	}
	if _, err := tx.StmtContext(ctx, x.setWM).ExecContext(ctx, system, int64(start)+int64(len(rows))); err != nil {
		return false, fmt.Errorf("index: set watermark: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("index: commit: %w", err)
	}
	if x.sinceOptimize.Add(int64(len(rows))) >= optimizeEvery {
		x.optimize()
	}
	return false, nil
}
