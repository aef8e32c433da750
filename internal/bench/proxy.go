package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairn-ai/cairn/internal/proxy"
)

// ProxyOptions configure the capture proxy benchmark.
type ProxyOptions struct {
	Rate     int           // open-loop requests per second (default 1000)
	Duration time.Duration // measured window per run (default 10 s)
	Warmup   time.Duration // unmeasured load before it (default 2 s)
	Clients  int           // concurrent clients of the closed-loop throughput run (default 64)
	Upstream string        // a model server's base URL; default: a loopback HTTP server in this process
	Path     string        // inference path (default /v2/models/iris/infer)
	Body     string        // request body (default: a 1×4 FP64 OIP request)
	Policies []string      // default: spool, fail-closed
	Dir      string        // for the temporary installations (default: the system's temp dir)
	Progress io.Writer
}

// ProxyMode is the result of one failure policy.
type ProxyMode struct {
	Policy string `json:"policy"`
	// Proxied is the client-observed latency through the proxy at the open-loop rate.
	Proxied Latency `json:"proxied"`
	// AddedP50 and AddedP99 are Proxied's percentiles minus Direct's: what the proxy adds, including the extra
	// loopback hop.
	AddedP50 float64 `json:"added_p50_ms"`
	AddedP99 float64 `json:"added_p99_ms"`
	// Overhead is measured inside the proxy: its handler's time minus the upstream round trip.
	Overhead Latency `json:"in_proxy_overhead"`
	// Throughput is closed-loop requests per second through the proxy, every one recorded.
	Throughput float64 `json:"throughput_rps"`
	Recorded   int64   `json:"recorded"`
	Sent       int64   `json:"sent"`
	HeapMiB    float64 `json:"heap_inuse_mib"`
	Errors     int64   `json:"errors"`
}

// ProxyReport is the capture proxy benchmark's result.
type ProxyReport struct {
	Rate     int         `json:"rate_rps"`
	Upstream string      `json:"upstream"`
	Direct   Latency     `json:"direct"`
	Modes    []ProxyMode `json:"modes"`
	PeakRSS  float64     `json:"peak_rss_mib"`
	CPUs     int         `json:"cpus"`
}

const oipBenchBody = `{"id":"b","inputs":[{"name":"predict","shape":[1,4],"datatype":"FP64","data":[[5.1,3.5,1.4,0.2]]}]}`
const oipBenchResponse = `{"model_name":"iris","model_version":"v1","id":"b","parameters":{},"outputs":[{"name":"predict","shape":[1,1],"datatype":"INT64","parameters":{"content_type":"np"},"data":[0]}]}`

// RunProxy measures the capture proxy against an upstream on loopback: latency added at a fixed request rate
// under each failure policy (against the same upstream called directly), the overhead measured inside the
// proxy, closed-loop throughput and memory. Events go to an in-process ledger with fsync on.
func RunProxy(ctx context.Context, o ProxyOptions) (*ProxyReport, error) {
	if o.Rate == 0 {
		o.Rate = 1000
	}
	if o.Duration == 0 {
		o.Duration = 10 * time.Second
	}
	if o.Warmup == 0 {
		o.Warmup = 2 * time.Second
	}
	if o.Clients == 0 {
		o.Clients = 64
	}
	if o.Path == "" {
		o.Path = "/v2/models/iris/infer"
	}
	if o.Body == "" {
		o.Body = oipBenchBody
	}
	if len(o.Policies) == 0 {
		o.Policies = []string{proxy.SpoolPolicy, proxy.FailClosed}
	}
	progress := o.Progress
	if progress == nil {
		progress = io.Discard
	}
	upstream := o.Upstream
	if upstream == "" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", strconv.Itoa(len(oipBenchResponse)))
			io.WriteString(w, oipBenchResponse)
		})}
		go srv.Serve(ln)
		defer srv.Close()
		upstream = "http://" + ln.Addr().String()
	}
	rep := &ProxyReport{Rate: o.Rate, Upstream: upstream, CPUs: runtime.NumCPU()}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024, MaxIdleConns: 1024, DisableCompression: true}}
	fmt.Fprintf(progress, "direct: %d req/s for %s\n", o.Rate, o.Duration)
	direct, _, err := openLoop(ctx, client, upstream+o.Path, o)
	if err != nil {
		return nil, err
	}
	rep.Direct = Summarize(direct)
	for _, pol := range o.Policies {
		fmt.Fprintf(progress, "%s: %d req/s for %s, then %d clients closed-loop\n", pol, o.Rate, o.Duration, o.Clients)
		m, err := proxyMode(ctx, client, upstream, pol, o)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", pol, err)
		}
		m.AddedP50 = m.Proxied.P50 - rep.Direct.P50
		m.AddedP99 = m.Proxied.P99 - rep.Direct.P99
		rep.Modes = append(rep.Modes, *m)
	}
	rep.PeakRSS = peakRSS()
	return rep, nil
}

