package ledger

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/lifecycle"
	"github.com/cairn-ai/cairn/internal/pseudo"
	"github.com/cairn-ai/cairn/internal/seal"
	"github.com/cairn-ai/cairn/internal/store"
	"github.com/cairn-ai/cairn/internal/system"
)

// Receipt answers one appended event: its id and leaf index. Duplicate is true when the id was already
// recorded with the same content and the original index is returned.
type Receipt struct {
	ID        event.UUID
	Index     uint64
	Duplicate bool
}

// Prepared is an event made ready for sequencing: validated, its payload sealed, its envelope encoded up to
// the recorded time. Everything that can be done before sequencing is done here, in parallel per request.
type Prepared struct {
	ev         *event.Event
	env        event.Envelope
	month      string // period month of the payload key
	sealed     []byte
	head, tail []byte
	contentKey [16]byte
	salt       [16]byte
	digest     hash.Hash           // SHA-256 over salt and head; the sequencer adds the recorded time and the tail
	vault      []pseudo.VaultEntry // originals for the token vault, stored before the event is sequenced
	attrs0     []byte              // the attributes as prepared, before any rule-violation mark
	marked     bool
}

// pseudoKeys gives the field policy its pseudonymisation domain keys, kept in the keyring wrapped by the KEK: one
// key per domain and key period (the policy's rotation), so a domain's pseudonyms link across systems that share it.
type pseudoKeys struct {
	keys   *seal.Keyring
	period string // "" when the policy does not rotate
}

func (k pseudoKeys) DomainKey(domain string) ([]byte, error) {
	return k.keys.Secret(domainSecret(domain, k.period))
}

// domainSecret names a domain key in the keyring. Keys of the unrotated period keep the name they had before
// rotation existed, so pseudonyms made then still link.
func domainSecret(domain, period string) string {
	h := sha256.Sum256([]byte(domain))
	name := "pseudo-" + hex.EncodeToString(h[:12])
	if period != "" {
		name += "-" + period
	}
	return name
}

// vaultKeys is pseudoKeys that also collects the originals of vaulted values for one event.
type vaultKeys struct {
	pseudoKeys
	entries *[]pseudo.VaultEntry
}

func (k vaultKeys) Vault(domain, pseudonym string, value []byte) error {
	*k.entries = append(*k.entries, pseudo.VaultEntry{Domain: domain, Pseudonym: pseudonym, Value: bytes.Clone(value)})
	return nil
}

// ID returns the event's id.
func (p *Prepared) ID() event.UUID { return p.ev.ID }

// CurrentDefinition is a system definition with the index of the event that recorded it.
type CurrentDefinition struct {
	*system.Definition
	Canonical []byte
	Index     uint64
	// Policy is the parsed field policy, or nil when the definition has none.
	Policy *pseudo.Policy
}

type request struct {
	items []*Prepared
	res   []Receipt
	err   error
	done  chan struct{}
	lost  int // races lost with other nodes so far (see requeue)
}

type dedupEntry struct {
	index uint64
	key   [16]byte
}

// Log is one system's log.
type Log struct {
	l      *Ledger
	name   string
	store  store.Log
	signer note.Signer

	queue   chan *request
	pending atomic.Int64 // events queued
	quit    chan struct{}
	done    chan struct{}

	commitQ chan *built // sequencer → committer

	// Requests whose batch lost a race with another node, handed back by the committer to be sequenced again
	// ahead of the queue (their prepared events are reused). requeueWake is signalled when requeued grows.
	requeueMu   sync.Mutex
	requeued    []*request
	requeueWake chan struct{}
	lostRaces   atomic.Int64

	// sequencer state (runs ahead of what is durable)
	next         uint64 // index of the next entry to build
	epoch        int64  // bumped when the sequencer catches up after a lost race
	staleEpoch   atomic.Int64
	shared       bool // the store may be appended to by other processes (several nodes)
	lastRecorded int64
	dedup        map[event.UUID]dedupEntry
	dedupOrder   []event.UUID // ids in insertion order, for expiry; entries before dedupHead are expired
	dedupHead    int
	scratch      []byte

	pkMu    sync.Mutex
	pkCache map[string]cachedKey // current period key per retention class

	inflightMu sync.Mutex
	inflight   []*store.Batch // built, not yet durable

	treeMu   sync.RWMutex
	treeSize uint64
	treeRoot tlog.Hash

	followWake chan struct{} // wakes the log's followers (the query index) after each commit
	subMu      sync.Mutex
	subs       []chan struct{} // more followers (Subscribe)
	cpWake     chan struct{}
	cpDone     chan struct{}
	published  atomic.Pointer[publishedCheckpoint]

	broken atomic.Pointer[error] // set when the log can no longer append safely

	closeMu sync.RWMutex // guards closed against enqueues racing stop
	closed  bool

	defMu sync.Mutex // serialises registrations
	def   atomic.Pointer[CurrentDefinition]

	// life holds the facts the lifecycle rules are decided against; the sequencer decides and records each
	// lifecycle event in it as it orders it (speculatively, like the dedup map: undone when a batch is not stored).
	life *lifecycle.State
	// lifeReady is closed once life holds the facts of the entries the log had when it was opened: a background
	// read, so that opening a large log does not wait for it. Only lifecycle decisions wait for it.
	lifeReady  chan struct{}
	stopLoader context.CancelFunc
}

type publishedCheckpoint struct {
	size uint64
	note []byte
	at   time.Time
}

