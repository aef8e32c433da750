package api_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/cairn-ai/cairn/internal/bench"
)

// BenchmarkIngestHTTP posts 1 KiB inference events to a real HTTP server (net/http over loopback TCP) serving
// the API over a ledger with the embedded store, fsync on. One op is one request: "batch1000" sends 1,000
// events per request from 4 concurrent clients, "single" one event per request from 64. The clients run in
// this process on the same cores, so cpu-µs/event counts client and server together.
func BenchmarkIngestHTTP(b *testing.B) {
	for _, tc := range []struct {
		name        string
		parallelism int // goroutines per CPU (2 CPUs)
		batch       int
	}{
		{"batch1000", 2, 1000}, {"single", 32, 1},
	} {
		b.Run(tc.name, func(b *testing.B) {
			env, err := bench.NewEnv(context.Background(), b.TempDir(), bench.EnvOptions{})
			if err != nil {
				b.Fatal(err)
			}
			defer env.Close()
			srv, err := bench.StartServer(context.Background(), env, false)
			if err != nil {
				b.Fatal(err)
			}
			defer srv.Close()
			tr := &http.Transport{MaxIdleConnsPerHost: 128}
			defer tr.CloseIdleConnections()
			hc := &http.Client{Transport: tr}
			url := srv.URL + "/v1/systems/" + bench.System + "/events"
			b.SetParallelism(tc.parallelism)
			b.SetBytes(int64(tc.batch * bench.EventSize))
			b.ReportAllocs()
			cpu0 := bench.CPUTime()
			b.RunParallel(func(pb *testing.PB) {
				var body []byte
				var seq uint64
				for pb.Next() {
					now := time.Now()
					if tc.batch == 1 {
						body = bench.AppendEvent(body[:0], seq, now, true)
					} else {
						body, _ = bench.AppendBatch(body[:0], tc.batch, seq, now, true)
					}
					seq += uint64(tc.batch)
					req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
					req.Header.Set("Authorization", "Bearer "+srv.Token)
					req.Header.Set("Content-Type", "application/json")
					resp, err := hc.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					rb, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						b.Errorf("ingest: %s: %.200s", resp.Status, rb)
						return
					}
				}
			})
			events := float64(b.N * tc.batch)
			cpu := bench.CPUTime() - cpu0
			b.ReportMetric(events/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(cpu)/1e3/events, "cpu-µs/event")
		})
	}
}
