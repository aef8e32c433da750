package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/ledger"
)

// AppendConfig is one in-process ingest scenario: Writers goroutines, each parsing, preparing and appending
// PerCall events per ledger Append call and waiting for the acknowledgement before the next call.
type AppendConfig struct {
	Writers  int
	PerCall  int
	Warmup   time.Duration // appends before measuring starts
	Duration time.Duration // measured window
	NoIDs    bool          // let the server choose event ids (no idempotency digest)
}

// AppendResult is what one in-process scenario measured over its window.
type AppendResult struct {
	Writers      int     `json:"writers"`
	PerCall      int     `json:"events_per_call"`
	Events       int64   `json:"events"`
	Seconds      float64 `json:"seconds"`
	EventsPerSec float64 `json:"events_per_s"`
	// Ack is the latency of one Append call, from building its first event to its acknowledgement.
	Ack Latency `json:"ack"`
	CPU CPU     `json:"cpu_per_event"`
	// Checkpoint is the time from an acknowledgement until a published checkpoint covers the event (sampled).
	Checkpoint  Latency `json:"checkpoint"`
	ClientBytes int64   `json:"client_json_bytes"`
	Errors      int64   `json:"errors"`
}

// RunAppend runs an in-process scenario against env's log.
func RunAppend(ctx context.Context, env *Env, c AppendConfig) (AppendResult, error) {
	if c.Writers < 1 || c.PerCall < 1 {
		return AppendResult{}, fmt.Errorf("bench: writers and events per call must be positive")
	}
	lg := env.Log
	var (
		measuring atomic.Bool
		stop      atomic.Bool
		events    atomic.Int64
		bytes     atomic.Int64
		errs      atomic.Int64
		firstErr  atomic.Value
		seq       atomic.Uint64
		wg        sync.WaitGroup
	)
	lats := make([][]time.Duration, c.Writers)
	probe := newCheckpointProbe(lg)
	probeCtx, probeStop := context.WithCancel(ctx)
	probeDone := make(chan struct{})
	go func() { probe.run(probeCtx); close(probeDone) }()
	for w := range c.Writers {
		wg.Go(func() {
			buf := make([]byte, 0, 2*EventSize)
			items := make([]*ledger.Prepared, 0, c.PerCall)
			var mine []time.Duration
			for !stop.Load() && ctx.Err() == nil {
				t0 := time.Now()
				items = items[:0]
				n := 0
				base := seq.Add(uint64(c.PerCall))
				for j := range c.PerCall {
					buf = AppendEvent(buf[:0], base+uint64(j), t0, !c.NoIDs)
					n += len(buf)
					ev, err := event.Parse(j, buf, t0, event.DefaultLimits, false)
					if err != nil {
						firstErr.CompareAndSwap(nil, err)
						errs.Add(1)
						stop.Store(true)
						return
					}
					p, err := lg.Prepare(ev, "bench-ingest")
					if err != nil {
						firstErr.CompareAndSwap(nil, err)
						errs.Add(1)
						stop.Store(true)
						return
					}
					items = append(items, p)
				}
				rs, err := lg.Append(ctx, items)
				if err != nil {
					errs.Add(1)
					if err == ledger.ErrBusy {
						time.Sleep(time.Millisecond)
						continue
					}
					firstErr.CompareAndSwap(nil, err)
					stop.Store(true)
					return
				}
				ack := time.Now()
				if measuring.Load() {
					mine = append(mine, ack.Sub(t0))
					events.Add(int64(len(rs)))
					bytes.Add(int64(n))
					probe.offer(rs[len(rs)-1].Index, ack)
				}
			}
			lats[w] = mine
		})
	}
	select {
	case <-time.After(c.Warmup):
	case <-ctx.Done():
	}
	cpu := startCPU()
	t0 := time.Now()
	measuring.Store(true)
	select {
	case <-time.After(c.Duration):
	case <-ctx.Done():
	}
	measuring.Store(false)
	elapsed := time.Since(t0)
	n := events.Load()
	per := cpu.per(n)
	stop.Store(true)
	wg.Wait()
	// Let outstanding checkpoint samples resolve (at most a few checkpoint intervals).
	time.Sleep(300 * time.Millisecond)
	probeStop()
	<-probeDone
	if err, _ := firstErr.Load().(error); err != nil {
		return AppendResult{}, err
	}
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	return AppendResult{
		Writers: c.Writers, PerCall: c.PerCall, Events: n, Seconds: elapsed.Seconds(),
		EventsPerSec: float64(n) / elapsed.Seconds(), Ack: Summarize(all), CPU: per,
		Checkpoint: probe.result(), ClientBytes: bytes.Load(), Errors: errs.Load(),
	}, ctx.Err()
}

// checkpointProbe measures how long after an acknowledgement a published checkpoint covers the event: writers
// offer (index, ack time) at most once per millisecond, and a poller watches the published size.
type checkpointProbe struct {
	lg      *ledger.Log
	next    atomic.Int64 // unix ns after which the next offer is taken
	samples chan sample
	mu      sync.Mutex
	got     []time.Duration
}

type sample struct {
	index uint64
	ack   time.Time
}

func newCheckpointProbe(lg *ledger.Log) *checkpointProbe {
	return &checkpointProbe{lg: lg, samples: make(chan sample, 4096)}
}

func (p *checkpointProbe) offer(index uint64, ack time.Time) {
	nx := p.next.Load()
	if ack.UnixNano() < nx || !p.next.CompareAndSwap(nx, ack.UnixNano()+int64(time.Millisecond)) {
		return
	}
	select {
	case p.samples <- sample{index, ack}:
	default:
	}
}

// run polls the published checkpoint every 500 µs while samples wait, until ctx ends.
func (p *checkpointProbe) run(ctx context.Context) {
	var queue []sample
	for {
		if len(queue) == 0 {
			select {
			case s := <-p.samples:
				queue = append(queue, s)
			case <-ctx.Done():
				return
			}
		}
	drain:
		for {
			select {
			case s := <-p.samples:
				queue = append(queue, s)
			default:
				break drain
			}
		}
		_, size := p.lg.Checkpoint()
		now := time.Now()
		keep := queue[:0]
		for _, s := range queue {
			if s.index < size {
				p.mu.Lock()
				p.got = append(p.got, now.Sub(s.ack))
				p.mu.Unlock()
			} else {
				keep = append(keep, s)
			}
		}
		queue = keep
		if len(queue) > 0 {
			select {
			case <-time.After(500 * time.Microsecond):
			case <-ctx.Done():
				return
			}
		}
	}
}

func (p *checkpointProbe) result() Latency {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Summarize(p.got)
}