func newLog(ctx context.Context, l *Ledger, name string, sl store.Log) (*Log, error) {
	lg := &Log{
		l: l, name: name, store: sl,
		signer:  newNoteSigner(l.Origin(name), l.signKey),
		queue:   make(chan *request, 1024),
		commitQ: make(chan *built, 1),

		requeueWake: make(chan struct{}, 1),
		pkCache:     map[string]cachedKey{},
		quit:        make(chan struct{}), done: make(chan struct{}),
		dedup:  map[event.UUID]dedupEntry{},
		cpWake: make(chan struct{}, 1), cpDone: make(chan struct{}),
		followWake: make(chan struct{}, 1),
		life:       lifecycle.NewState(),
		lifeReady:  make(chan struct{}),
	}
	if sh, ok := sl.(store.Shared); ok && sh.Shared() {
		lg.shared = true
	}
	n := sl.Size()
	root, err := tlog.TreeHash(int64(n), sl)
	if err != nil {
		return nil, fmt.Errorf("tree hash: %w", err)
	}
	lg.treeSize, lg.treeRoot, lg.next = n, root, n
	// The store must hold at least what the last signed checkpoint covers, with the same root.
	if cp, err := sl.Checkpoint(ctx); err != nil {
		return nil, err
	} else if cp != nil {
		c, err := OpenCheckpoint(cp, l.VerifierKey(name))
		if err != nil {
			return nil, fmt.Errorf("%w: latest checkpoint: %v", store.ErrCorrupt, err)
		}
		if c.Size > n {
			return nil, fmt.Errorf("%w: the store holds %d entries but checkpoint %d was published: acknowledged events are missing", store.ErrCorrupt, n, c.Size)
		}
		h, err := tlog.TreeHash(int64(c.Size), sl)
		if err != nil {
			return nil, err
		}
		if h != c.Root {
			return nil, fmt.Errorf("%w: tree of size %d does not match its signed checkpoint", store.ErrCorrupt, c.Size)
		}
		lg.published.Store(&publishedCheckpoint{size: c.Size, note: cp})
	}
	if n > 0 {
		e, err := sl.Entry(ctx, n-1)
		if err != nil {
			return nil, err
		}
		lg.lastRecorded = e.Recorded
	}
	if err := lg.loadDefinition(ctx); err != nil {
		return nil, err
	}
	if err := lg.loadDedup(ctx); err != nil {
		return nil, err
	}
	lctx, cancel := context.WithCancel(context.Background())
	lg.stopLoader = cancel
	go func() {
		defer close(lg.lifeReady)
		if err := lg.loadLifecycle(lctx, 0, n); err != nil && lctx.Err() == nil {
			// Without the facts the rules cannot be decided: the log takes no more appends until restarted.
			err = fmt.Errorf("read lifecycle events: %w", err)
			lg.broken.CompareAndSwap(nil, &err)
			l.cfg.Logger.Error("lifecycle state", "system", name, "err", err)
		}
	}()
	go lg.sequence()
	go lg.commit()
	go lg.checkpointer()
	if n > 0 {
		lg.wakeCheckpointer()
	}
	return lg, nil
}

// Name returns the system's id.
func (lg *Log) Name() string { return lg.name }

// Definition returns the definition in force, or nil before registration.
func (lg *Log) Definition() *CurrentDefinition { return lg.def.Load() }

func (lg *Log) loadDefinition(ctx context.Context) error {
	var best uint64
	found := false
	for _, t := range []string{"system.registered", "system.updated"} {
		i, ok, err := lg.store.LastOfType(ctx, t)
		if err != nil {
			return err
		}
		if ok && (!found || i > best) {
			best, found = i, true
		}
	}
	if !found {
		return nil
	}
	return lg.setDefinitionFrom(ctx, best)
}

func (lg *Log) setDefinitionFrom(ctx context.Context, index uint64) error {
	e, err := lg.store.Entry(ctx, index)
	if err != nil {
		return err
	}
	pt, err := lg.OpenPayload(e)
	if err != nil {
		return fmt.Errorf("system definition at %d: %w", index, err)
	}
	d, c, err := system.Parse(pt)
	if err != nil {
		return fmt.Errorf("system definition at %d: %w", index, err)
	}
	cd := &CurrentDefinition{Definition: d, Canonical: c, Index: index}
	rules, err := lifecycle.ParseRules(d.Lifecycle)
	if err != nil {
		return fmt.Errorf("lifecycle rules at %d: %w", index, err)
	}
	lg.life.SetRules(rules)
	if len(d.FieldPolicy) > 0 {
		if cd.Policy, err = pseudo.Parse(d.FieldPolicy); err != nil {
			return fmt.Errorf("field policy at %d: %w", index, err)
		}
	}
	lg.def.Store(cd)
	return nil
}

// loadLifecycle records the facts of the tracked events among entries [from, to) in the lifecycle state, with the
// rule violations they were marked with when they were sequenced. Opening a log reads it once for this.
func (lg *Log) loadLifecycle(ctx context.Context, from, to uint64) error {
	return lg.store.Entries(ctx, from, to, func(e *store.Entry) error {
		lg.loadFact(e)
		return nil
	})
}

func (lg *Log) loadFact(e *store.Entry) {
	if !lifecycle.Tracked(e.Type) || e.Envelope == nil {
		return
	}
	s, err := event.ParseEnvelope(e.Envelope)
	if err == nil {
		var f *lifecycle.Fact
		if f, err = lifecycle.FactFromEnvelope(e.Index, s); err == nil {
			lg.life.Load(f)
			return
		}
	}
	// A damaged envelope is the verifier's business; the rules then treat the event as absent.
	lg.l.cfg.Logger.Warn("lifecycle: unreadable envelope", "system", lg.name, "index", e.Index, "err", err)
}

// CheckLifecycle answers whether ev, appended now by actor, would comply with the system's lifecycle rules: the
// rules it would break, or nil. Nothing is recorded. It answers on the sequencer's state, which may include
// events being committed; the sequencer decides again when the event is appended.
func (lg *Log) CheckLifecycle(ev *event.Event, actor string) []string {
	<-lg.lifeReady
	return lg.life.Check(lifecycle.FactOf(ev, actor, math.MaxUint64))
}