// spoolKey is a fresh key for a benchmark's spool.
func spoolKey() []byte {
	k := make([]byte, 32)
	rand.Read(k)
	return k
}

type overheadKey struct{}

// timedTransport records how long each upstream round trip took, body included, in the request's context slot.
type timedTransport struct{ http.RoundTripper }

type timedBody struct {
	io.ReadCloser
	start time.Time
	slot  *int64
	once  sync.Once
}

func (b *timedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.once.Do(func() { atomic.StoreInt64(b.slot, int64(time.Since(b.start))) })
	}
	return n, err
}

func (t timedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.RoundTripper.RoundTrip(r)
	slot, _ := r.Context().Value(overheadKey{}).(*int64)
	if err == nil && slot != nil {
		resp.Body = &timedBody{ReadCloser: resp.Body, start: start, slot: slot}
	}
	return resp, err
}

func proxyMode(ctx context.Context, client *http.Client, upstream, policy string, o ProxyOptions) (*ProxyMode, error) {
	dir, err := os.MkdirTemp(o.Dir, "cairn-bench-proxy-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	env, err := NewEnv(ctx, dir, EnvOptions{})
	if err != nil {
		return nil, err
	}
	defer env.Close()
	sp, err := proxy.OpenSpool(filepath.Join(dir, "spool"), spoolKey(), 0)
	if err != nil {
		return nil, err
	}
	defer sp.Close()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	rec := proxy.NewRecorder(&proxy.LedgerSink{Ledger: env.Ledger, System: System, Actor: "bench"}, sp, policy, quiet)
	up, _ := url.Parse(upstream)
	tr := timedTransport{&http.Transport{MaxIdleConnsPerHost: 1024, MaxIdleConns: 1024, DisableCompression: true}}
	px, err := proxy.New(proxy.Config{Upstream: up, Transport: tr, Logger: quiet}, rec)
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	var overheads []time.Duration
	measuring := atomic.Bool{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		slot := new(int64)
		start := time.Now()
		px.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), overheadKey{}, slot)))
		total := time.Since(start)
		if measuring.Load() {
			mu.Lock()
			overheads = append(overheads, total-time.Duration(atomic.LoadInt64(slot)))
			mu.Unlock()
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	defer srv.Close()
	target := "http://" + ln.Addr().String() + o.Path
	m := &ProxyMode{Policy: policy}
	measuring.Store(true)
	lat, errs, err := openLoop(ctx, client, target, o)
	measuring.Store(false)
	if err != nil {
		return nil, err
	}
	m.Proxied, m.Overhead, m.Errors = Summarize(lat), Summarize(overheads), errs
	// Closed loop: as fast as the clients go, for the same window.
	var sent, failed atomic.Int64
	cctx, cancel := context.WithTimeout(ctx, o.Duration)
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := 0; i < o.Clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for cctx.Err() == nil {
				if err := call(cctx, client, target, o.Body); err != nil {
					if cctx.Err() == nil {
						failed.Add(1)
					}
					continue
				}
				sent.Add(1)
			}
		}()
	}
	wg.Wait()
	cancel()
	m.Throughput = float64(sent.Load()) / time.Since(t0).Seconds()
	m.Errors += failed.Load()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.HeapMiB = float64(ms.HeapInuse) / (1 << 20)
	// Every call must be recorded: wait for the spool to drain, then count.
	for i := 0; i < 600 && sp.Backlog(); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	n, _ := env.Log.Tree()
	m.Recorded = int64(n) - 1
	m.Sent = rec.Stats.Recorded.Load() + rec.Stats.Spooled.Load()
	return m, nil
}

func call(ctx context.Context, client *http.Client, url, body string) error {
	req, _ := http.NewRequestWithContext(ctx, "POST", url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return err
}

// openLoop sends requests at a fixed rate (warm-up, then the measured window) and returns the measured latencies.
func openLoop(ctx context.Context, client *http.Client, url string, o ProxyOptions) ([]time.Duration, int64, error) {
	interval := time.Second / time.Duration(o.Rate)
	total := int((o.Warmup + o.Duration) / interval)
	warm := int(o.Warmup / interval)
	lat := make([]time.Duration, total)
	var errs atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	body := []byte(o.Body)
	for i := 0; i < total; i++ {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		if ctx.Err() != nil {
			return nil, 0, ctx.Err()
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			t := time.Now()
			req, _ := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
			}
			lat[i] = time.Since(t)
			if err != nil {
				errs.Add(1)
				lat[i] = -1
			}
		}(i)
	}
	wg.Wait()
	out := make([]time.Duration, 0, total-warm)
	for _, d := range lat[warm:] {
		if d >= 0 {
			out = append(out, d)
		}
	}
	return out, errs.Load(), nil
}

// peakRSS is the process's peak resident set size in MiB (Linux), 0 elsewhere.
func peakRSS() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				kb, _ := strconv.ParseFloat(f[0], 64)
				return kb / 1024
			}
		}
	}
	return 0
}
