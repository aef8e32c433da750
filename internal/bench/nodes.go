package bench

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cairn-ai/cairn/internal/api"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/seal"
	"github.com/cairn-ai/cairn/internal/store"
	"github.com/cairn-ai/cairn/internal/store/local"
	"github.com/cairn-ai/cairn/internal/store/pg"
)

// ScaleConfig is a scale-out scenario: Nodes Cairn nodes over one store, each with its own ledger (sequencers),
// store connection pool and HTTP server on its own loopback port, as `cairn serve --store postgres://…` runs
// them; Systems systems; a batched HTTP load spread over every (node, system) pair. The nodes share this
// process (on a 2-core machine separate processes would share the same cores); the load generator runs in its
// own process when Spawn is set.
type ScaleConfig struct {
	PG       string // PostgreSQL URL: a throw-away schema is made in it; empty: the embedded store (one node)
	Nodes    int
	Systems  int
	Affinity bool  // route each system's requests to one node (see LoadConfig.Affinity)
	MaxConns int32 // per node's connection pool (default: the store's)
	Load     LoadConfig
	Spawn    func(ctx context.Context, cfg LoadConfig) (LoadResult, error)
}

// ScaleResult is one scale-out scenario's outcome.
type ScaleResult struct {
	Store    string `json:"store"` // "postgres" or "embedded"
	Nodes    int    `json:"nodes"`
	Systems  int    `json:"systems"`
	Affinity bool   `json:"affinity"`
	Load     LoadResult
	// ServerCPU is this process's CPU per event: every node's API, ledger and store client.
	ServerCPU CPU `json:"server_cpu_per_event"`
	// DatabaseCPU is the CPU per event of every PostgreSQL process on the machine over the measured window,
	// read from /proc: it includes whatever other sessions made the database do at the same time.
	DatabaseCPU *CPU `json:"database_cpu_per_event,omitempty"`
	// LostRaces counts batches, over every node, that lost the race for a log to another node and were
	// sequenced again.
	LostRaces int64 `json:"lost_races"`
	// DatabaseBytes is what the store's tables and indexes take per event at the end (PostgreSQL only), and
	// WALBytes the write-ahead log the whole server wrote per event during the load (other sessions included).
	DatabaseBytes float64 `json:"database_bytes_per_event,omitempty"`
	WALBytes      float64 `json:"wal_bytes_per_event,omitempty"`
}

// SystemName is the id of the i-th system of a multi-system scenario (System for i = 0).
func SystemName(i int) string {
	if i == 0 {
		return System
	}
	return System + "-" + strconv.Itoa(i+1)
}