// loadDedup rebuilds the idempotency map from the entries recorded within the dedup window.
func (lg *Log) loadDedup(ctx context.Context) error {
	n := lg.store.Size()
	if n == 0 {
		return nil
	}
	since := lg.l.cfg.Now().Add(-2 * lg.l.cfg.DedupWindow).UnixNano()
	// recorded never decreases along the log, so binary search for the first entry inside the window.
	lo, hi := uint64(0), n
	for lo < hi {
		mid := lo + (hi-lo)/2
		e, err := lg.store.Entry(ctx, mid)
		if err != nil {
			return err
		}
		if e.Recorded < since {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lg.store.Entries(ctx, lo, n, func(e *store.Entry) error {
		if e.ContentKey != ([16]byte{}) {
			lg.remember(e.ID, dedupEntry{index: e.Index, key: e.ContentKey})
		}
		return nil
	})
}

func (lg *Log) remember(id event.UUID, d dedupEntry) {
	if _, ok := lg.dedup[id]; !ok {
		lg.dedupOrder = append(lg.dedupOrder, id)
	}
	lg.dedup[id] = d
}

func (lg *Log) expireDedup(now time.Time) {
	limit := now.Add(-lg.l.cfg.DedupWindow - time.Minute)
	i := lg.dedupHead
	for ; i < len(lg.dedupOrder) && lg.dedupOrder[i].Time().Before(limit); i++ {
		delete(lg.dedup, lg.dedupOrder[i])
	}
	lg.dedupHead = i
	// Compact only when the expired prefix is most of the slice, so expiry costs O(1) per id amortised.
	if lg.dedupHead > 1024 && lg.dedupHead > len(lg.dedupOrder)/2 {
		lg.dedupOrder = append(lg.dedupOrder[:0:0], lg.dedupOrder[lg.dedupHead:]...)
		lg.dedupHead = 0
	}
}

// Prepare validates an event's place in this log and seals its payload. actor is the authenticated principal.
func (lg *Log) Prepare(ev *event.Event, actor string) (*Prepared, error) {
	now := lg.l.cfg.Now()
	if ev.IDGiven {
		t := ev.ID.Time()
		if t.Before(now.Add(-lg.l.cfg.DedupWindow)) {
			return nil, &event.Error{Field: "/id", Reason: fmt.Sprintf("the id's time is older than the idempotency window (%s): a retry this late cannot be told from a new event; use a fresh id", lg.l.cfg.DedupWindow)}
		}
		if t.After(now.Add(lg.l.cfg.DedupWindow)) {
			return nil, &event.Error{Field: "/id", Reason: "the id's time is in the future beyond the idempotency window; check the client's clock"}
		}
	}
	p := &Prepared{ev: ev}
	p.env = event.Envelope{
		ID: ev.ID, System: lg.name, Type: ev.Type, Time: ev.Time, Actor: actor, Model: ev.Model,
		Deployment: ev.Deployment, Refs: ev.Refs, Attrs: ev.Attrs,
	}
	// The keyed digest of the raw input, taken before the field policy changes anything.
	if ev.Type == "inference" && ev.Payload != nil {
		if in, ok := event.Member(ev.Payload, "input"); ok {
			key, err := lg.l.keys.Secret("input-digest")
			if err != nil {
				return nil, fmt.Errorf("input digest key: %w", err)
			}
			p.env.InputDigest = pseudo.InputDigest(key, in)
		}
	}
	// Pseudonymise before anything is sealed or written: the payload that leaves Prepare is the policy's.
	if d := lg.Definition(); d != nil && d.Policy != nil && ev.Payload != nil && !ev.Spec.ServerOnly {
		var keys pseudo.Keys = pseudoKeys{lg.l.keys, d.Policy.KeyPeriod(now)}
		if d.Policy.NeedsVault() {
			if lg.l.cfg.Vault == nil {
				return nil, fmt.Errorf("field policy: %w", pseudo.ErrVaultRequired)
			}
			keys = vaultKeys{keys.(pseudoKeys), &p.vault}
		}
		out, err := d.Policy.Apply(make([]byte, 0, len(ev.Payload)), ev.Payload, keys)
		if err != nil {
			var fe *pseudo.FieldError
			if errors.As(err, &fe) {
				return nil, &event.Error{Field: "/payload/" + strings.ReplaceAll(fe.Path, ".", "/"), Reason: fe.Reason + " (the field policy requires it)"}
			}
			return nil, fmt.Errorf("field policy: %w", err)
		}
		ev.Payload = out
		p.env.Policy = d.Policy.Version
	}
	if ev.IDGiven {
		p.contentKey = lg.l.contentKey(ev.Canonical)
	}
	if err := lg.sealFor(p, now); err != nil {
		return nil, err
	}
	return p, nil
}

// periodKey returns the period key of a class for t's month, from a per-log cache of the current ones.
func (lg *Log) periodKey(class string, t time.Time) (*seal.PeriodKey, error) {
	t = t.UTC()
	month := t.Year()*100 + int(t.Month())
	lg.pkMu.Lock()
	if c, ok := lg.pkCache[class]; ok && c.month == month {
		lg.pkMu.Unlock()
		return c.key, nil
	}
	lg.pkMu.Unlock()
	pk, err := lg.l.keys.Period(lg.name, class, t)
	if err != nil {
		return nil, err
	}
	lg.pkMu.Lock()
	lg.pkCache[class] = cachedKey{month: month, key: pk}
	lg.pkMu.Unlock()
	return pk, nil
}

type cachedKey struct {
	month int
	key   *seal.PeriodKey
}

// sealFor seals the payload under the period key of t's month and encodes the envelope around it.
func (lg *Log) sealFor(p *Prepared, t time.Time) error {
	if p.ev.Payload != nil {
		pk, err := lg.periodKey(p.ev.Spec.Class, t)
		if err != nil {
			return fmt.Errorf("period key: %w", err)
		}
		sealed, c, err := seal.Seal(make([]byte, 0, seal.Overhead+len(p.ev.Payload)), pk, p.ev.ID[:], p.ev.Payload)
		if err != nil {
			return err
		}
		p.sealed = sealed
		p.month = seal.Month(pk.ID)
		p.env.Payload = &event.PayloadRef{Digest: c.Digest, Size: c.Size, Key: pk.ID, KeyCommit: c.KeyCommit}
	}
	p.encode()
	return nil
}

// encode encodes the envelope around the recorded time and starts its digest under a fresh salt.
func (p *Prepared) encode() {
	// Head and tail share one buffer, sized for a typical envelope.
	buf := make([]byte, 0, 512+len(p.env.Attrs)+len(p.env.Actor)+len(p.env.Deployment)+37*len(p.env.Refs))
	buf = p.env.AppendHead(buf)
	p.head = buf[:len(buf):len(buf)]
	p.tail = p.env.AppendTail(buf[len(buf):])
	rand.Read(p.salt[:])
	p.digest = sha256.New()
	p.digest.Write(p.salt[:])
	p.digest.Write(p.head)
}

// markViolations marks a prepared event with the lifecycle rules it breaks (attrs.rule_violations) and
// re-encodes its envelope.
//
// A batch that lost a race between nodes is sequenced again from the same prepared events, so the mark is always
// made on the attributes as prepared, and taken off again when the rules no longer find a violation.
func (p *Prepared) markViolations(rules []string) error {
	if !p.marked {
		p.attrs0 = p.env.Attrs
	}
	a, err := lifecycle.MarkAttrs(p.attrs0, rules)
	if err != nil {
		return fmt.Errorf("mark rule violations: %w", err)
	}
	p.env.Attrs, p.marked = a, true
	p.encode()
	return nil
}

// unmark undoes markViolations.
func (p *Prepared) unmark() {
	if p.marked {
		p.env.Attrs, p.marked = p.attrs0, false
		p.encode()
	}
}

// ServerActor is the actor of events Cairn records on its own initiative, such as rule-violation alerts.
const ServerActor = "cairn"

// alertFor prepares the anomaly event that raises an alert about an event that breaks lifecycle rules.
func (lg *Log) alertFor(p *Prepared, rules []string, now time.Time) (*Prepared, error) {
	vs, _ := json.Marshal(rules)
	raw := `{"type":"anomaly","refs":["` + p.ev.ID.String() + `"],"attrs":{"kind":"lifecycle_rule","severity":"warning","` +
		event.RuleViolations + `":` + string(vs) + `}}`
	ev, err := event.Parse(0, []byte(raw), now, event.DefaultLimits, true)
	if err != nil {
		return nil, fmt.Errorf("rule alert: %w", err)
	}
	return lg.Prepare(ev, ServerActor)
}

// Append submits prepared events as one unit and waits until they are durable: either every event gets a
// receipt, or none is stored. It answers ErrBusy at once when the queue is full.
func (lg *Log) Append(ctx context.Context, items []*Prepared) ([]Receipt, error) {
	if len(items) == 0 {
		return nil, nil
	}
	// The originals of vaulted values are durable in the token vault before their events can be acknowledged, or
	// an acknowledged pseudonym could be irreversible. An entry written for an event that then fails is harmless:
	// it maps a pseudonym to its own original.
	var vaulted []pseudo.VaultEntry
	for _, p := range items {
		vaulted = append(vaulted, p.vault...)
	}
	if len(vaulted) > 0 {
		if err := lg.l.cfg.Vault.Put(ctx, vaulted); err != nil {
			return nil, fmt.Errorf("token vault: %w", err)
		}
	}
	if n := lg.pending.Add(int64(len(items))); n > int64(lg.l.cfg.MaxQueue) && n != int64(len(items)) {
		lg.pending.Add(-int64(len(items)))
		return nil, ErrBusy
	}
	if p := lg.broken.Load(); p != nil {
		lg.pending.Add(-int64(len(items)))
		return nil, fmt.Errorf("log is stopped after an earlier failure: %w", *p)
	}
	r := &request{items: items, done: make(chan struct{})}
	// Enqueue under the close lock, so that once stop has closed quit no request can still slip into the
	// queue after the sequencer's final drain.
	lg.closeMu.RLock()
	if lg.closed {
		lg.closeMu.RUnlock()
		lg.pending.Add(-int64(len(items)))
		return nil, ErrClosed
	}
	select {
	case lg.queue <- r:
		lg.closeMu.RUnlock()
	default:
		lg.closeMu.RUnlock()
		lg.pending.Add(-int64(len(items)))
		return nil, ErrBusy
	}
	// Once queued, the request is committed or failed by the sequencer; the caller must wait for the outcome
	// even if its context ends, or an acknowledged-but-unseen event could be retried as new.
	<-r.done
	return r.res, r.err
}

// QueueFull reports whether the log's queue is at its limit, so a caller can push back before preparing.
func (lg *Log) QueueFull() bool { return lg.pending.Load() >= int64(lg.l.cfg.MaxQueue) }

// Broken returns the failure that stopped the log, or nil.
func (lg *Log) Broken() error {
	if p := lg.broken.Load(); p != nil {
		return *p
	}
	return nil
}

// QueueLength is the number of events waiting to be sequenced.
func (lg *Log) QueueLength() int64 { return lg.pending.Load() }

func (lg *Log) stop() {
	lg.closeMu.Lock()
	lg.closed = true
	close(lg.quit)
	lg.closeMu.Unlock()
	<-lg.done
	lg.stopLoader()
	<-lg.lifeReady
	close(lg.cpWake)
	<-lg.cpDone
}

// The write path is a two-stage pipeline. The sequencer (one goroutine per log) takes whatever is queued,
// decides idempotency, stamps recorded times, assigns indices and derives leaves and tree hashes; the committer
// (one goroutine per log) appends each built batch durably, in order, advances the tree and acknowledges. The
// sequencer builds batch k+1 while the committer waits for batch k's fsync. Its state (next index, ids, last
// recorded time) runs ahead of what is durable; nothing is acknowledged, published or followed until the
// committer has made it durable, and a failed append stops the log, so speculation never leaks.

// built is a batch made ready by the sequencer.
type built struct {
	epoch      int64 // the sequencer's epoch when it built the batch
	err        error // the batch could not be built (its tree hashes could not be read)
	reqs       []*request
	batch      *store.Batch
	sysIndex   uint64
	sysChanged bool
}

// sequence is the first stage: it builds batches and hands them to the committer.
func (lg *Log) sequence() {
	defer close(lg.commitQ)
	var reqs []*request
	for {
		reqs = lg.takeRequeued(reqs[:0])
		if len(reqs) > 0 {
			lg.commitQ <- lg.build(slices.Clone(reqs))
			continue
		}
		select {
		case <-lg.requeueWake:
			continue
		case r := <-lg.queue:
			reqs = append(reqs, r)
		case <-lg.quit:
			// Nothing can be enqueued any more (see Append): build what is queued, then stop.
			for {
				rest := lg.drainQueue(lg.takeRequeued(nil), 0)
				if len(rest) == 0 {
					return
				}
				lg.commitQ <- lg.build(rest)
			}
		}
		reqs = lg.drainQueue(reqs, len(reqs[0].items))
		lg.commitQ <- lg.build(slices.Clone(reqs))
	}
}

// build decides and encodes one batch on the sequencer's (speculative) state.
func (lg *Log) build(reqs []*request) *built {
	lg.catchUp()
	now := lg.l.cfg.Now()
	lg.expireDedup(now)
	start := lg.next
	b := &built{epoch: lg.epoch, reqs: reqs, batch: &store.Batch{Start: start}}
	batch := b.batch
	pendingIDs := map[event.UUID]dedupEntry{}
	rec := now.UnixNano()
	if rec < lg.lastRecorded {
		rec = lg.lastRecorded
	}
	recMonth := time.Unix(0, rec).UTC().Format("2006-01")
	// Ids older than this may already be forgotten: a retry of one cannot be recognised, so it is refused
	// (Prepare checked the window when the request arrived; a request can wait in the queue since).
	oldest := now.Add(-lg.l.cfg.DedupWindow - time.Minute)
	var preps []*Prepared // parallel to batch.Entries
	for _, r := range reqs {
		r.res = make([]Receipt, len(r.items))
		// Decide the whole request first: a conflict, within the request or with the log, rejects all of it.
		var seen map[event.UUID][16]byte
		for i, p := range r.items {
			if !p.ev.IDGiven {
				continue
			}
			if p.ev.ID.Time().Before(oldest) {
				r.err = &event.Error{Event: i, ID: p.ev.ID.String(), Field: "/id", Reason: "the id's time fell out of the idempotency window while the request waited; retry with a fresh id"}
				break
			}
			d, ok := lg.dedup[p.ev.ID]
			if !ok {
				d, ok = pendingIDs[p.ev.ID]
			}
			if ok && d.key != p.contentKey {
				r.err = &ConflictError{Event: i, ID: p.ev.ID}
				break
			}
			if k, dup := seen[p.ev.ID]; dup && k != p.contentKey {
				r.err = &ConflictError{Event: i, ID: p.ev.ID}
				break
			}
			if seen == nil {
				seen = map[event.UUID][16]byte{}
			}
			seen[p.ev.ID] = p.contentKey
		}
		if r.err != nil {
			continue
		}
		// Entries this request adds are the batch's tail from mark on, so an undo is a truncation.
		mark := len(batch.Entries)
		var added []event.UUID
		sys, sysChanged := b.sysIndex, b.sysChanged
		for i, p := range r.items {
			if p.ev.IDGiven {
				d, ok := lg.dedup[p.ev.ID]
				if !ok {
					d, ok = pendingIDs[p.ev.ID]
				}
				if ok {
					r.res[i] = Receipt{ID: p.ev.ID, Index: d.index, Duplicate: true}
					continue
				}
			}
			idx := start + uint64(len(batch.Entries))
			if p.sealed != nil && p.month != recMonth {
				// The month turned between preparation and sequencing: seal under the right period key.
				if err := lg.sealFor(p, time.Unix(0, rec)); err != nil {
					r.err = err
					break
				}
			}
			// Lifecycle rules are decided here, against every event ordered before this one.
			var alert *Prepared
			if lifecycle.Tracked(p.ev.Type) {
				<-lg.lifeReady
				rules := lg.life.Decide(lifecycle.FactOf(p.ev, p.env.Actor, idx))
				if len(rules) == 0 {
					p.unmark()
				}
				if len(rules) > 0 {
					err := p.markViolations(rules)
					if err == nil {
						alert, err = lg.alertFor(p, rules, now)
					}
					if err != nil {
						r.err = err
						break
					}
				}
			}
			batch.Entries = append(batch.Entries, store.Entry{Index: idx, ID: p.ev.ID, Recorded: rec, Type: p.ev.Type,
				Salt: p.salt, Sealed: p.sealed, ContentKey: p.contentKey})
			preps = append(preps, p)
			if alert != nil {
				batch.Entries = append(batch.Entries, store.Entry{Index: idx + 1, ID: alert.ev.ID, Recorded: rec, Type: alert.ev.Type,
					Salt: alert.salt})
				preps = append(preps, alert)
			}
			if p.ev.IDGiven {
				pendingIDs[p.ev.ID] = dedupEntry{index: idx, key: p.contentKey}
				added = append(added, p.ev.ID)
			}
			if p.ev.Spec.ServerOnly && (p.ev.Type == "system.registered" || p.ev.Type == "system.updated") {
				b.sysIndex, b.sysChanged = idx, true
			}
			r.res[i] = Receipt{ID: p.ev.ID, Index: idx}
		}
		if r.err != nil {
			// Undo this request: nothing of a rejected request is stored.
			batch.Entries, preps = batch.Entries[:mark], preps[:mark]
			lg.life.Forget(start + uint64(mark))
			for _, id := range added {
				delete(pendingIDs, id)
			}
			b.sysIndex, b.sysChanged = sys, sysChanged
		}
	}
	// Envelopes: one buffer for the batch; the digest continues the hash Prepare started over salt and head.
	size := 0
	for _, p := range preps {
		size += len(p.head) + len(p.tail) + 30
	}
	buf := make([]byte, 0, size)
	for i := range batch.Entries {
		e, p := &batch.Entries[i], preps[i]
		at := len(buf)
		buf = append(buf, p.head...)
		buf = event.AppendRecorded(buf, rec)
		mid := len(buf)
		buf = append(buf, p.tail...)
		e.Envelope = buf[at:len(buf):len(buf)]
		h := p.digest
		if h == nil {
			// Sequenced before, in a batch that lost a race: Prepare's digest state was used up then.
			h = sha256.New()
			h.Write(p.salt[:])
			h.Write(p.head)
		}
		p.digest = nil
		h.Write(buf[at+len(p.head) : mid])
		h.Write(p.tail)
		h.Sum(e.Digest[:0])
	}
	if len(batch.Entries) > 0 {
		if err := lg.hashBatch(batch); err != nil {
			// Typically an earlier batch this one was built on lost a race and left the pipeline; the committer
			// fails this one too and the sequencer catches up before building again.
			b.err = err
		}
		lg.lastRecorded = rec
		lg.next = start + uint64(len(batch.Entries))
		for id, d := range pendingIDs {
			lg.remember(id, d)
		}
		lg.inflightMu.Lock()
		lg.inflight = append(lg.inflight, batch)
		lg.inflightMu.Unlock()
	}
	return b
}

// errStaleRetry answers requests whose batch lost a race with another node maxLost times: they were not stored
// and can be retried at once.
var errStaleRetry = fmt.Errorf("%w: another node appended to this log first; retry", ErrBusy)

// maxLost is how many races with other nodes a request may lose before it is answered errStaleRetry; until
// then the committer hands it back to the sequencer, which builds it again on the caught-up log, reusing its
// prepared events (parsing, pseudonymisation and sealing are not redone, and the client does not resend).
const maxLost = 8

// requeue hands the requests of a batch that lost a race back to the sequencer and returns those that lost
// too often (to be answered errStaleRetry). Nothing of them is stored: the batch failed as a whole.
func (lg *Log) requeue(reqs []*request) (failed []*request) {
	lg.lostRaces.Add(1)
	lg.requeueMu.Lock()
	for _, r := range reqs {
		if r.lost++; r.lost >= maxLost {
			failed = append(failed, r)
			continue
		}
		r.err, r.res = nil, nil
		lg.requeued = append(lg.requeued, r)
	}
	lg.requeueMu.Unlock()
	select {
	case lg.requeueWake <- struct{}{}:
	default:
	}
	return failed
}

// LostRaces is how many batches of this log lost a race with another node (and were sequenced again).
func (lg *Log) LostRaces() int64 { return lg.lostRaces.Load() }

// drainQueue appends to reqs whatever requests are queued without waiting, until the batch holds MaxBatch events
// (n of them are in reqs already).
func (lg *Log) drainQueue(reqs []*request, n int) []*request {
	for n < lg.l.cfg.MaxBatch {
		select {
		case r := <-lg.queue:
			reqs = append(reqs, r)
			n += len(r.items)
		default:
			return reqs
		}
	}
	return reqs
}

// takeRequeued appends the requeued requests to reqs and empties the requeue list.
func (lg *Log) takeRequeued(reqs []*request) []*request {
	lg.requeueMu.Lock()
	defer lg.requeueMu.Unlock()
	reqs = append(reqs, lg.requeued...)
	clear(lg.requeued)
	lg.requeued = lg.requeued[:0]
	return reqs
}

// catchUp brings the sequencer's state up to the store when the store holds entries this process did not
// build (another node appended), or after a batch lost such a race. It waits until nothing is in flight.
func (lg *Log) catchUp() {
	stale := lg.epoch < lg.staleEpoch.Load()
	if !stale && !lg.shared {
		return
	}
	for {
		lg.inflightMu.Lock()
		idle := len(lg.inflight) == 0
		lg.inflightMu.Unlock()
		if idle {
			break
		}
		if !stale {
			return // batches in flight: the committer will tell if they lose a race
		}
		time.Sleep(100 * time.Microsecond)
	}
	durable, _ := lg.Tree()
	n := lg.store.Size()
	if !stale && n == lg.next {
		return
	}
	ctx := context.Background()
	err := func() error {
		if n < durable {
			return fmt.Errorf("%w: the store holds %d entries, %d were acknowledged", store.ErrCorrupt, n, durable)
		}
		// Forget what was only speculated, then learn what the store holds beyond our durable size.
		for id, d := range lg.dedup {
			if d.index >= durable {
				delete(lg.dedup, id)
			}
		}
		<-lg.lifeReady
		lg.life.Forget(durable)
		sys, sysChanged := uint64(0), false
		read := lg.store.Entries
		if lr, ok := lg.store.(store.LeafReader); ok {
			read = lr.Leaves // the leaf fields are all catching up needs
		}
		err := read(ctx, durable, n, func(e *store.Entry) error {
			if e.ContentKey != ([16]byte{}) {
				lg.remember(e.ID, dedupEntry{index: e.Index, key: e.ContentKey})
			}
			lg.lastRecorded = max(lg.lastRecorded, e.Recorded)
			if lifecycle.Tracked(e.Type) && e.Envelope == nil {
				// Leaves carry no envelope; the lifecycle rules need this (rare) event's facts.
				full, err := lg.store.Entry(ctx, e.Index)
				if err != nil {
					return err
				}
				e = full
			}
			lg.loadFact(e)
			if e.Type == "system.registered" || e.Type == "system.updated" {
				sys, sysChanged = e.Index, true
			}
			return nil
		})
		if err != nil {
			return err
		}
		root, err := tlog.TreeHash(int64(n), lg.store)
		if err != nil {
			return err
		}
		lg.treeMu.Lock()
		if n >= lg.treeSize {
			lg.treeSize, lg.treeRoot = n, root
		}
		lg.treeMu.Unlock()
		if sysChanged {
			return lg.setDefinitionFrom(ctx, sys)
		}
		return nil
	}()
	if err != nil {
		lg.broken.CompareAndSwap(nil, &err)
		lg.l.cfg.Logger.Error("catch up with the store", "system", lg.name, "err", err)
		return
	}
	lg.next = n
	lg.epoch = lg.staleEpoch.Load()
	if n > durable {
		lg.wakeCheckpointer()
	}
}

// commit is the second stage: it makes built batches durable in order and acknowledges them.
func (lg *Log) commit() {
	defer close(lg.done)
	ctx := context.Background()
	for b := range lg.commitQ {
		var err error
		lost := false // nothing of the batch is stored and its requests can be sequenced again
		if p := lg.broken.Load(); p != nil {
			err = fmt.Errorf("log is stopped after an earlier failure: %w", *p)
		} else if b.epoch < lg.staleEpoch.Load() {
			err, lost = errStaleRetry, true // built on a batch that lost a race with another node
		} else if b.err != nil {
			// Nothing of it was written; make the sequencer catch up with the store before it builds again.
			lg.staleEpoch.Store(b.epoch + 1)
			lg.l.cfg.Logger.Warn("batch could not be built; catching up with the store", "system", lg.name, "err", b.err)
			err, lost = fmt.Errorf("%w: %v", ErrBusy, b.err), true
		} else if len(b.batch.Entries) > 0 {
			if err = lg.appendBatch(ctx, b.batch); errors.Is(err, store.ErrStale) {
				// Another node appended first. Fail this batch and everything built on it; the sequencer catches
				// up with the store before it builds again, and sequences the requests again (below).
				lg.staleEpoch.Store(b.epoch + 1)
				err, lost = errStaleRetry, true
			} else if err != nil {
				// What the sequencer built on this batch can no longer be made durable: stop the log.
				lg.broken.CompareAndSwap(nil, &err)
			}
		}
		if len(b.batch.Entries) > 0 {
			lg.inflightMu.Lock()
			lg.inflight = slices.DeleteFunc(lg.inflight, func(x *store.Batch) bool { return x == b.batch })
			lg.inflightMu.Unlock()
		}
		if err == nil && b.sysChanged {
			if derr := lg.setDefinitionFrom(ctx, b.sysIndex); derr != nil {
				lg.l.cfg.Logger.Error("load system definition", "system", lg.name, "err", derr)
			}
		}
		if lost {
			b.reqs = lg.requeue(b.reqs)
		}
		for _, r := range b.reqs {
			if err != nil && r.err == nil {
				r.err = err
			}
			if r.err != nil {
				r.res = nil
			}
			lg.pending.Add(-int64(len(r.items)))
			close(r.done)
		}
		if err == nil && len(b.batch.Entries) > 0 {
			lg.wakeCheckpointer()
			select {
			case lg.followWake <- struct{}{}:
			default:
			}
			lg.subMu.Lock()
			for _, ch := range lg.subs {
				select {
				case ch <- struct{}{}:
				default:
				}
			}
			lg.subMu.Unlock()
		}
	}
	// The sequencer has stopped: requests handed back after it took its last ones will not be built again.
	for _, r := range lg.takeRequeued(nil) {
		r.err, r.res = errStaleRetry, nil
		lg.pending.Add(-int64(len(r.items)))
		close(r.done)
	}
}

// hashBatch computes the tree's new stored hashes for a built batch, reading earlier hashes from the store or
// from batches still in flight.
func (lg *Log) hashBatch(b *store.Batch) error {
	base := tlog.StoredHashCount(int64(b.Start))
	r := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		lg.inflightMu.Lock()
		defer lg.inflightMu.Unlock()
		var stored, at []int64 // read from the store in one call (one query for a database)
		for i, x := range idx {
			if x >= base {
				out[i] = b.Hashes[x-base]
				continue
			}
			found := false
			for _, f := range lg.inflight {
				if fb := tlog.StoredHashCount(int64(f.Start)); x >= fb && x < fb+int64(len(f.Hashes)) {
					out[i], found = f.Hashes[x-fb], true
					break
				}
			}
			if !found {
				// Not in flight, so durable in the store: batches leave the in-flight list only after their append.
				stored, at = append(stored, x), append(at, int64(i))
			}
		}
		if len(stored) > 0 {
			hs, err := lg.store.ReadHashes(stored)
			if err != nil {
				return nil, err
			}
			for j, i := range at {
				out[i] = hs[j]
			}
		}
		return out, nil
	})
	b.Hashes = b.Hashes[:0]
	for i := range b.Entries {
		lg.scratch = b.Entries[i].AppendLeaf(lg.scratch[:0])
		hs, err := tlog.StoredHashes(int64(b.Start)+int64(i), lg.scratch, r)
		if err != nil {
			return err
		}
		b.Hashes = append(b.Hashes, hs...)
	}
	return nil
}

