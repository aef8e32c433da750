package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairn-ai/cairn/internal/event"
)

// Failure policies: what the proxy does when the ledger cannot take an event.
const (
	// FailClosed forwards a call only while the ledger accepts writes and releases a response only once its event
	// is durable in the ledger; otherwise the caller gets 503 and the refusal is recorded when the ledger is back.
	FailClosed = "fail-closed"
	// SpoolPolicy writes every event to the local spool and releases the response at once; the spool is
	// delivered in order, and an outage is recorded as a capture_gap anomaly once the ledger is back.
	SpoolPolicy = "spool"
)

// ErrUnavailable answers a fail-closed call while the ledger cannot take events.
var ErrUnavailable = errors.New("ledger unavailable")

// Recorder delivers events to the ledger under a failure policy. Every event either reaches the ledger or
// waits in the spool; nothing is dropped.
type Recorder struct {
	sink   Sink
	spool  *Spool
	policy string
	log    *slog.Logger

	down       atomic.Bool // fail-closed: the last direct append failed and the spool is not yet delivered
	outageFrom atomic.Int64
	refused    atomic.Int64 // fail-closed calls answered 503 during the outage
	delayed    atomic.Int64 // events that went through the spool during the outage
	failing    atomic.Bool  // the shipper's last attempt failed
	mu         sync.Mutex   // serialises direct appends with gap records

	Stats struct {
		Recorded, Spooled, Shipped, Substituted, Failures, InMemory atomic.Int64
	}

	reminted map[string]string // old id → fresh id, for events held longer than the ledger's idempotency window
	commitQ  chan *commitReq
	memMu    sync.Mutex
	mem      [][]byte // events the spool could not take (disk full), in order

	quit chan struct{}
	done chan struct{}
}

// NewRecorder starts delivering the spool's backlog (left by an earlier run too) to sink. Stop it with Close.
func NewRecorder(sink Sink, spool *Spool, policy string, logger *slog.Logger) *Recorder {
	if logger == nil {
		logger = slog.Default()
	}
	r := &Recorder{sink: sink, spool: spool, policy: policy, log: logger, quit: make(chan struct{}), done: make(chan struct{}),
		commitQ: make(chan *commitReq, 4096)}
	for i := 0; i < committers; i++ {
		go r.commitLoop()
	}
	if spool.Backlog() {
		// Events left by an earlier run were not delivered: that is an outage, recorded once they are.
		r.outageFrom.Store(time.Now().UnixNano())
		r.failing.Store(true)
		r.down.Store(policy == FailClosed)
	}
	go r.ship()
	return r
}

// Policy returns the failure policy.
func (r *Recorder) Policy() string { return r.policy }

// Available reports whether a fail-closed call may be forwarded: the ledger took the last write and nothing
// waits in the spool.
func (r *Recorder) Available() bool { return !r.down.Load() && !r.spool.Backlog() && !r.memBacklog() }

// commitReq is one event waiting for a group append.
type commitReq struct {
	ev   []byte
	done chan error
}

// committers is how many group appends run at once; each takes whatever events are waiting (up to 512), so
// concurrent calls share one ledger request and one group commit.
const committers = 4

func (r *Recorder) commitLoop() {
	for {
		var first *commitReq
		select {
		case first = <-r.commitQ:
		case <-r.quit:
			return
		}
		batch := []*commitReq{first}
	fill:
		for len(batch) < 512 {
			select {
			case c := <-r.commitQ:
				batch = append(batch, c)
			default:
				break fill
			}
		}
		evs := make([][]byte, len(batch))
		for i, c := range batch {
			evs[i] = c.ev
		}
		err := r.sink.Append(context.Background(), evs)
		var rj *Rejected
		if errors.As(err, &rj) && len(batch) > 1 {
			// One event spoiled the batch: each goes on its own, so only that one is refused.
			for _, c := range batch {
				c.done <- r.sink.Append(context.Background(), [][]byte{c.ev})
			}
			continue
		}
		for _, c := range batch {
			c.done <- err
		}
	}
}

// Commit appends one event and returns once it is durable in the ledger (fail-closed). Concurrent calls are
// grouped into one append. A rejected event is replaced by a substitute that says why, which is committed
// instead; the caller still gets an error.
func (r *Recorder) Commit(ctx context.Context, ev []byte) error {
	c := &commitReq{ev: ev, done: make(chan error, 1)}
	var err error
	select {
	case r.commitQ <- c:
		err = <-c.done
	case <-r.quit:
		err = errors.New("recorder is closed")
	}
	var rj *Rejected
	if errors.As(err, &rj) {
		r.Stats.Substituted.Add(1)
		if err2 := r.sink.Append(ctx, [][]byte{substitute(ev, rj)}); err2 != nil {
			r.markDown()
			r.Defer(substitute(ev, rj))
		}
		return err
	}
	if err != nil {
		r.Stats.Failures.Add(1)
		r.markDown()
		return err
	}
	r.Stats.Recorded.Add(1)
	return nil
}

