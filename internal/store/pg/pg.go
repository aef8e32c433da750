// Package pg is Cairn's PostgreSQL store: the storage contract of package store kept in one PostgreSQL database,
// so that several stateless Cairn nodes can append to and read from the same logs.
//
// Each Append is one transaction: it locks the log's row (SELECT … FOR UPDATE), checks that the batch starts at
// the log's size (store.ErrStale otherwise: another node appended first), bulk-loads the entries with COPY and
// the tree's new stored hashes in 1 KiB chunks with one INSERT, moves the size and commits with
// synchronous_commit on. A node that dies before the commit leaves nothing visible. The locked size check keeps
// indices gap-free; the primary keys (log, index) make a duplicate impossible. Size reads the database, so it
// reflects appends by every node.
//
// The schema is versioned: migrations are embedded .sql files (migrations/NNNN_name.sql) applied by [Migrate],
// and [Open] refuses a schema older than this code knows (unless Options.Migrate) or newer.
//
// The package never interprets what it keeps (no envelope parsing, no decryption, no signing), never lowers
// synchronous_commit, and never stores key material in clear: the keyring's keys (KeyStore) arrive wrapped by
// the key-encryption key, which stays outside the database.
//
// # Dependency
//
// It is the only package that imports github.com/jackc/pgx/v5, so binaries and packages that don't use
// PostgreSQL don't link it. pgx earns its place over database/sql + lib/pq: its native API has binary COPY
// (CopyFrom), which the ingest path needs (about 1.5× pipelined INSERTs and 4× row-at-a-time on this machine,
// reference/go-style-anchors.md §B.4), a connection pool, and typed binary encoding of bytea and uuid without
// reflection-heavy adapters. Its linked closure is small (MIT and BSD-3:
// pgx, pgpassfile, pgservicefile, puddle, x/text, x/sync).
package pg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/store"
)

// Options tune the PostgreSQL store. The zero value gives the defaults.
type Options struct {
	// Schema is the PostgreSQL schema that holds the store's tables; it must exist. Default: the connection's
	// search_path (normally "public"). One database can hold several independent stores in different schemas.
	Schema string
	// Migrate applies missing migrations at Open instead of refusing a schema older than this code.
	Migrate bool
	// HistoryInterval keeps at most one checkpoint per interval in the history (default 1 s), measured on the
	// database's clock so that every node samples alike; the latest checkpoint is always kept.
	HistoryInterval time.Duration
	// MaxConns bounds the connection pool (default: pgxpool's, the larger of 4 and the number of CPUs).
	MaxConns int32
	// QueryTimeout bounds the calls of the contract that take no context: Size and ReadHashes (default 30 s).
	QueryTimeout time.Duration
	Logger       *slog.Logger
}

func (o *Options) fill() {
	if o.HistoryInterval == 0 {
		o.HistoryInterval = time.Second
	}
	if o.QueryTimeout == 0 {
		o.QueryTimeout = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Store is a set of logs in one PostgreSQL database (and schema). It is safe for concurrent use, and any number
// of Stores, in any number of processes, may share one database.
type Store struct {
	pool *pgxpool.Pool
	opts Options

	mu   sync.Mutex
	logs map[string]*Log

	// beforeCommit, when set (tests), runs inside Append's transaction just before COMMIT.
	beforeCommit func(ctx context.Context, tx pgx.Tx) error
}

// poolConfig parses url and applies opts: the schema as the search_path, and synchronous_commit forced back on
// for any connection whose configuration turned it off (an acknowledged batch must be durable).
func poolConfig(url string, opts Options) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres url: %w", err)
	}
	if opts.Schema != "" {
		cfg.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{opts.Schema}.Sanitize()
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		if c.PgConn().ParameterStatus("synchronous_commit") == "off" {
			_, err := c.Exec(ctx, "SET synchronous_commit = on")
			return err
		}
		var sc string
		if err := c.QueryRow(ctx, "SELECT current_setting('synchronous_commit')").Scan(&sc); err != nil {
			return err
		}
		if sc == "off" {
			_, err := c.Exec(ctx, "SET synchronous_commit = on")
			return err
		}
		return nil
	}
	return cfg, nil
}