// appendBatch appends a built batch durably and advances the tree.
func (lg *Log) appendBatch(ctx context.Context, b *store.Batch) error {
	if err := lg.store.Append(ctx, b); err != nil {
		return fmt.Errorf("append: %w", err)
	}
	// From here the batch is durable: it must be acknowledged, whatever happens next.
	n := b.Start + uint64(len(b.Entries))
	root, err := tlog.TreeHash(int64(n), lg.store)
	if err != nil {
		lg.broken.CompareAndSwap(nil, &err)
		lg.l.cfg.Logger.Error("tree hash after a durable append; the log takes no more appends until restarted", "system", lg.name, "err", err)
		return nil
	}
	lg.treeMu.Lock()
	lg.treeSize, lg.treeRoot = n, root
	lg.treeMu.Unlock()
	return nil
}

// Committed fires (coalesced) after batches are committed; for a single follower such as the query index.
func (lg *Log) Committed() <-chan struct{} { return lg.followWake }

// Subscribe returns a channel that fires (coalesced) after batches are committed, for one more follower of the
// log (the lineage registry, monitoring); each caller gets its own channel.
func (lg *Log) Subscribe() <-chan struct{} {
	ch := make(chan struct{}, 1)
	lg.subMu.Lock()
	lg.subs = append(lg.subs, ch)
	lg.subMu.Unlock()
	return ch
}