func (r *Recorder) markDown() {
	if !r.down.Swap(true) {
		r.outageFrom.CompareAndSwap(0, time.Now().UnixNano())
		r.log.Warn("ledger unavailable: calls are refused until it is back (fail-closed)")
	}
}

// Refused counts a fail-closed call answered 503, for the gap record.
func (r *Recorder) Refused() { r.refused.Add(1) }

// Defer writes an event to the spool, to be delivered in order; wait makes it durable on local disk first.
func (r *Recorder) Defer(ev []byte) error {
	r.memMu.Lock()
	defer r.memMu.Unlock()
	if len(r.mem) == 0 {
		err := r.spool.Put(ev, false)
		if err == nil {
			r.Stats.Spooled.Add(1)
			return nil
		}
		r.log.Error("spool write failed: events are kept in memory until the spool or the ledger takes them", "err", err)
	}
	// Behind events the spool could not take: keep the order, in memory, until the shipper moves them on.
	r.mem = append(r.mem, ev)
	r.Stats.InMemory.Add(1)
	select {
	case r.spool.wake <- struct{}{}:
	default:
	}
	return nil
}

// drainMemory moves events the spool could not take back into it, or, failing that, straight to the ledger.
func (r *Recorder) drainMemory() error {
	r.memMu.Lock()
	defer r.memMu.Unlock()
	for len(r.mem) > 0 {
		if err := r.spool.Put(r.mem[0], false); err != nil {
			if r.spool.Backlog() {
				return err // the spooled events come first
			}
			if err := r.appendAll(append([][]byte(nil), r.mem...)); err != nil {
				return err
			}
			r.Stats.Shipped.Add(int64(len(r.mem)))
			r.mem = nil
			return nil
		}
		r.Stats.Spooled.Add(1)
		r.mem = r.mem[1:]
	}
	r.mem = nil
	return nil
}

func (r *Recorder) memBacklog() bool {
	r.memMu.Lock()
	defer r.memMu.Unlock()
	return len(r.mem) > 0
}

// Close stops the shipper after one last delivery attempt.
func (r *Recorder) Close() {
	close(r.quit)
	<-r.done
}

// ship delivers the spool in order, retrying with backoff while the ledger is unavailable.
func (r *Recorder) ship() {
	defer close(r.done)
	backoff := 50 * time.Millisecond
	for {
		err := r.deliver()
		if err == nil {
			backoff = 50 * time.Millisecond
			if !r.spool.Backlog() && !r.memBacklog() {
				select {
				case <-r.quit:
					return
				case <-r.spool.Wake():
				case <-time.After(time.Second):
				}
			}
			continue
		}
		if !r.failing.Swap(true) {
			r.outageFrom.CompareAndSwap(0, time.Now().UnixNano())
			r.log.Warn("ledger unavailable: events wait in the spool", "err", err)
		}
		select {
		case <-r.quit:
			return
		case <-time.After(backoff):
		}
		if backoff < 2*time.Second {
			backoff *= 2
		}
	}
}

// deliver sends what the spool holds, then, after an outage, the gap record.
func (r *Recorder) deliver() error {
	if err := r.drainMemory(); err != nil {
		return err
	}
	for {
		recs, pos, err := r.spool.Next(512)
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			break
		}
		if err := r.appendAll(recs); err != nil {
			return err
		}
		if err := r.spool.Ack(pos); err != nil {
			return err
		}
		r.Stats.Shipped.Add(int64(len(recs)))
		if r.outageFrom.Load() != 0 {
			r.delayed.Add(int64(len(recs)))
		}
	}
	from := r.outageFrom.Load()
	if from == 0 {
		return nil
	}
	if err := r.sink.Append(context.Background(), [][]byte{r.gapEvent(from)}); err != nil {
		return err
	}
	r.log.Info("ledger is back: spool delivered and the gap recorded", "delayed", r.delayed.Load(), "refused", r.refused.Load())
	r.outageFrom.Store(0)
	r.delayed.Store(0)
	r.refused.Store(0)
	r.failing.Store(false)
	r.down.Store(false)
	return nil
}