// Open connects to the database at url (a postgres:// URL or key=value DSN) and checks its schema version.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	opts.fill()
	cfg, err := poolConfig(url, opts)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	s := &Store{pool: pool, opts: opts, logs: map[string]*Log{}}
	if err := s.start(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) start(ctx context.Context) error {
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("connect to postgres: %w", err)
	}
	defer c.Release()
	if s.opts.Migrate {
		if err := migrate(ctx, c.Conn(), s.opts.Logger); err != nil {
			return err
		}
	}
	if err := checkVersion(ctx, c.Conn()); err != nil {
		return err
	}
	var fsync string
	if err := c.QueryRow(ctx, "SELECT current_setting('fsync')").Scan(&fsync); err == nil && fsync != "on" {
		s.opts.Logger.Warn("postgres runs with fsync off: acknowledged events can be lost in a crash")
	}
	return nil
}

var nameRE = regexp.MustCompile(`^[a-z0-9_][a-z0-9_-]{0,63}$`)

func (s *Store) Logs(ctx context.Context) ([]string, error) {
	rows, err := s.pool.Query(ctx, "SELECT name FROM logs ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("list logs: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list logs: %w", err)
	}
	return names, nil
}

// Create makes a new, empty log and its (empty) checkpoint row in one transaction.
func (s *Store) Create(ctx context.Context, name string) (store.Log, error) {
	if !nameRE.MatchString(name) {
		return nil, fmt.Errorf("log name %q: want a lowercase slug", name)
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var id int32
		err := tx.QueryRow(ctx, "INSERT INTO logs (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING id", name).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			return store.ErrExists
		}
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "INSERT INTO checkpoints (log) VALUES ($1)", id)
		return err
	})
	if errors.Is(err, store.ErrExists) {
		return nil, store.ErrExists
	}
	if err != nil {
		return nil, fmt.Errorf("create log %s: %w", name, err)
	}
	return s.Open(ctx, name)
}

// Open returns the log called name; a Store returns the same *Log for the same name.
func (s *Store) Open(ctx context.Context, name string) (store.Log, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.logs[name]; l != nil {
		return l, nil
	}
	if !nameRE.MatchString(name) {
		return nil, store.ErrNotFound
	}
	l := &Log{s: s, name: name}
	var size int64
	err := s.pool.QueryRow(ctx, "SELECT id, size FROM logs WHERE name = $1", name).Scan(&l.id, &size)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", name, err)
	}
	l.size.Store(uint64(size))
	s.logs[name] = l
	return l, nil
}

// Close closes the connection pool; logs opened from the store stop working.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// Log is one log of the PostgreSQL store. Any number of Logs, in any number of processes, may append to the
// same log: Append serialises them on the log's row and rejects a batch that lost the race with store.ErrStale.
type Log struct {
	s    *Store
	id   int32
	name string
	size atomic.Uint64 // the largest size this process has seen; Size's fallback when the database is unreachable
}

func (l *Log) seen(n uint64) {
	for {
		old := l.size.Load()
		if n <= old || l.size.CompareAndSwap(old, n) {
			return
		}
	}
}

// Size reads the log's size from the database, so it includes every node's appends. The contract gives Size no
// way to fail: when the database cannot answer within Options.QueryTimeout, Size returns the largest size this
// process has seen (safe: an Append composed from it fails with ErrStale or a connection error, and reads below
// it are valid) and logs the error.
func (l *Log) Size() uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), l.s.opts.QueryTimeout)
	defer cancel()
	var n int64
	if err := l.s.pool.QueryRow(ctx, "SELECT size FROM logs WHERE id = $1", l.id).Scan(&n); err != nil {
		l.s.opts.Logger.Warn("read log size; using the last size seen", "log", l.name, "err", err)
		return l.size.Load()
	}
	l.seen(uint64(n))
	return uint64(n)
}