// Tree returns the size and root of the durable tree (which may be ahead of the published checkpoint).
func (lg *Log) Tree() (uint64, tlog.Hash) {
	lg.treeMu.RLock()
	defer lg.treeMu.RUnlock()
	return lg.treeSize, lg.treeRoot
}

func (lg *Log) wakeCheckpointer() {
	select {
	case lg.cpWake <- struct{}{}:
	default:
	}
}

// checkpointer signs and publishes a checkpoint for the durable tree at most once per CheckpointInterval, and
// never later than CheckpointInterval after an acknowledgement.
func (lg *Log) checkpointer() {
	defer close(lg.cpDone)
	var last time.Time
	for range lg.cpWake {
		if d := lg.l.cfg.CheckpointInterval - time.Since(last); d > 0 {
			time.Sleep(d)
		}
		last = time.Now()
		if err := lg.publish(); err != nil {
			lg.l.cfg.Logger.Error("publish checkpoint", "system", lg.name, "err", err)
		}
	}
	if err := lg.publish(); err != nil {
		lg.l.cfg.Logger.Error("publish final checkpoint", "system", lg.name, "err", err)
	}
}

func (lg *Log) publish() error {
	n, root := lg.Tree()
	if n == 0 {
		return nil
	}
	if p := lg.published.Load(); p != nil && p.size == n {
		return nil
	}
	body := Checkpoint{Origin: lg.signer.Name(), Size: n, Root: root}.Marshal()
	signed, err := note.Sign(&note.Note{Text: string(body)}, lg.signer)
	if err != nil {
		return err
	}
	// Keep it before serving it: recovery refuses to truncate below the kept checkpoint, so a checkpoint anyone
	// has seen is always one the store will defend.
	if err := lg.store.SetCheckpoint(context.Background(), n, signed); err != nil {
		return err
	}
	lg.published.Store(&publishedCheckpoint{size: n, note: signed, at: time.Now()})
	return nil
}

