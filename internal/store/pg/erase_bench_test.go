package pg_test

import (
	"context"
	"testing"

	"github.com/cairn-ai/cairn/internal/store/pg"
	"github.com/cairn-ai/cairn/internal/store/storetest"
)

// BenchmarkErase measures retention's erase on PostgreSQL: 20,000 entries of 40,000 (every other one, as one
// class of a month interleaved with another) erased in one call.
func BenchmarkErase(b *testing.B) {
	ctx := context.Background()
	const n = 40000
	s, _, _ := openStore(b, pg.Options{})
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		lg, err := s.Create(ctx, "x"+string(rune('a'+i%26))+string(rune('a'+i/26%26)))
		if err != nil {
			b.Fatal(err)
		}
		for k := 0; k < n; k += 1000 {
			if err := storetest.Append(ctx, lg, storetest.Entries(uint64(k), 1000, "inference")); err != nil {
				b.Fatal(err)
			}
		}
		idx := make([]uint64, 0, n/2)
		for j := uint64(0); j < n; j += 2 {
			idx = append(idx, j)
		}
		b.StartTimer()
		if err := lg.Erase(ctx, idx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n/2)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}
