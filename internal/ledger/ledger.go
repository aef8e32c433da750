// Package ledger owns Cairn's logs: one append-only Merkle tree (RFC 6962) per AI system, the sequencer that
// orders and commits events in batches, signed checkpoints (C2SP tlog-checkpoint), and inclusion and
// consistency proofs and tiles.
//
// It acknowledges an event only after the store has made it durable, and never lets two racing requests both
// pass a check that depends on what the log holds: such checks run in the sequencer.
package ledger

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"sync"
	"time"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/pseudo"
	"github.com/cairn-ai/cairn/internal/seal"
	"github.com/cairn-ai/cairn/internal/store"
	"github.com/cairn-ai/cairn/internal/system"
)

// Config tunes a Ledger. The zero value of each field selects its default.
type Config struct {
	// Origin is the installation's checkpoint origin prefix; a log's origin is Origin + "/" + system. Two
	// installations must never share one.
	Origin string
	// CheckpointInterval is the most a checkpoint waits after the events it covers were acknowledged
	// (default 50 ms); checkpoints are signed at most once per interval.
	CheckpointInterval time.Duration
	// MaxBatch caps the events committed in one batch (default 8192).
	MaxBatch int
	// MaxQueue caps the events waiting per log; beyond it appends fail with ErrBusy (default 65536).
	MaxQueue int
	// DedupWindow is how long a client-chosen event id is remembered for idempotency (default 10 min). Ids
	// whose UUIDv7 time is further in the past are rejected rather than risk a silent duplicate.
	DedupWindow time.Duration
	// Now returns the current time (tests inject a clock).
	Now func() time.Time
	// Vault stores the originals of values a field policy marks "vault". Without one, a system whose policy has a
	// vault rule cannot be registered, and its events are refused.
	Vault  Vault
	Logger *slog.Logger
}

// Vault is the token vault as the ledger uses it: Put must be durable when it returns.
type Vault interface {
	Put(ctx context.Context, entries []pseudo.VaultEntry) error
}

func (c *Config) fill() {
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = 50 * time.Millisecond
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = 8192
	}
	if c.MaxQueue == 0 {
		c.MaxQueue = 65536
	}
	if c.DedupWindow == 0 {
		c.DedupWindow = 10 * time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// AdminLog is the instance's own log: token and key administration is recorded there, with the same
// guarantees as any system's log. No system can be registered under this name.
const AdminLog = "_admin"

// Errors callers map to responses.
var (
	ErrUnknownSystem = errors.New("unknown system")
	ErrBusy          = errors.New("log queue is full")
	ErrClosed        = errors.New("ledger is closed")
)

// ConflictError: an event id was already used for different content.
type ConflictError struct {
	Event int
	ID    event.UUID
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("event %d: id %s was already recorded with different content", e.Event, e.ID)
}

// Ledger is the set of logs of one installation.
type Ledger struct {
	cfg     Config
	store   store.Store
	keys    *seal.Keyring
	signKey ed25519.PrivateKey
	dedup   []byte    // key of the keyed content digest
	macs    sync.Pool // of HMAC-SHA256 under dedup

	mu     sync.Mutex
	logs   map[string]*Log
	closed bool
}

// Open opens every log of the store and starts its sequencer.
func Open(ctx context.Context, cfg Config, st store.Store, keys *seal.Keyring, signKey ed25519.PrivateKey) (*Ledger, error) {
	cfg.fill()
	if cfg.Origin == "" {
		return nil, errors.New("ledger: origin not configured")
	}
	dk, err := keys.Secret("dedup")
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	l := &Ledger{cfg: cfg, store: st, keys: keys, signKey: signKey, dedup: dk, logs: map[string]*Log{}}
	// The instance's own log, for administration, exists from the start.
	if _, err := st.Create(ctx, AdminLog); err != nil && !errors.Is(err, store.ErrExists) {
		return nil, fmt.Errorf("ledger: create %s log: %w", AdminLog, err)
	}
	names, err := st.Logs(ctx)
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		if _, err := l.open(ctx, n); err != nil {
			l.Close()
			return nil, err
		}
	}
	return l, nil
}

func (l *Ledger) open(ctx context.Context, name string) (*Log, error) {
	sl, err := l.store.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	lg, err := newLog(ctx, l, name, sl)
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", name, err)
	}
	l.logs[name] = lg
	return lg, nil
}