// Checkpoint returns the latest published signed checkpoint and its tree size (nil before the first).
func (lg *Log) Checkpoint() ([]byte, uint64) {
	p := lg.published.Load()
	if p == nil {
		return nil, 0
	}
	return p.note, p.size
}

// SignedCheckpointAt signs a checkpoint for the tree of size n, an earlier state of the durable tree, so that a
// document generated against that state can end with a checkpoint anyone can verify with the log's key. Ed25519
// signatures are deterministic: the same n gives the same bytes.
func (lg *Log) SignedCheckpointAt(n uint64) ([]byte, error) {
	if size, _ := lg.Tree(); n == 0 || n > size {
		return nil, ErrRange
	}
	root, err := tlog.TreeHash(int64(n), lg.store)
	if err != nil {
		return nil, fmt.Errorf("tree hash at %d: %w", n, err)
	}
	body := Checkpoint{Origin: lg.signer.Name(), Size: n, Root: root}.Marshal()
	return note.Sign(&note.Note{Text: string(body)}, lg.signer)
}

// ErrRange: an index or tree size beyond the published tree.
var ErrRange = errors.New("beyond the published tree")

// InclusionProof proves that leaf index is in the tree of size n (n ≤ the published size).
func (lg *Log) InclusionProof(index, n uint64) (tlog.RecordProof, error) {
	if _, pub := lg.Checkpoint(); n > pub || index >= n {
		return nil, ErrRange
	}
	return tlog.ProveRecord(int64(n), int64(index), lg.store)
}

