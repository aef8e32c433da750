package ledger_test

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-ai/cairn/internal/bench"
	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/vault"
)

func benchEnv(b *testing.B, o bench.EnvOptions) *bench.Env {
	b.Helper()
	env, err := bench.NewEnv(context.Background(), b.TempDir(), o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { env.Close() })
	return env
}

func benchPrepare(b *testing.B, lg *ledger.Log, buf []byte, seq uint64, now time.Time) *ledger.Prepared {
	buf = bench.AppendEvent(buf[:0], seq, now, true)
	ev, err := event.Parse(0, buf, now, event.DefaultLimits, false)
	if err != nil {
		b.Fatal(err)
	}
	p, err := lg.Prepare(ev, "bench-ingest")
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkPrepare seals the payload and encodes the envelope of one parsed 1 KiB inference event (with a
// client id, so the idempotency digest is computed too): the per-event work done in parallel before sequencing.
func BenchmarkPrepare(b *testing.B) {
	env := benchEnv(b, bench.EnvOptions{NoSync: true})
	now := time.Now()
	ev, err := event.Parse(0, bench.AppendEvent(nil, 1, now, true), now, event.DefaultLimits, false)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	cpu0 := bench.CPUTime()
	for b.Loop() {
		if _, err := env.Log.Prepare(ev, "bench-ingest"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(bench.CPUTime()-cpu0)/float64(b.N), "cpu-ns/op")
}

// BenchmarkAppend is the in-process ingest path, event.Parse → Log.Prepare → Log.Append, from 64 concurrent
// writers (SetParallelism(32) on 2 CPUs), each waiting for its acknowledgement. One op is one Append call of
// perCall events. "fsync" uses the real embedded store; "nosync" skips fsync to show the CPU path alone.
// Extra metrics: events/s and CPU µs per event (user+sys of the whole process, from getrusage).
func BenchmarkAppend(b *testing.B) {
	for _, tc := range []struct {
		name    string
		noSync  bool
		perCall int
	}{
		{"fsync/1", false, 1}, {"fsync/100", false, 100}, {"nosync/1", true, 1}, {"nosync/100", true, 100},
	} {
		b.Run(tc.name, func(b *testing.B) {
			env := benchEnv(b, bench.EnvOptions{NoSync: tc.noSync})
			lg := env.Log
			b.SetParallelism(32)
			b.SetBytes(int64(tc.perCall * bench.EventSize))
			b.ReportAllocs()
			cpu0 := bench.CPUTime()
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, 0, 2*bench.EventSize)
				items := make([]*ledger.Prepared, tc.perCall)
				var seq uint64
				for pb.Next() {
					now := time.Now()
					for j := range items {
						seq++
						items[j] = benchPrepare(b, lg, buf, seq, now)
					}
					if _, err := lg.Append(context.Background(), items); err != nil {
						b.Error(err)
						return
					}
				}
			})
			events := float64(b.N * tc.perCall)
			b.ReportMetric(events/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(bench.CPUTime()-cpu0)/1e3/events, "cpu-µs/event")
		})
	}
}

// BenchmarkCommit isolates the sequencer, the serial part of ingest: events are prepared outside the timer and
// appended in calls of 1,000 from one goroutine, without fsync. ns/event is the wall time of the sequencer
// per event and cpu-ns/event the process's CPU time over those calls (the sequencer plus the runtime: GC,
// the store's flusher); it bounds throughput at about 1e9/ns-per-event events/s whatever the core count.
func BenchmarkCommit(b *testing.B) {
	env := benchEnv(b, bench.EnvOptions{NoSync: true})
	lg := env.Log
	const perCall = 1000
	buf := make([]byte, 0, 2*bench.EventSize)
	items := make([]*ledger.Prepared, perCall)
	b.ReportAllocs()
	seq := uint64(0)
	var cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		now := time.Now()
		for j := range items {
			seq++
			items[j] = benchPrepare(b, lg, buf, seq, now)
		}
		b.StartTimer()
		cpu0 := bench.CPUTime()
		if _, err := lg.Append(context.Background(), items); err != nil {
			b.Fatal(err)
		}
		cpu += bench.CPUTime() - cpu0
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perCall), "ns/event")
	b.ReportMetric(float64(cpu)/float64(b.N*perCall), "cpu-ns/event")
}

// BenchmarkProof times inclusion and consistency proofs against a published tree of 2^17 leaves (cairn bench
// measures them at 2^20 and more).
func BenchmarkProof(b *testing.B) {
	env := benchEnv(b, bench.EnvOptions{NoSync: true, CheckpointInterval: time.Millisecond})
	const leaves = 1 << 17
	if err := bench.Grow(context.Background(), env.Log, leaves, 2, 2000); err != nil {
		b.Fatal(err)
	}
	var n uint64
	for n < leaves {
		time.Sleep(time.Millisecond)
		_, n = env.Log.Checkpoint()
	}
	b.Run("inclusion", func(b *testing.B) {
		b.ReportAllocs()
		i := uint64(0)
		for b.Loop() {
			i = (i + 7919) % n
			if _, err := env.Log.InclusionProof(i, n); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("consistency", func(b *testing.B) {
		b.ReportAllocs()
		i := uint64(0)
		for b.Loop() {
			i = (i + 7919) % n
			if _, err := env.Log.ConsistencyProof(i+1, n); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkAppendPolicy is BenchmarkAppend's fsync/100 case (64 writers, 100 events per call) under a field
// policy: none, pseudonymising the subject, or vaulting it in a real token vault (SQLite, synchronous=FULL: one
// transaction per call, every subject new, so every event writes a vault entry).
func BenchmarkAppendPolicy(b *testing.B) {
	for _, tc := range []struct{ name, policy string }{
		{"none", ""},
		{"pseudonym", `{"domain":"customers","fields":{"subject":{"action":"pseudonym"},"input.income":{"action":"generalize","bands":[0,20000,50000,100000]}}}`},
		{"vault", `{"domain":"customers","fields":{"subject":{"action":"vault"},"input.income":{"action":"generalize","bands":[0,20000,50000,100000]}}}`},
	} {
		b.Run(tc.name, func(b *testing.B) {
			o := bench.EnvOptions{FieldPolicy: tc.policy}
			if tc.name == "vault" {
				v, err := vault.Open(filepath.Join(b.TempDir(), "vault.db"), make([]byte, vault.KeySize))
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { v.Close() })
				o.Vault = v
			}
			lg := benchEnv(b, o).Log
			const perCall = 100
			b.SetParallelism(32)
			b.SetBytes(int64(perCall * bench.EventSize))
			cpu0 := bench.CPUTime()
			var seqs atomic.Uint64
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, 0, 2*bench.EventSize)
				items := make([]*ledger.Prepared, perCall)
				for pb.Next() {
					now := time.Now()
					for j := range items {
						items[j] = benchPrepare(b, lg, buf, seqs.Add(1), now)
					}
					if _, err := lg.Append(context.Background(), items); err != nil {
						b.Error(err)
						return
					}
				}
			})
			events := float64(b.N * perCall)
			b.ReportMetric(events/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(bench.CPUTime()-cpu0)/1e3/events, "cpu-µs/event")
		})
	}
}