// Append appends a batch in one transaction. A batch that does not start at the log's size fails with
// store.ErrStale (before any other check, as the conformance suite expects); a malformed batch (entry indices
// out of step, wrong number of stored hashes) fails without changing anything.
//
// When the connection fails during COMMIT, the outcome is unknown to PostgreSQL's client; Append then reads the
// log back and returns nil if the batch is there (the same entries, by id, at the same indices).
// Shared reports that other nodes may append to this log (store.Shared).
func (l *Log) Shared() bool { return true }

func (l *Log) Append(ctx context.Context, b *store.Batch) error {
	end := b.Start + uint64(len(b.Entries))
	tx, err := l.s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("append to %s: begin: %w", l.name, err)
	}
	defer tx.Rollback(context.Background())
	var size int64
	if err := tx.QueryRow(ctx, "SELECT size FROM logs WHERE id = $1 FOR UPDATE", l.id).Scan(&size); err != nil {
		return fmt.Errorf("append to %s: lock log: %w", l.name, err)
	}
	l.seen(uint64(size))
	if uint64(size) != b.Start {
		return store.ErrStale
	}
	if len(b.Entries) == 0 {
		return nil
	}
	if err := checkBatch(b); err != nil {
		return fmt.Errorf("append to %s: %w", l.name, err)
	}
	if err := l.copyBatch(ctx, tx, b); err != nil {
		return fmt.Errorf("append to %s: %w", l.name, err)
	}
	if _, err := tx.Exec(ctx, "UPDATE logs SET size = $2 WHERE id = $1", l.id, int64(end)); err != nil {
		return fmt.Errorf("append to %s: update size: %w", l.name, err)
	}
	if h := l.s.beforeCommit; h != nil {
		if err := h(ctx, tx); err != nil {
			return fmt.Errorf("append to %s: %w", l.name, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return l.resolveCommit(b, err)
	}
	l.seen(end)
	return nil
}

func checkBatch(b *store.Batch) error {
	for i := range b.Entries {
		if b.Entries[i].Index != b.Start+uint64(i) {
			return fmt.Errorf("entry %d of the batch has index %d, want %d", i, b.Entries[i].Index, b.Start+uint64(i))
		}
	}
	first := tlog.StoredHashCount(int64(b.Start))
	want := tlog.StoredHashCount(int64(b.Start)+int64(len(b.Entries))) - first
	if int64(len(b.Hashes)) != want {
		return fmt.Errorf("batch has %d stored hashes, want %d", len(b.Hashes), want)
	}
	return nil
}

// copyBatch bulk-loads the batch's entries with binary COPY and inserts its stored hashes in one statement.
func (l *Log) copyBatch(ctx context.Context, tx pgx.Tx, b *store.Batch) error {
	row := make([]any, 10)
	_, err := tx.CopyFrom(ctx, pgx.Identifier{"entries"},
		[]string{"log", "idx", "id", "recorded", "type", "digest", "salt", "envelope", "sealed", "content_key"},
		pgx.CopyFromSlice(len(b.Entries), func(i int) ([]any, error) {
			e := &b.Entries[i]
			var ck []byte
			if e.ContentKey != ([16]byte{}) {
				ck = e.ContentKey[:]
			}
			row[0], row[1], row[2], row[3], row[4] = l.id, int64(e.Index), pgtype.UUID{Bytes: e.ID, Valid: true}, e.Recorded, e.Type
			row[5], row[6], row[7], row[8], row[9] = e.Digest[:], e.Salt[:], e.Envelope, e.Sealed, ck
			return row, nil
		}))
	if err != nil {
		return fmt.Errorf("copy entries: %w", err)
	}
	// The new stored hashes, in rows of up to hashesPerRow, in one statement.
	first := tlog.StoredHashCount(int64(b.Start))
	nrows := (len(b.Hashes) + hashesPerRow - 1) / hashesPerRow
	firsts := make([]int64, nrows)
	blobs := make([][]byte, nrows)
	buf := make([]byte, 0, 32*len(b.Hashes))
	for r := range nrows {
		firsts[r] = first + int64(r*hashesPerRow)
		k := len(buf)
		for _, h := range b.Hashes[r*hashesPerRow : min(len(b.Hashes), (r+1)*hashesPerRow)] {
			buf = append(buf, h[:]...)
		}
		blobs[r] = buf[k:]
	}
	_, err = tx.Exec(ctx, "INSERT INTO hash_chunks (log, first, hashes) SELECT $1, f, h FROM unnest($2::bigint[], $3::bytea[]) AS u (f, h)",
		l.id, firsts, blobs)
	if err != nil {
		return fmt.Errorf("insert stored hashes: %w", err)
	}
	return nil
}

// hashesPerRow is how many stored hashes one row of hash_chunks holds: 1 KiB, so that rows stay inline (no
// TOAST) and reading one hash is one index probe and one heap page.
const hashesPerRow = 32

// resolveCommit decides what a failed COMMIT did. An ERROR from the server means the transaction was rolled
// back; a lost connection (or a FATAL: the session was terminated, perhaps just after the commit) leaves it
// unknown, so the log is read back on another connection.
func (l *Log) resolveCommit(b *store.Batch, commitErr error) error {
	var pgErr *pgconn.PgError
	if errors.As(commitErr, &pgErr) && pgErr.Severity == "ERROR" {
		return fmt.Errorf("append to %s: commit: %w", l.name, commitErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.s.opts.QueryTimeout)
	defer cancel()
	last := &b.Entries[len(b.Entries)-1]
	var first, lastID pgtype.UUID
	err := l.s.pool.QueryRow(ctx, `SELECT
		(SELECT id FROM entries WHERE log = $1 AND idx = $2),
		(SELECT id FROM entries WHERE log = $1 AND idx = $3)`, l.id, int64(b.Start), int64(last.Index)).Scan(&first, &lastID)
	if err != nil {
		return fmt.Errorf("append to %s: commit outcome unknown (%v): %w", l.name, err, commitErr)
	}
	if first.Valid && lastID.Valid && first.Bytes == b.Entries[0].ID && lastID.Bytes == last.ID {
		l.opts().Logger.Warn("commit reported an error but the batch is durable", "log", l.name, "start", b.Start, "err", commitErr)
		l.seen(last.Index + 1)
		return nil
	}
	return fmt.Errorf("append to %s: commit: %w", l.name, commitErr)
}

func (l *Log) opts() *Options { return &l.s.opts }

const (
	entryColumns = "idx, id, recorded, type, digest, salt, envelope, sealed, content_key"
	leafColumns  = "idx, id, recorded, type, digest, salt, NULL::bytea, NULL::bytea, content_key"
)

func scanEntry(row pgx.Row) (*store.Entry, error) {
	var (
		e                store.Entry
		idx              int64
		id               pgtype.UUID
		digest, salt, ck []byte
		envelope, sealed []byte
	)
	if err := row.Scan(&idx, &id, &e.Recorded, &e.Type, &digest, &salt, &envelope, &sealed, &ck); err != nil {
		return nil, err
	}
	if !id.Valid || len(digest) != 32 || len(salt) != 16 || (ck != nil && len(ck) != 16) {
		return nil, fmt.Errorf("%w: entry %d has malformed leaf fields", store.ErrCorrupt, idx)
	}
	e.Index = uint64(idx)
	e.ID = event.UUID(id.Bytes)
	copy(e.Digest[:], digest)
	copy(e.Salt[:], salt)
	copy(e.ContentKey[:], ck)
	e.Envelope, e.Sealed = envelope, sealed
	return &e, nil
}

func (l *Log) Entry(ctx context.Context, index uint64) (*store.Entry, error) {
	if index > 1<<63-1 {
		return nil, store.ErrNotFound
	}
	e, err := scanEntry(l.s.pool.QueryRow(ctx, "SELECT "+entryColumns+" FROM entries WHERE log = $1 AND idx = $2", l.id, int64(index)))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read entry %d of %s: %w", index, l.name, err)
	}
	return e, nil
}

// Entries pages through the range in queries of up to 256 entries (or 16 MiB of envelopes and payloads),
// calling fn between queries, so fn holds no connection and may use the store.
func (l *Log) Entries(ctx context.Context, start, end uint64, fn func(*store.Entry) error) error {
	return l.entries(ctx, entryColumns, 256, start, end, fn)
}

// Leaves is Entries without envelopes and sealed payloads (store.LeafReader): what a node catching up with
// other nodes' appends reads.
func (l *Log) Leaves(ctx context.Context, start, end uint64, fn func(*store.Entry) error) error {
	return l.entries(ctx, leafColumns, 4096, start, end, fn)
}

// entries pages through the range in queries of up to entriesPage entries (or entriesPageBytes of envelopes and
// payloads).
func (l *Log) entries(ctx context.Context, columns string, entriesPage int, start, end uint64, fn func(*store.Entry) error) error {
	if n := l.Size(); end > n {
		end = n
	}
	const entriesPageBytes = 16 << 20
	page := make([]*store.Entry, 0, entriesPage)
	for start < end {
		page = page[:0]
		rows, err := l.s.pool.Query(ctx, "SELECT "+columns+" FROM entries WHERE log = $1 AND idx >= $2 AND idx < $3 ORDER BY idx LIMIT $4",
			l.id, int64(start), int64(end), entriesPage)
		if err != nil {
			return fmt.Errorf("read entries of %s from %d: %w", l.name, start, err)
		}
		bytes := 0
		for rows.Next() {
			e, err := scanEntry(rows)
			if err != nil {
				rows.Close()
				return fmt.Errorf("read entries of %s: %w", l.name, err)
			}
			if e.Index != start+uint64(len(page)) {
				rows.Close()
				return fmt.Errorf("%w: log %s: entry %d missing below its size %d", store.ErrCorrupt, l.name, start+uint64(len(page)), end)
			}
			page = append(page, e)
			if bytes += len(e.Envelope) + len(e.Sealed); bytes >= entriesPageBytes {
				break
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read entries of %s from %d: %w", l.name, start, err)
		}
		if len(page) == 0 {
			return fmt.Errorf("%w: log %s: entry %d missing below its size %d", store.ErrCorrupt, l.name, start, end)
		}
		for _, e := range page {
			if err := fn(e); err != nil {
				return err
			}
		}
		start += uint64(len(page))
	}
	return nil
}

// ReadHashes reads many stored hashes in one query: for each index, the batch row at or below it and the 32
// bytes at its offset. An index that is not stored (past the durable end) is an error.
func (l *Log) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	ctx, cancel := context.WithTimeout(context.Background(), l.s.opts.QueryTimeout)
	defer cancel()
	out := make([]tlog.Hash, len(indexes))
	if len(indexes) == 0 {
		return out, nil
	}
	if len(indexes) == 1 { // the common case, with a query that is cheaper to plan
		var h []byte
		err := l.s.pool.QueryRow(ctx, `SELECT substr(hashes, (($2 - first) * 32 + 1)::integer, 32)
			FROM hash_chunks WHERE log = $1 AND first <= $2 ORDER BY first DESC LIMIT 1`, l.id, indexes[0]).Scan(&h)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return nil, fmt.Errorf("read stored hash %d of %s: %w", indexes[0], l.name, err)
		}
		if len(h) != 32 {
			return nil, fmt.Errorf("stored hash %d of %s: %w", indexes[0], l.name, store.ErrNotFound)
		}
		out[0] = tlog.Hash(h)
		return out, nil
	}
	rows, err := l.s.pool.Query(ctx, `SELECT x.i, substr(h.hashes, ((x.x - h.first) * 32 + 1)::integer, 32)
		FROM unnest($2::bigint[]) WITH ORDINALITY AS x (x, i)
		CROSS JOIN LATERAL (SELECT first, hashes FROM hash_chunks WHERE log = $1 AND first <= x.x ORDER BY first DESC LIMIT 1) h`,
		l.id, indexes)
	if err != nil {
		return nil, fmt.Errorf("read stored hashes of %s: %w", l.name, err)
	}
	found := make([]bool, len(indexes))
	var (
		i int64
		h []byte
	)
	_, err = pgx.ForEachRow(rows, []any{&i, &h}, func() error {
		if i < 1 || i > int64(len(indexes)) || len(h) != 32 {
			return nil // past the end of the last batch: not stored
		}
		out[i-1], found[i-1] = tlog.Hash(h), true
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read stored hashes of %s: %w", l.name, err)
	}
	for i, ok := range found {
		if !ok {
			return nil, fmt.Errorf("stored hash %d of %s: %w", indexes[i], l.name, store.ErrNotFound)
		}
	}
	return out, nil
}

// LastOfType is one probe of the (log, type, idx) index.
func (l *Log) LastOfType(ctx context.Context, typ string) (uint64, bool, error) {
	var idx int64
	err := l.s.pool.QueryRow(ctx, "SELECT idx FROM entries WHERE log = $1 AND type = $2 ORDER BY idx DESC LIMIT 1", l.id, typ).Scan(&idx)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("last %s entry of %s: %w", typ, l.name, err)
	}
	return uint64(idx), true, nil
}