// ConsistencyProof proves that the tree of size old is a prefix of the tree of size n.
func (lg *Log) ConsistencyProof(old, n uint64) (tlog.TreeProof, error) {
	if _, pub := lg.Checkpoint(); n > pub || old > n || old == 0 {
		return nil, ErrRange
	}
	return tlog.ProveTree(int64(n), int64(old), lg.store)
}

// TileData returns a hash tile (height 8) within the published tree.
func (lg *Log) TileData(t tlog.Tile) ([]byte, error) {
	_, pub := lg.Checkpoint()
	if !tileWithin(t, pub) {
		return nil, ErrRange
	}
	return tlog.ReadTileData(t, lg.store)
}

// tileWithin reports whether tile t (width W at level L) is covered by a tree of n leaves.
func tileWithin(t tlog.Tile, n uint64) bool {
	if t.H != 8 || t.W < 1 || t.W > 256 || t.L < 0 || t.N < 0 {
		return false
	}
	need := (uint64(t.N)*256 + uint64(t.W))
	for i := 0; i < t.L; i++ {
		need *= 256
		if need > 1<<62 {
			return false
		}
	}
	return need <= n
}

// EntryBundle returns the C2SP tlog-tiles entry bundle of leaves [N*256, N*256+W): each leaf entry prefixed by
// its big-endian uint16 length.
func (lg *Log) EntryBundle(ctx context.Context, n int64, w int) ([]byte, error) {
	_, pub := lg.Checkpoint()
	if !tileWithin(tlog.Tile{H: 8, L: 0, N: n, W: w}, pub) {
		return nil, ErrRange
	}
	var out []byte
	start := uint64(n) * 256
	var leaf []byte
	err := lg.store.Entries(ctx, start, start+uint64(w), func(e *store.Entry) error {
		leaf = e.AppendLeaf(leaf[:0])
		var err error
		out, err = AppendEntry(out, leaf)
		return err
	})
	return out, err
}