// Log returns the log of a system.
func (l *Ledger) Log(sys string) (*Log, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lg := l.logs[sys]; lg != nil {
		return lg, nil
	}
	if l.closed || (!system.ValidID(sys) && sys != AdminLog) {
		return nil, ErrUnknownSystem
	}
	// Another node may have created it since this one started.
	lg, err := l.open(context.Background(), sys)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrUnknownSystem
	}
	return lg, err
}

// Systems lists the logs' names.
func (l *Ledger) Systems() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.logs))
	for n := range l.logs {
		out = append(out, n)
	}
	return out
}

// Origin returns a system's checkpoint origin.
func (l *Ledger) Origin(system string) string { return l.cfg.Origin + "/" + system }

// VerifierKey returns the note verifier key for a system's checkpoints.
func (l *Ledger) VerifierKey(system string) string {
	vk, _ := VerifierKey(l.Origin(system), l.signKey.Public().(ed25519.PublicKey))
	return vk
}

// Register records a system definition: a new system gets a log whose first event is system.registered; a
// changed definition appends system.updated; an unchanged one appends nothing. It returns the index of the
// event that holds the definition now in force, and whether it appended one.
func (l *Ledger) Register(ctx context.Context, def []byte, actor string) (uint64, bool, error) {
	d, canonical, err := system.Parse(def)
	if err != nil {
		return 0, false, err
	}
	if len(d.FieldPolicy) > 0 && l.cfg.Vault == nil {
		if pol, err := pseudo.Parse(d.FieldPolicy); err == nil && pol.NeedsVault() {
			return 0, false, &system.FieldError{Field: "/field_policy", Reason: "the vault action needs a token vault, and this server runs without one"}
		}
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return 0, false, ErrClosed
	}
	lg := l.logs[d.ID]
	typ := "system.updated"
	if lg == nil {
		if _, err := l.store.Create(ctx, d.ID); err != nil && !errors.Is(err, store.ErrExists) {
			l.mu.Unlock()
			return 0, false, err
		}
		if lg, err = l.open(ctx, d.ID); err != nil {
			l.mu.Unlock()
			return 0, false, err
		}
	}
	l.mu.Unlock()
	lg.defMu.Lock() // one registration at a time per system, so "unchanged" is decided on current state
	defer lg.defMu.Unlock()
	if cur := lg.Definition(); cur != nil {
		if string(cur.Canonical) == string(canonical) {
			return cur.Index, false, nil
		}
	} else if lg.store.Size() == 0 {
		typ = "system.registered"
	}
	raw := []byte(`{"type":"` + typ + `","payload":` + string(canonical) + `}`)
	ev, err := event.Parse(0, raw, l.cfg.Now(), event.DefaultLimits, true)
	if err != nil {
		return 0, false, err
	}
	p, err := lg.Prepare(ev, actor)
	if err != nil {
		return 0, false, err
	}
	rs, err := lg.Append(ctx, []*Prepared{p})
	if err != nil {
		return 0, false, err
	}
	return rs[0].Index, true, nil
}

// AppendServer records an event that Cairn itself produces (access records, retention actions) as actor.
func (l *Ledger) AppendServer(ctx context.Context, sys string, raw []byte, actor string) (Receipt, error) {
	lg, err := l.Log(sys)
	if err != nil {
		return Receipt{}, err
	}
	ev, err := event.Parse(0, raw, l.cfg.Now(), event.DefaultLimits, true)
	if err != nil {
		return Receipt{}, err
	}
	p, err := lg.Prepare(ev, actor)
	if err != nil {
		return Receipt{}, err
	}
	rs, err := lg.Append(ctx, []*Prepared{p})
	if err != nil {
		return Receipt{}, err
	}
	return rs[0], nil
}

// Close stops every sequencer after it has committed what it holds and published a final checkpoint.
func (l *Ledger) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	logs := make([]*Log, 0, len(l.logs))
	for _, lg := range l.logs {
		logs = append(logs, lg)
	}
	l.mu.Unlock()
	for _, lg := range logs {
		lg.stop()
	}
	return l.store.Close()
}

// contentKey is the keyed digest of a client's canonical event: what idempotency compares.
func (l *Ledger) contentKey(canonical []byte) [16]byte {
	m, _ := l.macs.Get().(hash.Hash)
	if m == nil {
		m = hmac.New(sha256.New, l.dedup)
	}
	m.Reset()
	m.Write(canonical)
	var sum [sha256.Size]byte
	var out [16]byte
	copy(out[:], m.Sum(sum[:0]))
	l.macs.Put(m)
	return out
}
