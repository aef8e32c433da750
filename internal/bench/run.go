package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Options choose what Run measures.
type Options struct {
	Dir       string        // parent of the temporary installations (default os.TempDir())
	Keep      bool          // keep the installations (default: removed after each scenario)
	Runs      int           // runs of each throughput scenario; the median by events/s is reported
	Warmup    time.Duration // per scenario, before measuring
	Duration  time.Duration // measured window per scenario
	Scenarios []string      // any of "append", "batched", "http", "single", "proofs", "scale"; empty: all but scale

	Writers       []int // in-process writers, one event per call
	BatchWriters  int   // in-process batched appends: writers ...
	BatchEvents   int   // ... × events per call
	HTTPClients   int   // batched HTTP: clients ...
	HTTPBatch     int   // ... × events per request
	SingleClients int   // single-event HTTP requests: clients

	// Scale-out scenarios ("scale"): batched HTTP over ScaleClients × ScaleBatch, for each store (the embedded
	// one, and PostgreSQL at ScalePG when set), each node count (ScaleNodes; PostgreSQL only beyond 1) and each
	// system count (ScaleSystems).
	ScalePG      string
	ScaleNodes   []int
	ScaleSystems []int
	ScaleClients int
	ScaleBatch   int
	ScaleConns   int32 // each node's PostgreSQL connection pool (0: the store's default)

	ProofLeaves      uint64
	ProofQueries     int
	HTTPProofQueries int

	NoIDs bool // let the server choose ids (no idempotency digest)
	// Spawn runs the HTTP load generator in another process (see HTTPConfig.Spawn); nil runs it in-process.
	Spawn    func(ctx context.Context, cfg LoadConfig) (LoadResult, error)
	Progress io.Writer // one line per run; may be nil
}

// Defaults are the options `cairn bench` starts from.
var Defaults = Options{
	Runs: 3, Warmup: 2 * time.Second, Duration: 5 * time.Second,
	Writers: []int{1, 64, 1024}, BatchWriters: 64, BatchEvents: 100,
	HTTPClients: 4, HTTPBatch: 1000, SingleClients: 64,
	ProofLeaves: 1 << 20, ProofQueries: 10000, HTTPProofQueries: 2000,
	ScaleNodes: []int{1, 3}, ScaleSystems: []int{1, 3}, ScaleClients: 4, ScaleBatch: 1000,
}

// Machine describes where and when a report was measured.
type Machine struct {
	Date      string  `json:"date"`
	CPU       string  `json:"cpu"`
	NumCPU    int     `json:"nproc"`
	Go        string  `json:"go"`
	LoadAvg   string  `json:"loadavg_before"`
	LoadAfter string  `json:"loadavg_after"`
	Fsync     Latency `json:"fsync_probe"` // 1.5 KiB append + fdatasync in the bench directory
	FsyncPerS float64 `json:"fsync_probe_per_s"`
}

// AppendScenario is one in-process scenario over its runs.
type AppendScenario struct {
	Name   string         `json:"name"`
	Runs   []AppendResult `json:"runs"`
	Median AppendResult   `json:"median"`
}

// HTTPScenario is one HTTP scenario over its runs.
type HTTPScenario struct {
	Name   string       `json:"name"`
	Runs   []HTTPResult `json:"runs"`
	Median HTTPResult   `json:"median"`
}

// Report is everything Run measured.
type Report struct {
	Machine   Machine          `json:"machine"`
	EventSize int              `json:"event_bytes"`
	Options   map[string]any   `json:"options"`
	Append    []AppendScenario `json:"in_process,omitempty"`
	HTTP      []HTTPScenario   `json:"http,omitempty"`
	Disk      *DiskUsage       `json:"disk,omitempty"`
	Proofs    *ProofResult     `json:"proofs,omitempty"`
	Scale     []ScaleScenario  `json:"scale,omitempty"`
}