// Entry reads an entry (within the durable tree).
func (lg *Log) Entry(ctx context.Context, index uint64) (*store.Entry, error) {
	return lg.store.Entry(ctx, index)
}

// Store returns the underlying store log (for verification and indexing).
func (lg *Log) Store() store.Log { return lg.store }

// OpenPayload decrypts an entry's sealed payload. Callers must have recorded the access first.
func (lg *Log) OpenPayload(e *store.Entry) ([]byte, error) { return OpenSealed(lg.l.keys, e) }

// DisclosePayload returns an entry's per-event data key and ciphertext, so that one payload can be handed to an
// auditor (seal.OpenDisclosed) without any period key. Callers must have recorded the access first.
func (lg *Log) DisclosePayload(e *store.Entry) (dataKey, ciphertext []byte, err error) {
	if e.Sealed == nil || e.Envelope == nil {
		return nil, nil, errors.New("entry has no payload")
	}
	env, err := event.ParseEnvelope(e.Envelope)
	if err != nil || env.Payload == nil {
		return nil, nil, errors.New("entry has no payload")
	}
	kc, err := event.ParseSHA256(env.Payload.KeyCommit)
	if err != nil {
		return nil, nil, err
	}
	pk, err := lg.l.keys.Lookup(env.Payload.Key)
	if err != nil {
		return nil, nil, err
	}
	return seal.Disclose(pk, e.ID[:], e.Sealed, kc)
}

// OpenSealed decrypts an entry's sealed payload with the keyring, checking the data key against the
// envelope's key commitment.
func OpenSealed(keys *seal.Keyring, e *store.Entry) ([]byte, error) {
	if e.Sealed == nil || e.Envelope == nil {
		return nil, errors.New("entry has no payload")
	}
	env, err := event.ParseEnvelope(e.Envelope)
	if err != nil || env.Payload == nil {
		return nil, errors.New("entry has no payload")
	}
	kc, err := event.ParseSHA256(env.Payload.KeyCommit)
	if err != nil {
		return nil, err
	}
	pk, err := keys.Lookup(env.Payload.Key)
	if err == nil {
		var pt []byte
		if pt, err = seal.Open(pk, e.ID[:], e.Sealed, kc); err == nil {
			return pt, nil
		}
	}
	// Held by retention: the data key was re-wrapped under the period's hold key (seal.HoldKeyID).
	if hk, herr := keys.Lookup(seal.HoldKeyID(env.Payload.Key)); herr == nil {
		if pt, herr := seal.Open(hk, e.ID[:], e.Sealed, kc); herr == nil {
			return pt, nil
		}
	}
	return nil, err
}