// RunScale runs a scale-out scenario in dir (a fresh directory), in a fresh PostgreSQL schema when c.PG is set
// (dropped afterwards).
func RunScale(ctx context.Context, dir string, c ScaleConfig) (res ScaleResult, err error) {
	c.Nodes, c.Systems = max(c.Nodes, 1), max(c.Systems, 1)
	if c.PG == "" && c.Nodes > 1 {
		return res, fmt.Errorf("the embedded store serves one node; give a PostgreSQL URL for %d", c.Nodes)
	}
	res = ScaleResult{Store: "embedded", Nodes: c.Nodes, Systems: c.Systems, Affinity: c.Affinity}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	key := make([]byte, 32)
	rand.Read(key)
	kek, err := seal.NewKEK(key)
	if err != nil {
		return res, err
	}
	_, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return res, err
	}
	var opts pg.Options
	if c.PG != "" {
		res.Store = "postgres"
		b := make([]byte, 5)
		rand.Read(b)
		opts = pg.Options{Schema: "cairn_bench_" + hex.EncodeToString(b), Migrate: true, MaxConns: c.MaxConns, Logger: quiet}
		if err := pg.CreateSchema(ctx, c.PG, opts.Schema); err != nil {
			return res, err
		}
		defer pg.DropSchema(context.Background(), c.PG, opts.Schema)
	}
	cfg := ledger.Config{Origin: "bench.cairn.local", MaxQueue: 1 << 22, Logger: quiet}
	tokens, err := api.LoadTokens(filepath.Join(dir, "tokens.json"))
	if err != nil {
		return res, err
	}
	tok, err := tokens.Create(api.Principal{Name: "bench-ingest", Roles: []string{api.RoleIngest, api.RoleAuditor, api.RoleAdmin}})
	if err != nil {
		return res, err
	}
	var (
		pgStore *pg.Store // the first node's, for the database's figures
		ledgers []*ledger.Ledger
		servers []*http.Server
		urls    []string
	)
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, s := range servers {
			s.Shutdown(sctx)
		}
		for _, l := range ledgers {
			if cerr := l.Close(); cerr != nil && err == nil {
				err = cerr
			}
		}
	}()
	for i := range c.Nodes {
		var (
			st store.Store
			ks seal.KeyStore
		)
		if c.PG != "" {
			ps, err := pg.Open(ctx, c.PG, opts)
			if err != nil {
				return res, err
			}
			st, ks = ps, ps.Keys()
			if pgStore == nil {
				pgStore = ps
			}
		} else {
			if st, err = local.Open(filepath.Join(dir, "data"), local.Options{Logger: quiet}); err != nil {
				return res, err
			}
			if ks, err = seal.NewFileKeyStore(filepath.Join(dir, "data", "keys", "periods")); err != nil {
				st.Close()
				return res, err
			}
		}
		l, err := ledger.Open(ctx, cfg, st, seal.NewKeyring(ks, kek), sk)
		if err != nil {
			st.Close()
			return res, err
		}
		ledgers = append(ledgers, l)
		if i == 0 {
			for s := range c.Systems {
				def := strings.Replace(definition, `"id":"`+System+`"`, `"id":"`+SystemName(s)+`"`, 1)
				if _, _, err := l.Register(ctx, []byte(def), "bench-admin"); err != nil {
					return res, fmt.Errorf("register %s: %w", SystemName(s), err)
				}
			}
		}
		srv := &http.Server{
			Handler:           api.New(api.Config{Logger: quiet}, l, tokens, nil),
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(quiet.Handler(), slog.LevelWarn),
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return res, err
		}
		go srv.Serve(ln)
		servers = append(servers, srv)
		urls = append(urls, "http://"+ln.Addr().String())
	}
	load := c.Load
	load.URL, load.URLs, load.Token, load.Affinity = urls[0], urls, tok, c.Affinity
	for s := range c.Systems {
		load.Systems = append(load.Systems, SystemName(s))
	}
	cpu := startCPU()
	db := startDBCPU()
	var wal0 int64
	if pgStore != nil {
		wal0, _ = pgStore.WALPosition(ctx)
	}
	if c.Spawn != nil {
		res.Load, err = c.Spawn(ctx, load)
	} else {
		res.Load, err = RunLoad(ctx, load)
	}
	if err != nil {
		return res, err
	}
	// CPU over the whole load including warm-up, divided by every event appended in that time.
	var total int64
	for _, l := range ledgers[:1] {
		for s := range c.Systems {
			lg, err := l.Log(SystemName(s))
			if err != nil {
				return res, err
			}
			total += int64(lg.Store().Size()) - 1 // less the registration
		}
	}
	res.ServerCPU = cpu.per(total)
	for _, l := range ledgers {
		for s := range c.Systems {
			if lg, err := l.Log(SystemName(s)); err == nil {
				res.LostRaces += lg.LostRaces()
			}
		}
	}
	if pgStore != nil && total > 0 {
		res.DatabaseCPU = db.per(total)
		if wal1, err := pgStore.WALPosition(ctx); err == nil {
			res.WALBytes = float64(wal1-wal0) / float64(total)
		}
		if n, err := pgStore.DiskUsage(ctx); err == nil {
			res.DatabaseBytes = float64(n) / float64(total)
		}
	}
	return res, nil
}

// dbCPU samples the CPU time of every PostgreSQL process on the machine (from /proc).
type dbCPU map[int]time.Duration

func startDBCPU() dbCPU { return pgProcesses() }

// per is the CPU the PostgreSQL processes used since the sample, per event. A process that started in between
// (a backend of a connection the nodes' pools opened) counts for all it used; one that ended in between is
// missed.
func (d dbCPU) per(events int64) *CPU {
	now := pgProcesses()
	var used time.Duration
	for pid, t := range now {
		if t0, ok := d[pid]; !ok {
			used += t
		} else if t >= t0 {
			used += t - t0
		}
	}
	c := cpuPer(used, 0, events)
	return &c
}

// pgProcesses returns the user+system CPU time of each process named postgres.
func pgProcesses() dbCPU {
	out := dbCPU{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid … utime stime: fields 14 and 15, counted after the closing parenthesis.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 || !strings.HasPrefix(s[strings.IndexByte(s, '(')+1:], "postgres") {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		out[pid] = time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
	}
	return out
}
