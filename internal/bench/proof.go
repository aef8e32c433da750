package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/ledger"
)

// ProofConfig is the proof-latency scenario: grow a log to Leaves entries, then time proofs against the
// published checkpoint.
type ProofConfig struct {
	Leaves      uint64
	Queries     int // in-process inclusion and consistency proofs, each
	HTTPQueries int // over HTTP, each; 0 skips
	Writers     int // goroutines growing the log (default 4)
	PerCall     int // events per Append while growing (default 2000)
}

// ProofResult is the proof-latency scenario's outcome.
type ProofResult struct {
	Leaves          uint64   `json:"leaves"`
	BuildSeconds    float64  `json:"build_s"`
	BuildPerSec     float64  `json:"build_events_per_s"`
	Inclusion       Latency  `json:"inclusion"`
	Consistency     Latency  `json:"consistency"`
	HTTPInclusion   *Latency `json:"http_inclusion,omitempty"`
	HTTPConsistency *Latency `json:"http_consistency,omitempty"`
}

// RunProofs grows env's log with small events and measures proof generation.
func RunProofs(ctx context.Context, env *Env, c ProofConfig) (ProofResult, error) {
	if c.Writers == 0 {
		c.Writers = 4
	}
	if c.PerCall == 0 {
		c.PerCall = 2000
	}
	lg := env.Log
	start := time.Now()
	if err := Grow(ctx, lg, c.Leaves, c.Writers, c.PerCall); err != nil {
		return ProofResult{}, err
	}
	build := time.Since(start)
	// Wait for a checkpoint covering the grown tree.
	var n uint64
	for {
		if _, n = lg.Checkpoint(); n >= c.Leaves {
			break
		}
		if ctx.Err() != nil {
			return ProofResult{}, ctx.Err()
		}
		time.Sleep(5 * time.Millisecond)
	}
	res := ProofResult{Leaves: n, BuildSeconds: build.Seconds(), BuildPerSec: float64(n) / build.Seconds()}
	cp, _ := lg.Checkpoint()
	c0, err := ledger.OpenCheckpoint(cp, env.Ledger.VerifierKey(System))
	if err != nil {
		return res, err
	}
	rng := rand.New(rand.NewPCG(1, 2))
	incl := make([]time.Duration, 0, c.Queries)
	for i := range c.Queries {
		idx := rng.Uint64N(n)
		t0 := time.Now()
		p, err := lg.InclusionProof(idx, n)
		incl = append(incl, time.Since(t0))
		if err != nil {
			return res, fmt.Errorf("inclusion proof %d: %w", idx, err)
		}
		if i < 100 { // spot-check that what we time is a valid proof
			e, err := lg.Entry(ctx, idx)
			if err != nil {
				return res, err
			}
			if err := tlog.CheckRecord(p, int64(n), c0.Root, int64(idx), tlog.RecordHash(e.AppendLeaf(nil))); err != nil {
				return res, fmt.Errorf("inclusion proof %d does not verify: %w", idx, err)
			}
		}
	}
	cons := make([]time.Duration, 0, c.Queries)
	for i := range c.Queries {
		old := 1 + rng.Uint64N(n-1)
		t0 := time.Now()
		p, err := lg.ConsistencyProof(old, n)
		cons = append(cons, time.Since(t0))
		if err != nil {
			return res, fmt.Errorf("consistency proof %d: %w", old, err)
		}
		if i < 100 {
			oldRoot, err := tlog.TreeHash(int64(old), lg.Store())
			if err != nil {
				return res, err
			}
			if err := tlog.CheckTree(p, int64(n), c0.Root, int64(old), oldRoot); err != nil {
				return res, fmt.Errorf("consistency proof %d→%d does not verify: %w", old, n, err)
			}
		}
	}
	res.Inclusion, res.Consistency = Summarize(incl), Summarize(cons)
	if c.HTTPQueries > 0 {
		hi, hc, err := httpProofs(ctx, env, n, c.HTTPQueries, rng)
		if err != nil {
			return res, err
		}
		res.HTTPInclusion, res.HTTPConsistency = &hi, &hc
	}
	return res, nil
}

// Grow appends small events to lg until it holds at least n entries, with writers goroutines each appending
// perCall events per call.
func Grow(ctx context.Context, lg *ledger.Log, n uint64, writers, perCall int) error {
	var (
		wg       sync.WaitGroup
		seq      atomic.Uint64
		firstErr atomic.Value
	)
	for range writers {
		wg.Go(func() {
			var buf []byte
			items := make([]*ledger.Prepared, 0, perCall)
			for ctx.Err() == nil && firstErr.Load() == nil {
				if size, _ := lg.Tree(); size >= n {
					return
				}
				now := time.Now()
				items = items[:0]
				base := seq.Add(uint64(perCall))
				for j := range perCall {
					buf = AppendSmallEvent(buf[:0], base+uint64(j))
					ev, err := event.Parse(j, buf, now, event.DefaultLimits, false)
					if err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
					p, err := lg.Prepare(ev, "bench-ingest")
					if err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
					items = append(items, p)
				}
				if _, err := lg.Append(ctx, items); err != nil {
					if err == ledger.ErrBusy {
						time.Sleep(time.Millisecond)
						continue
					}
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return err
	}
	return ctx.Err()
}

// httpProofs times proof requests to the API, one at a time, over a kept-alive connection.
func httpProofs(ctx context.Context, env *Env, n uint64, q int, rng *rand.Rand) (Latency, Latency, error) {
	srv, err := StartServer(ctx, env, false)
	if err != nil {
		return Latency{}, Latency{}, err
	}
	defer srv.Close()
	hc := &http.Client{Timeout: 10 * time.Second}
	get := func(path string) (time.Duration, error) {
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+srv.Token)
		t0 := time.Now()
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		d := time.Since(t0)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("GET %s: %s", path, resp.Status)
		}
		return d, err
	}
	var incl, cons []time.Duration
	for range q {
		d, err := get(fmt.Sprintf("/v1/systems/%s/proofs/inclusion?index=%d&size=%d", System, rng.Uint64N(n), n))
		if err != nil {
			return Latency{}, Latency{}, err
		}
		incl = append(incl, d)
	}
	for range q {
		d, err := get(fmt.Sprintf("/v1/systems/%s/proofs/consistency?from=%d&to=%d", System, 1+rng.Uint64N(n-1), n))
		if err != nil {
			return Latency{}, Latency{}, err
		}
		cons = append(cons, d)
	}
	return Summarize(incl), Summarize(cons), nil
}
