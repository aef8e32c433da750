package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairn-ai/cairn/internal/api"
	"github.com/cairn-ai/cairn/internal/index"
)

// Server is a real HTTP server (net/http over a loopback TCP listener) serving env's ledger through the API,
// as `cairn serve` does, optionally with the SQLite query index following the log.
type Server struct {
	URL        string
	Token      string // holds the ingest and auditor roles for System
	env        *Env
	srv        *http.Server
	index      *index.Index
	stopFollow func()
	stopX      func()
}

// StartServer starts the API on 127.0.0.1 on a free port. With withIndex, the query index (DIR/data/index.db)
// follows the log as in `cairn serve`.
func StartServer(ctx context.Context, env *Env, withIndex bool) (*Server, error) {
	tokens, err := api.LoadTokens(filepath.Join(env.DataDir(), "tokens.json"))
	if err != nil {
		return nil, err
	}
	tok, err := tokens.Create(api.Principal{Name: "bench-ingest", Roles: []string{api.RoleIngest, api.RoleAuditor}})
	if err != nil {
		return nil, err
	}
	s := &Server{Token: tok, env: env}
	var lagger api.Index
	if withIndex {
		x, err := index.Open(filepath.Join(env.DataDir(), "index.db"))
		if err != nil {
			return nil, err
		}
		s.index = x
		fctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			x.Follow(fctx, System, env.Log.Store(), env.Log.Committed())
		}()
		s.stopFollow = func() { cancel(); <-done }
		s.stopX = func() { s.stopFollow(); x.Close() }
		lagger = api.LedgerIndex(x, env.Ledger)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	s.srv = &http.Server{
		Handler:           api.New(api.Config{Logger: quiet}, env.Ledger, tokens, lagger),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(quiet.Handler(), slog.LevelWarn),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		if s.stopX != nil {
			s.stopX()
		}
		return nil, err
	}
	s.URL = "http://" + ln.Addr().String()
	go s.srv.Serve(ln)
	return s, nil
}

// Lag is how many entries of system's log the query index has not yet indexed.
func (s *Server) Lag(system string) (uint64, error) {
	if s.index == nil {
		return 0, errors.New("no index")
	}
	w, err := s.index.Watermark(system)
	if err != nil {
		return 0, err
	}
	n, _ := s.env.Log.Tree()
	if w > n {
		return 0, nil
	}
	return n - w, nil
}

// RebuildIndex stops the index follower, drops System from the index and times indexing the whole log again
// in one pass (what `cairn reindex` does): the index's throughput when it has the machine to itself.
func (s *Server) RebuildIndex(ctx context.Context) (rows uint64, seconds float64, err error) {
	if s.index == nil {
		return 0, 0, errors.New("no index")
	}
	s.stopFollow()
	s.stopFollow = func() {}
	if err := s.index.Reset(System); err != nil {
		return 0, 0, err
	}
	t0 := time.Now()
	if err := s.index.CatchUp(ctx, System, s.env.Log.Store()); err != nil {
		return 0, 0, err
	}
	el := time.Since(t0).Seconds()
	wm, err := s.index.Watermark(System)
	return wm, el, err
}

// Close stops the HTTP server and the index follower.
func (s *Server) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.srv.Shutdown(ctx)
	if s.stopX != nil {
		s.stopX()
	}
}

// LoadConfig is an HTTP load: Clients concurrent clients, each POSTing requests of Batch events and waiting for
// the answer before sending the next. With URLs and Systems, client c sends to node URLs[c mod len(URLs)] for
// system Systems[(c / len(URLs)) mod len(Systems)], so that every (node, system) pair gets clients; with
// Affinity, client c sends for system Systems[c mod len(Systems)] to the node of that system, URLs[system mod
// len(URLs)], as a load balancer routing by system would.
type LoadConfig struct {
	URL      string        `json:"url"`
	URLs     []string      `json:"urls,omitempty"`    // several nodes (overrides URL)
	Systems  []string      `json:"systems,omitempty"` // several systems (default: System)
	Affinity bool          `json:"affinity,omitempty"`
	Token    string        `json:"token"`
	Clients  int           `json:"clients"`
	Batch    int           `json:"batch"`
	Warmup   time.Duration `json:"warmup"`
	Duration time.Duration `json:"duration"`
	NoIDs    bool          `json:"no_ids"`
}

// LoadResult is what the load generator saw over its measured window.
type LoadResult struct {
	Clients      int     `json:"clients"`
	Batch        int     `json:"events_per_request"`
	Requests     int64   `json:"requests"`
	Events       int64   `json:"events"`
	Seconds      float64 `json:"seconds"`
	EventsPerSec float64 `json:"events_per_s"`
	Request      Latency `json:"request"`
	ClientBytes  int64   `json:"client_json_bytes"`
	BodyBytes    int64   `json:"body_bytes"`
	Busy         int64   `json:"busy_503"`
	// ClientCPU is the load generator's own CPU per event (only when it runs in its own process).
	ClientCPU *CPU `json:"client_cpu_per_event,omitempty"`
	// PerSystem is each system's events/s, in the order of LoadConfig.Systems (absent for one system).
	PerSystem []float64 `json:"per_system_events_per_s,omitempty"`
}