// appendAll appends records in order; a rejected one is replaced by its substitute.
func (r *Recorder) appendAll(recs [][]byte) error {
	if len(r.reminted) > 0 {
		for i, rec := range recs {
			if bytes.Contains(rec, []byte(`"refs"`)) {
				recs[i] = r.relink(rec)
			}
		}
	}
	for len(recs) > 0 {
		err := r.sink.Append(context.Background(), recs)
		var rj *Rejected
		if !errors.As(err, &rj) {
			return err
		}
		i := min(max(rj.Index, 0), len(recs)-1)
		if i > 0 {
			if err := r.sink.Append(context.Background(), recs[:i]); err != nil {
				return err
			}
		}
		if rj.Field == "/id" && strings.Contains(rj.Reason, "idempotency window") {
			// Held in the spool longer than the ledger remembers ids: the same event under a fresh id (a
			// retry this late cannot be told from a new event, and the spool delivers each record once).
			recs[i] = r.remint(recs[i])
			recs = recs[i:]
			continue
		}
		r.Stats.Substituted.Add(1)
		if err := r.sink.Append(context.Background(), [][]byte{substitute(recs[i], rj)}); err != nil {
			return err
		}
		recs = recs[i+1:]
	}
	return nil
}

// remint gives an event a fresh id, and its references the fresh ids of events reminted before it.
func (r *Recorder) remint(ev []byte) []byte {
	var m map[string]json.RawMessage
	if json.Unmarshal(ev, &m) != nil {
		return ev
	}
	var old string
	json.Unmarshal(m["id"], &old)
	id := event.NewV7(time.Now()).String()
	if r.reminted == nil {
		r.reminted = map[string]string{}
	}
	r.reminted[old] = id
	m["id"], _ = json.Marshal(id)
	return r.relinkMap(ev, m)
}

// relink points an event's references at the fresh ids of reminted events.
func (r *Recorder) relink(ev []byte) []byte {
	var m map[string]json.RawMessage
	if json.Unmarshal(ev, &m) != nil {
		return ev
	}
	return r.relinkMap(ev, m)
}

func (r *Recorder) relinkMap(ev []byte, m map[string]json.RawMessage) []byte {
	var refs []string
	if json.Unmarshal(m["refs"], &refs) == nil && len(refs) > 0 {
		for i, ref := range refs {
			if n, ok := r.reminted[ref]; ok {
				refs[i] = n
			}
		}
		m["refs"], _ = json.Marshal(refs)
	}
	out, _ := json.Marshal(m)
	return out
}

// gapEvent is the anomaly recording an outage of the ledger: when it began and ended, and how many events
// were delayed through the spool or calls refused.
func (r *Recorder) gapEvent(from int64) []byte {
	now := time.Now()
	delayed, refused := r.delayed.Load(), r.refused.Load()
	ev := map[string]any{
		"id":   event.NewV7(now).String(),
		"type": "anomaly",
		"time": time.Unix(0, from).UTC().Format(time.RFC3339Nano),
		"attrs": map[string]any{
			"kind": "capture_gap", "severity": "warning", "metric": "delayed_events", "value": delayed,
		},
		"payload": map[string]any{
			"from": time.Unix(0, from).UTC().Format(time.RFC3339Nano), "to": now.UTC().Format(time.RFC3339Nano),
			"policy": r.policy, "delayed_events": delayed, "refused_calls": refused,
			"reason": "the ledger did not accept events; they were kept in the proxy's spool and delivered in order",
		},
	}
	b, _ := json.Marshal(ev)
	return b
}

// substitute replaces an event the ledger refused with one that records the call happened and why its content
// could not be kept: the call's identity and timing stay, the content is replaced by its digest.
func substitute(ev []byte, rj *Rejected) []byte {
	var in struct {
		ID    string         `json:"id"`
		Type  string         `json:"type"`
		Time  string         `json:"time"`
		Model map[string]any `json:"model"`
		Refs  []string       `json:"refs"`
		Attrs map[string]any `json:"attrs"`
	}
	json.Unmarshal(ev, &in)
	model := map[string]any{"name": "unknown", "version": "unknown"}
	if n, ok := in.Model["name"].(string); ok && n != "" {
		if v, ok := in.Model["version"].(string); ok && v != "" {
			model = map[string]any{"name": n, "version": v}
		}
	}
	attrs := map[string]any{"outcome": "capture_rejected", "error_code": "capture_rejected"}
	for _, k := range []string{"protocol", "status", "latency_ms", "ttfb_ms", "part"} {
		if v, ok := in.Attrs[k]; ok {
			attrs[k] = v
		}
	}
	out := map[string]any{
		"id": event.NewV7(time.Now()).String(), "type": "inference", "model": model, "attrs": attrs,
		"payload": map[string]any{"rejected_field": rj.Field, "reason": rj.Reason, "original_sha256": digest(ev)[7:]},
	}
	if _, err := time.Parse(time.RFC3339Nano, in.Time); err == nil {
		out["time"] = in.Time
	}
	b, _ := json.Marshal(out)
	return b
}
