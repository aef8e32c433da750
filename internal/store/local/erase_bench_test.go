package local_test

import (
	"context"
	"testing"
	"time"

	"github.com/cairn-ai/cairn/internal/store/local"
	"github.com/cairn-ai/cairn/internal/store/storetest"
)

// BenchmarkErase measures retention's erase on the embedded store: a month of one class is erased in one call,
// here 20,000 entries interleaved with as many of another class (every other entry), in batches of 1,000.
func BenchmarkErase(b *testing.B) {
	ctx := context.Background()
	const n = 40000
	for b.Loop() {
		b.StopTimer()
		st, err := local.Open(b.TempDir(), local.Options{FlushInterval: time.Hour, Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		lg, _ := st.Create(ctx, "x")
		for k := 0; k < n; k += 1000 {
			if err := storetest.Append(ctx, lg, storetest.Entries(uint64(k), 1000, "inference")); err != nil {
				b.Fatal(err)
			}
		}
		idx := make([]uint64, 0, n/2)
		for i := uint64(0); i < n; i += 2 {
			idx = append(idx, i)
		}
		b.StartTimer()
		if err := lg.Erase(ctx, idx); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		st.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(n/2)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}