// ScaleScenario is one scale-out scenario over its runs.
type ScaleScenario struct {
	Name   string        `json:"name"`
	Runs   []ScaleResult `json:"runs"`
	Median ScaleResult   `json:"median"`
}

func (o *Options) want(s string) bool {
	return (len(o.Scenarios) == 0 && s != "scale") || slices.Contains(o.Scenarios, s)
}

func (o *Options) progress(format string, args ...any) {
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, format+"\n", args...)
	}
}

// Run measures every chosen scenario, each run in a fresh installation.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Dir == "" {
		o.Dir = os.TempDir()
	}
	if o.Runs < 1 {
		o.Runs = 1
	}
	evSize := EventSize
	if o.NoIDs {
		evSize -= 44
	}
	r := &Report{EventSize: evSize, Machine: machine(), Options: map[string]any{
		"runs": o.Runs, "warmup": o.Warmup.String(), "duration": o.Duration.String(), "writers": o.Writers,
		"batched": fmt.Sprintf("%dx%d", o.BatchWriters, o.BatchEvents),
		"http":    fmt.Sprintf("%dx%d", o.HTTPClients, o.HTTPBatch), "single_clients": o.SingleClients,
		"proof_leaves": o.ProofLeaves, "ids": !o.NoIDs, "load_generator_process": o.Spawn != nil,
	}}
	r.Machine.Fsync, r.Machine.FsyncPerS = fsyncProbe(o.Dir)
	o.progress("machine: %s, %d CPUs, %s; load %s; fsync probe p50 %.2f ms p99 %.2f ms (%.0f/s)",
		r.Machine.CPU, r.Machine.NumCPU, r.Machine.Go, r.Machine.LoadAvg, r.Machine.Fsync.P50, r.Machine.Fsync.P99, r.Machine.FsyncPerS)

	type appendCase struct {
		name, key        string
		writers, perCall int
	}
	var cases []appendCase
	if o.want("append") {
		for _, w := range o.Writers {
			cases = append(cases, appendCase{fmt.Sprintf("in-process, %d writer(s) × 1 event", w), "append", w, 1})
		}
	}
	if o.want("batched") {
		cases = append(cases, appendCase{fmt.Sprintf("in-process, %d writers × %d events", o.BatchWriters, o.BatchEvents), "batched", o.BatchWriters, o.BatchEvents})
	}
	for _, c := range cases {
		sc := AppendScenario{Name: c.name}
		for run := range o.Runs {
			var res AppendResult
			err := withEnv(ctx, o, EnvOptions{}, func(env *Env) error {
				var err error
				res, err = RunAppend(ctx, env, AppendConfig{Writers: c.writers, PerCall: c.perCall, Warmup: o.Warmup, Duration: o.Duration, NoIDs: o.NoIDs})
				return err
			})
			if err != nil {
				return r, fmt.Errorf("%s: %w", c.name, err)
			}
			o.progress("%s, run %d: %.0f events/s, ack p50 %.2f ms p99 %.2f ms, CPU %.1f µs/event, checkpoint p50 %.1f ms p99 %.1f ms",
				c.name, run+1, res.EventsPerSec, res.Ack.P50, res.Ack.P99, res.CPU.TotalUs, res.Checkpoint.P50, res.Checkpoint.P99)
			sc.Runs = append(sc.Runs, res)
		}
		sc.Median = Median(sc.Runs, func(a AppendResult) float64 { return a.EventsPerSec })
		r.Append = append(r.Append, sc)
	}

	type httpCase struct {
		name             string
		clients, perCall int
	}
	var hcases []httpCase
	if o.want("http") {
		hcases = append(hcases, httpCase{fmt.Sprintf("HTTP, %d clients × %d events/request", o.HTTPClients, o.HTTPBatch), o.HTTPClients, o.HTTPBatch})
	}
	if o.want("single") {
		hcases = append(hcases, httpCase{fmt.Sprintf("HTTP, %d clients × 1 event/request", o.SingleClients), o.SingleClients, 1})
	}
	for i, c := range hcases {
		sc := HTTPScenario{Name: c.name}
		for run := range o.Runs {
			var res HTTPResult
			err := withEnv(ctx, o, EnvOptions{}, func(env *Env) error {
				var err error
				res, err = RunHTTP(ctx, env, HTTPConfig{
					Load:         LoadConfig{Clients: c.clients, Batch: c.perCall, Warmup: o.Warmup, Duration: o.Duration, NoIDs: o.NoIDs},
					Spawn:        o.Spawn,
					RebuildIndex: i == 0,
				})
				if err != nil {
					return err
				}
				// Bytes on disk, measured on the batched HTTP run's installation after a clean stop.
				size, _ := env.Log.Tree()
				if err := env.Close(); err != nil {
					return err
				}
				if i == 0 {
					du := MeasureDisk(env, size, int64(size-1)*int64(evSize)+int64(len(definition)))
					res.Disk = &du
				}
				return nil
			})
			if err != nil {
				return r, fmt.Errorf("%s: %w", c.name, err)
			}
			l := res.Load
			o.progress("%s, run %d: %.0f events/s, request p50 %.2f ms p99 %.2f ms, server CPU %.1f µs/event, checkpoint p50 %.1f ms p99 %.1f ms, index max lag %d (%.1fs drain)",
				c.name, run+1, l.EventsPerSec, l.Request.P50, l.Request.P99, res.ServerCPU.TotalUs, res.Checkpoint.P50, res.Checkpoint.P99, res.Index.MaxLag, res.Index.DrainSec)
			sc.Runs = append(sc.Runs, res)
		}
		sc.Median = Median(sc.Runs, func(h HTTPResult) float64 { return h.Load.EventsPerSec })
		if i == 0 && sc.Median.Disk != nil {
			r.Disk = sc.Median.Disk
		}
		r.HTTP = append(r.HTTP, sc)
	}

	if o.want("proofs") {
		err := withEnv(ctx, o, EnvOptions{}, func(env *Env) error {
			o.progress("proofs: growing a log to %d leaves…", o.ProofLeaves)
			p, err := RunProofs(ctx, env, ProofConfig{Leaves: o.ProofLeaves, Queries: o.ProofQueries, HTTPQueries: o.HTTPProofQueries})
			if err != nil {
				return err
			}
			r.Proofs = &p
			o.progress("proofs at %d leaves: inclusion p50 %.1f µs p99 %.1f µs, consistency p50 %.1f µs p99 %.1f µs",
				p.Leaves, p.Inclusion.P50*1e3, p.Inclusion.P99*1e3, p.Consistency.P50*1e3, p.Consistency.P99*1e3)
			return nil
		})
		if err != nil {
			return r, fmt.Errorf("proofs: %w", err)
		}
	}
	if o.want("scale") {
		if err := runScale(ctx, o, r); err != nil {
			return r, err
		}
	}
	r.Machine.LoadAfter = loadavg()
	return r, nil
}