// SetCheckpoint records note as the latest checkpoint, and in the history when none was kept within
// Options.HistoryInterval. The latest checkpoint never moves back: a checkpoint for a smaller tree than the one
// recorded (another node published a newer one first) is dropped without error.
func (l *Log) SetCheckpoint(ctx context.Context, n uint64, note []byte) error {
	if note == nil {
		note = []byte{}
	}
	err := pgx.BeginFunc(ctx, l.s.pool, func(tx pgx.Tx) error {
		var (
			cur     int64
			sample  bool
			hasNote bool
		)
		err := tx.QueryRow(ctx, `SELECT n, note IS NOT NULL, history_at IS NULL OR history_at <= now() - $2 * interval '1 microsecond'
			FROM checkpoints WHERE log = $1 FOR UPDATE`, l.id, l.s.opts.HistoryInterval.Microseconds()).Scan(&cur, &hasNote, &sample)
		if err != nil {
			return err
		}
		if hasNote && n < uint64(cur) {
			return nil
		}
		if !sample {
			_, err := tx.Exec(ctx, "UPDATE checkpoints SET n = $2, note = $3 WHERE log = $1", l.id, int64(n), note)
			return err
		}
		if _, err := tx.Exec(ctx, "UPDATE checkpoints SET n = $2, note = $3, history_at = now() WHERE log = $1", l.id, int64(n), note); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "INSERT INTO checkpoint_history (log, n, note) VALUES ($1, $2, $3)", l.id, int64(n), note)
		return err
	})
	if err != nil {
		return fmt.Errorf("set checkpoint of %s: %w", l.name, err)
	}
	return nil
}

