package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"

	"github.com/cairn-ai/cairn/internal/bench"
)

const benchUsage = `Usage: cairn bench [flags]

Measures durable ingest (in-process and over HTTP), CPU per event, checkpoint and proof latency, bytes on disk
and the query index's lag, on ~1 KiB inference events with sealing and fsync on, each run in a fresh
temporary installation. Figures are the median of --runs runs. See docs/benchmarks.md.

Flags:
`

func cmdBench(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "loadgen" {
		return benchLoadgen(os.Stdin, stdout)
	}
	if len(args) > 0 && args[0] == "proxy" {
		return benchProxy(args[1:], stdout, stderr)
	}
	d := bench.Defaults
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, benchUsage); fs.PrintDefaults() }
	scenarios := fs.String("scenarios", "append,batched,http,single,proofs", "scenarios to run: append (1 event per call, per --writers), batched, http (batched requests), single (1 event per request), proofs, scale (scale-out: --store, --nodes, --systems)")
	runs := fs.Int("runs", d.Runs, "runs of each throughput scenario (the median is reported)")
	warmup := fs.Duration("warmup", d.Warmup, "warm-up before each measured window")
	duration := fs.Duration("duration", d.Duration, "measured window of each run")
	writers := fs.String("writers", ints(d.Writers), "in-process concurrent writers, one event per call (comma-separated)")
	batched := fs.String("batched", fmt.Sprintf("%dx%d", d.BatchWriters, d.BatchEvents), "in-process batched appends: WRITERSxEVENTS per call")
	httpLoad := fs.String("http", fmt.Sprintf("%dx%d", d.HTTPClients, d.HTTPBatch), "batched HTTP ingest: CLIENTSxEVENTS per request")
	single := fs.Int("single-clients", d.SingleClients, "concurrent clients sending one event per request")
	leaves := fs.Uint64("proof-leaves", d.ProofLeaves, "leaves to grow the proof benchmark's log to")
	queries := fs.Int("proof-queries", d.ProofQueries, "in-process inclusion and consistency proofs to time (each)")
	httpQueries := fs.Int("http-proof-queries", d.HTTPProofQueries, "proofs to time over HTTP (each; 0 skips)")
	scalePG := fs.String("store", "", "scale: also run on PostgreSQL at this URL (postgres://…; each run in a throw-away schema)")
	scaleNodes := fs.String("nodes", ints(d.ScaleNodes), "scale: node counts (more than 1 with --store only)")
	scaleSystems := fs.String("systems", ints(d.ScaleSystems), "scale: system counts (logs the load is spread over)")
	scaleLoad := fs.String("scale-http", fmt.Sprintf("%dx%d", d.ScaleClients, d.ScaleBatch), "scale: CLIENTSxEVENTS per request (clients rounded up to a multiple of nodes × systems)")
	scaleConns := fs.Int("pg-conns", 0, "scale: each node's PostgreSQL connection pool size (default: the store's, as cairn serve)")
	noIDs := fs.Bool("no-ids", false, "let the server choose event ids (by default clients send UUIDv7 ids, which are idempotency keys)")
	sameProcess := fs.Bool("same-process", false, "run the HTTP load generator inside the server's process (its CPU then counts as the server's)")
	dir := fs.String("dir", "", "directory for the temporary installations (default: the system's temp dir)")
	keep := fs.Bool("keep", false, "keep the installations")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	quiet := fs.Bool("q", false, "no progress lines on stderr")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return errUsage
	}
	o := d
	o.Runs, o.Warmup, o.Duration, o.Dir, o.Keep, o.NoIDs = *runs, *warmup, *duration, *dir, *keep, *noIDs
	o.SingleClients, o.ProofLeaves, o.ProofQueries, o.HTTPProofQueries = *single, *leaves, *queries, *httpQueries
	var err error
	if o.Scenarios, err = names(*scenarios); err != nil {
		return err
	}
	if o.Writers, err = parseInts(*writers); err != nil {
		return fmt.Errorf("--writers: %w", err)
	}
	if o.BatchWriters, o.BatchEvents, err = parsePair(*batched); err != nil {
		return fmt.Errorf("--batched: %w", err)
	}
	if o.HTTPClients, o.HTTPBatch, err = parsePair(*httpLoad); err != nil {
		return fmt.Errorf("--http: %w", err)
	}
	o.ScalePG, o.ScaleConns = *scalePG, int32(*scaleConns)
	if o.ScaleNodes, err = parseInts(*scaleNodes); err != nil {
		return fmt.Errorf("--nodes: %w", err)
	}
	if o.ScaleSystems, err = parseInts(*scaleSystems); err != nil {
		return fmt.Errorf("--systems: %w", err)
	}
	if o.ScaleClients, o.ScaleBatch, err = parsePair(*scaleLoad); err != nil {
		return fmt.Errorf("--scale-http: %w", err)
	}
	if o.ProofLeaves < 2 {
		return errors.New("--proof-leaves: want at least 2")
	}
	if !*quiet {
		o.Progress = stderr
	}
	if !*sameProcess {
		o.Spawn = spawnLoadgen
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := bench.Run(ctx, o)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	bench.WriteTable(stdout, r)
	return nil
}

// spawnLoadgen runs the HTTP load generator as `cairn bench loadgen` in a child process, so the parent's CPU
// time is the server's alone; the child reports its own CPU per event.
func spawnLoadgen(ctx context.Context, cfg bench.LoadConfig) (bench.LoadResult, error) {
	exe, err := os.Executable()
	if err != nil {
		return bench.LoadResult{}, err
	}
	in, _ := json.Marshal(cfg)
	cmd := exec.CommandContext(ctx, exe, "bench", "loadgen")
	cmd.Stdin = bytes.NewReader(in)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return bench.LoadResult{}, fmt.Errorf("load generator: %v: %s", err, strings.TrimSpace(errb.String()))
	}
	var res bench.LoadResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		return res, fmt.Errorf("load generator: %w", err)
	}
	return res, nil
}

// benchLoadgen is the child side of spawnLoadgen: a LoadConfig as JSON on stdin, a LoadResult as JSON on stdout.
func benchLoadgen(stdin io.Reader, stdout io.Writer) error {
	var cfg bench.LoadConfig
	if err := json.NewDecoder(stdin).Decode(&cfg); err != nil {
		return fmt.Errorf("loadgen: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := bench.RunLoad(ctx, cfg)
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(res)
}

func names(s string) ([]string, error) {
	valid := map[string]bool{"append": true, "batched": true, "http": true, "single": true, "proofs": true, "scale": true}
	var out []string
	for _, n := range strings.Split(s, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if !valid[n] {
			return nil, fmt.Errorf("--scenarios: unknown scenario %q (want append, batched, http, single, proofs, scale)", n)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("--scenarios: none chosen")
	}
	return out, nil
}

func ints(xs []int) string {
	var s []string
	for _, x := range xs {
		s = append(s, strconv.Itoa(x))
	}
	return strings.Join(s, ",")
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func parsePair(s string) (int, int, error) {
	a, b, ok := strings.Cut(s, "x")
	if !ok {
		return 0, 0, fmt.Errorf("%q: want AxB, e.g. 64x100", s)
	}
	x, err1 := strconv.Atoi(a)
	y, err2 := strconv.Atoi(b)
	if err1 != nil || err2 != nil || x < 1 || y < 1 {
		return 0, 0, fmt.Errorf("%q: want AxB with positive numbers", s)
	}
	return x, y, nil
}