// runScale runs the scale-out scenarios: the embedded store with one node, then PostgreSQL (when o.ScalePG is
// set) with each node count, each for each system count.
func runScale(ctx context.Context, o Options, r *Report) error {
	type scaleCase struct {
		pg             string
		nodes, systems int
		affinity       bool
	}
	var cases []scaleCase
	stores := []string{""}
	if o.ScalePG != "" {
		stores = append(stores, o.ScalePG)
	}
	for _, pgURL := range stores {
		for _, n := range o.ScaleNodes {
			if pgURL == "" && n > 1 {
				continue
			}
			for _, sys := range o.ScaleSystems {
				cases = append(cases, scaleCase{pgURL, n, sys, false})
				if n > 1 && sys >= n {
					cases = append(cases, scaleCase{pgURL, n, sys, true})
				}
			}
		}
	}
	r.Options["scale"] = fmt.Sprintf("%dx%d", o.ScaleClients, o.ScaleBatch)
	r.Options["scale_pg_conns"] = o.ScaleConns
	for _, c := range cases {
		// At least one client per (node, system) pair, and as many for each.
		pairs := c.nodes * c.systems
		clients := (max(o.ScaleClients, pairs) + pairs - 1) / pairs * pairs
		store := "embedded"
		if c.pg != "" {
			store = "PostgreSQL"
		}
		routing := ""
		if c.nodes > 1 {
			routing = ", every node writes every system"
			if c.affinity {
				routing = ", each system routed to one node"
			}
		}
		name := fmt.Sprintf("%s, %d node(s), %d system(s)%s, %d clients × %d events/request", store, c.nodes, c.systems, routing, clients, o.ScaleBatch)
		sc := ScaleScenario{Name: name}
		for run := range o.Runs {
			dir, err := os.MkdirTemp(o.Dir, "cairn-bench-*")
			if err != nil {
				return err
			}
			res, err := RunScale(ctx, dir, ScaleConfig{PG: c.pg, Nodes: c.nodes, Systems: c.systems, Affinity: c.affinity, MaxConns: o.ScaleConns, Spawn: o.Spawn,
				Load: LoadConfig{Clients: clients, Batch: o.ScaleBatch, Warmup: o.Warmup, Duration: o.Duration, NoIDs: o.NoIDs}})
			if !o.Keep {
				os.RemoveAll(dir)
			}
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			l := res.Load
			db := ""
			if res.DatabaseCPU != nil {
				db = fmt.Sprintf(", PostgreSQL CPU %.1f µs/event", res.DatabaseCPU.TotalUs)
			}
			o.progress("%s, run %d: %.0f events/s, request p50 %.2f ms p99 %.2f ms, 503s %d, lost races %d, server CPU %.1f µs/event%s",
				name, run+1, l.EventsPerSec, l.Request.P50, l.Request.P99, l.Busy, res.LostRaces, res.ServerCPU.TotalUs, db)
			sc.Runs = append(sc.Runs, res)
		}
		sc.Median = Median(sc.Runs, func(s ScaleResult) float64 { return s.Load.EventsPerSec })
		r.Scale = append(r.Scale, sc)
	}
	return nil
}

