package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/cairn-ai/cairn/internal/bench"
)

const benchProxyUsage = `Usage: cairn bench proxy [flags]

Measures the capture proxy (docs/capture.md) against an upstream on loopback: the latency it adds at a fixed
request rate under each failure policy (against the same upstream called directly), the overhead measured inside
the proxy (its time minus the upstream's), closed-loop throughput and memory. Events are recorded in a temporary
in-process ledger with fsync on, and every one is counted. See docs/benchmarks.md.

Flags:
`

func benchProxy(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, benchProxyUsage); fs.PrintDefaults() }
	var o bench.ProxyOptions
	fs.IntVar(&o.Rate, "rate", 1000, "open-loop requests per second")
	fs.DurationVar(&o.Duration, "duration", 0, "measured window per run (default 10s)")
	fs.DurationVar(&o.Warmup, "warmup", 0, "unmeasured load before each window (default 2s)")
	fs.IntVar(&o.Clients, "clients", 64, "concurrent clients of the closed-loop throughput run")
	fs.StringVar(&o.Upstream, "upstream", "", "a model server's base URL (default: a loopback HTTP server in this process answering OIP)")
	fs.StringVar(&o.Path, "path", "", "inference path (default /v2/models/iris/infer)")
	fs.StringVar(&o.Body, "body", "", "request body (default: a 1x4 FP64 OIP request)")
	fs.StringVar(&o.Dir, "dir", "", "directory for the temporary installations")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o.Progress = stderr
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	rep, err := bench.RunProxy(ctx, o)
	if err != nil {
		return err
	}
	if *asJSON {
		b, _ := json.MarshalIndent(rep, "", "  ")
		fmt.Fprintln(stdout, string(b))
		return nil
	}
	fmt.Fprintf(stdout, "upstream %s, %d req/s open loop, %d CPUs\n", rep.Upstream, rep.Rate, rep.CPUs)
	fmt.Fprintf(stdout, "%-12s %9s %9s %9s %9s %12s %12s %10s %9s %9s\n", "", "p50 ms", "p99 ms", "+p50 ms", "+p99 ms", "in-proxy p50", "in-proxy p99", "req/s", "recorded", "heap MiB")
	fmt.Fprintf(stdout, "%-12s %9.3f %9.3f\n", "direct", rep.Direct.P50, rep.Direct.P99)
	for _, m := range rep.Modes {
		fmt.Fprintf(stdout, "%-12s %9.3f %9.3f %9.3f %9.3f %12.3f %12.3f %10.0f %9d %9.1f\n", m.Policy, m.Proxied.P50, m.Proxied.P99,
			m.AddedP50, m.AddedP99, m.Overhead.P50, m.Overhead.P99, m.Throughput, m.Recorded, m.HeapMiB)
		if m.Errors > 0 || m.Recorded < m.Sent {
			fmt.Fprintf(stdout, "  %s: %d errors, %d events taken, %d recorded\n", m.Policy, m.Errors, m.Sent, m.Recorded)
		}
	}
	fmt.Fprintf(stdout, "peak RSS of the whole process (load generator, upstream, proxy, ledger): %.0f MiB\n", rep.PeakRSS)
	return nil
}