func (l *Log) Checkpoint(ctx context.Context) ([]byte, error) {
	var note []byte
	if err := l.s.pool.QueryRow(ctx, "SELECT note FROM checkpoints WHERE log = $1", l.id).Scan(&note); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, fmt.Errorf("%w: log %s has no checkpoint row", store.ErrCorrupt, l.name)
		}
		return nil, fmt.Errorf("read checkpoint of %s: %w", l.name, err)
	}
	return note, nil
}

// Checkpoints pages through the history, oldest first, calling fn between queries.
func (l *Log) Checkpoints(ctx context.Context, fn func(n uint64, note []byte) error) error {
	type cp struct {
		seq  int64
		n    int64
		note []byte
	}
	var after int64
	for {
		rows, err := l.s.pool.Query(ctx, "SELECT seq, n, note FROM checkpoint_history WHERE log = $1 AND seq > $2 ORDER BY seq LIMIT 1000", l.id, after)
		if err != nil {
			return fmt.Errorf("read checkpoint history of %s: %w", l.name, err)
		}
		page, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (cp, error) {
			var c cp
			err := r.Scan(&c.seq, &c.n, &c.note)
			return c, err
		})
		if err != nil {
			return fmt.Errorf("read checkpoint history of %s: %w", l.name, err)
		}
		for _, c := range page {
			if err := fn(uint64(c.n), c.note); err != nil {
				return err
			}
			after = c.seq
		}
		if len(page) < 1000 {
			return nil
		}
	}
}

// Close does nothing: logs are closed with their store.
func (l *Log) Close() error { return nil }