// withEnv runs fn in a fresh installation under o.Dir and removes it afterwards (unless o.Keep).
func withEnv(ctx context.Context, o Options, eo EnvOptions, fn func(*Env) error) error {
	dir, err := os.MkdirTemp(o.Dir, "cairn-bench-*")
	if err != nil {
		return err
	}
	if !o.Keep {
		defer os.RemoveAll(dir)
	}
	env, err := NewEnv(ctx, dir, eo)
	if err != nil {
		return err
	}
	defer env.Close() // a second Close is a no-op
	return fn(env)
}

func machine() Machine {
	m := Machine{Date: time.Now().UTC().Format(time.RFC3339), NumCPU: runtime.NumCPU(), Go: runtime.Version(), LoadAvg: loadavg()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		s := bufio.NewScanner(f)
		for s.Scan() {
			if k, v, ok := strings.Cut(s.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	return m
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// fsyncProbe times 500 appends of 1.5 KiB, each followed by fdatasync, in dir: what one durable group commit
// costs on this disk right now (it varies from minute to minute on a shared VM).
func fsyncProbe(dir string) (Latency, float64) {
	f, err := os.CreateTemp(dir, "cairn-bench-fsync-*")
	if err != nil {
		return Latency{}, 0
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 1536)
	var ds []time.Duration
	t0 := time.Now()
	for range 500 {
		s := time.Now()
		if _, err := f.Write(buf); err != nil {
			return Latency{}, 0
		}
		syscall.Fdatasync(int(f.Fd()))
		ds = append(ds, time.Since(s))
	}
	el := time.Since(t0)
	return Summarize(ds), 500 / el.Seconds()
}