// RunLoad drives an HTTP load against cfg.URL. Bodies are JSON arrays (NDJSON of one event for Batch 1).
func RunLoad(ctx context.Context, cfg LoadConfig) (LoadResult, error) {
	tr := &http.Transport{MaxIdleConns: cfg.Clients, MaxIdleConnsPerHost: cfg.Clients, DisableCompression: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 120 * time.Second}
	urls, systems := cfg.URLs, cfg.Systems
	if len(urls) == 0 {
		urls = []string{cfg.URL}
	}
	if len(systems) == 0 {
		systems = []string{System}
	}
	perSys := make([]atomic.Int64, len(systems))
	var (
		measuring               atomic.Bool
		stop                    atomic.Bool
		reqs, evs, cbytes, body atomic.Int64
		busy                    atomic.Int64
		firstErr                atomic.Value
		wg                      sync.WaitGroup
		seq                     atomic.Uint64
	)
	lats := make([][]time.Duration, cfg.Clients)
	for c := range cfg.Clients {
		si, node := (c/len(urls))%len(systems), c%len(urls)
		if cfg.Affinity {
			si = c % len(systems)
			node = si % len(urls)
		}
		url := urls[node] + "/v1/systems/" + systems[si] + "/events"
		wg.Go(func() {
			var buf []byte
			var mine []time.Duration
			var first time.Time // when a request answered 503 was first sent: its latency runs until it succeeds
			for !stop.Load() && ctx.Err() == nil {
				t0 := time.Now()
				if first.IsZero() {
					first = t0
				}
				var n int
				base := seq.Add(uint64(cfg.Batch))
				if cfg.Batch == 1 {
					buf = AppendEvent(buf[:0], base, t0, !cfg.NoIDs)
					n = len(buf)
				} else {
					buf, n = AppendBatch(buf[:0], cfg.Batch, base, t0, !cfg.NoIDs)
				}
				req, _ := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(buf))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+cfg.Token)
				resp, err := hc.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						firstErr.CompareAndSwap(nil, err)
					}
					stop.Store(true)
					return
				}
				rb, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusServiceUnavailable {
					busy.Add(1)
					time.Sleep(5 * time.Millisecond)
					continue
				}
				sent := first
				first = time.Time{}
				if err != nil || resp.StatusCode != http.StatusOK {
					firstErr.CompareAndSwap(nil, fmt.Errorf("ingest answered %d: %.300s", resp.StatusCode, rb))
					stop.Store(true)
					return
				}
				if got := bytes.Count(rb, []byte(`"index":`)); got != cfg.Batch {
					firstErr.CompareAndSwap(nil, fmt.Errorf("ingest answered %d receipts for %d events", got, cfg.Batch))
					stop.Store(true)
					return
				}
				if measuring.Load() {
					mine = append(mine, time.Since(sent))
					reqs.Add(1)
					evs.Add(int64(cfg.Batch))
					perSys[si].Add(int64(cfg.Batch))
					cbytes.Add(int64(n))
					body.Add(int64(len(buf)))
				}
			}
			lats[c] = mine
		})
	}
	sleepCtx(ctx, cfg.Warmup)
	cpu := startCPU()
	t0 := time.Now()
	measuring.Store(true)
	sleepCtx(ctx, cfg.Duration)
	measuring.Store(false)
	el := time.Since(t0)
	n := evs.Load()
	ccpu := cpu.per(n)
	stop.Store(true)
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return LoadResult{}, err
	}
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	res := LoadResult{
		Clients: cfg.Clients, Batch: cfg.Batch, Requests: reqs.Load(), Events: n, Seconds: el.Seconds(),
		EventsPerSec: float64(n) / el.Seconds(), Request: Summarize(all), ClientBytes: cbytes.Load(),
		BodyBytes: body.Load(), Busy: busy.Load(), ClientCPU: &ccpu,
	}
	if len(systems) > 1 {
		for i := range perSys {
			res.PerSystem = append(res.PerSystem, float64(perSys[i].Load())/el.Seconds())
		}
	}
	return res, ctx.Err()
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
}

// HTTPConfig is one HTTP ingest scenario.
type HTTPConfig struct {
	Load LoadConfig
	// Spawn runs the load generator, in another process when set (so the server's CPU per event is measured
	// alone); nil runs it in this process.
	Spawn func(ctx context.Context, cfg LoadConfig) (LoadResult, error)
	// IndexDrain bounds the wait for the query index to catch up after the load ends.
	IndexDrain time.Duration
	// RebuildIndex times a full rebuild of the index after the load (see IndexLag.RebuildRowsPerSec).
	RebuildIndex bool
}

// HTTPResult is one HTTP ingest scenario's outcome.
type HTTPResult struct {
	Load LoadResult `json:"load"`
	// ServerCPU is the server's CPU per event (API, ledger, store, checkpoints and the index follower); when
	// the load generator shares the process it includes the generator too.
	ServerCPU     CPU        `json:"server_cpu_per_event"`
	SharedProcess bool       `json:"load_generator_in_server_process"`
	Checkpoint    Latency    `json:"checkpoint"`
	Index         *IndexLag  `json:"index,omitempty"`
	Disk          *DiskUsage `json:"disk,omitempty"`
}

// IndexLag is how far the SQLite query index trailed the log during and after the load.
type IndexLag struct {
	MaxLag      uint64  `json:"max_lag_entries"`
	EndLag      uint64  `json:"lag_at_end_of_load"`
	DrainSec    float64 `json:"drain_s"` // from the end of the load until lag 0
	Rows        uint64  `json:"rows"`
	RowsPerSec  float64 `json:"rows_per_s"` // rows indexed / (load + drain time)
	CaughtUp    bool    `json:"caught_up"`
	MaxLagSec   float64 `json:"max_lag_s"` // max lag divided by the ingest rate
	SampleEvery float64 `json:"sample_every_s"`
	// RebuildRowsPerSec is the rate of a full rebuild after the load (Reset, then CatchUp from 0) with the
	// machine otherwise idle: what the follower can sustain at most.
	RebuildRows       uint64  `json:"rebuild_rows"`
	RebuildRowsPerSec float64 `json:"rebuild_rows_per_s"`
}

// RunHTTP runs an HTTP ingest scenario against a fresh server on env, with the query index following.
func RunHTTP(ctx context.Context, env *Env, c HTTPConfig) (HTTPResult, error) {
	srv, err := StartServer(ctx, env, true)
	if err != nil {
		return HTTPResult{}, err
	}
	defer srv.Close()
	c.Load.URL, c.Load.Token = srv.URL, srv.Token
	if c.IndexDrain == 0 {
		c.IndexDrain = 2 * time.Minute
	}
	// Checkpoint latency as the server sees it: the sequencer's acknowledgements, sampled through the tree.
	probe := newCheckpointProbe(env.Log)
	pctx, pstop := context.WithCancel(ctx)
	pdone := make(chan struct{})
	go func() { probe.run(pctx); close(pdone) }()
	// Index lag and tree growth sampler.
	var lag IndexLag
	lag.SampleEvery = 0.1
	sctx, sstop := context.WithCancel(ctx)
	sdone := make(chan struct{})
	startSize, _ := env.Log.Tree()
	startWM, _ := srv.index.Watermark(System)
	var measuring atomic.Bool
	go func() {
		defer close(sdone)
		// Every millisecond: a tree that grew was just acknowledged (the sequencer acknowledges right after it
		// advances the tree), so its newest entry is a checkpoint-latency sample. Every 100 ms: the index lag.
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		var last uint64
		for tick := 0; ; tick++ {
			select {
			case <-sctx.Done():
				return
			case <-t.C:
			}
			n, _ := env.Log.Tree()
			if n > last && measuring.Load() {
				probe.offer(n-1, time.Now())
			}
			last = n
			if tick%100 == 0 {
				if l, err := srv.Lag(System); err == nil && l > lag.MaxLag {
					lag.MaxLag = l
				}
			}
		}
	}()
	measuring.Store(true)
	cpu := startCPU()
	loadStart := time.Now()
	var lr LoadResult
	if c.Spawn != nil {
		lr, err = c.Spawn(ctx, c.Load)
	} else {
		lr, err = RunLoad(ctx, c.Load)
	}
	measuring.Store(false)
	if err != nil {
		sstop()
		<-sdone
		pstop()
		<-pdone
		return HTTPResult{}, err
	}
	// CPU over the whole load including warm-up, divided by every event appended in that time.
	endSize, _ := env.Log.Tree()
	total := int64(endSize - startSize)
	res := HTTPResult{Load: lr, ServerCPU: cpu.per(total), SharedProcess: c.Spawn == nil}
	loadEnd := time.Now()
	lag.EndLag, _ = srv.Lag(System)
	lag.MaxLag = max(lag.MaxLag, lag.EndLag)
	deadline := loadEnd.Add(c.IndexDrain)
	for time.Now().Before(deadline) {
		if l, err := srv.Lag(System); err == nil && l == 0 {
			lag.CaughtUp = true
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	lag.DrainSec = time.Since(loadEnd).Seconds()
	wm, _ := srv.index.Watermark(System)
	lag.Rows = wm - startWM
	lag.RowsPerSec = float64(lag.Rows) / time.Since(loadStart).Seconds()
	if lr.EventsPerSec > 0 {
		lag.MaxLagSec = float64(lag.MaxLag) / lr.EventsPerSec
	}
	sstop()
	<-sdone
	time.Sleep(200 * time.Millisecond)
	pstop()
	<-pdone
	if c.RebuildIndex {
		rows, sec, err := srv.RebuildIndex(ctx)
		if err != nil {
			return res, fmt.Errorf("rebuild index: %w", err)
		}
		lag.RebuildRows, lag.RebuildRowsPerSec = rows, float64(rows)/sec
	}
	res.Index = &lag
	res.Checkpoint = probe.result()
	return res, nil
}
