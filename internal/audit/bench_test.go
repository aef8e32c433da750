package audit_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cairn-ai/cairn/internal/registry"
)

// BenchmarkRegistryRebuild measures how fast the lineage registry rebuilds from index 0 over a log of 200,000
// inferences (what every server start costs); ns/op is per event.
func BenchmarkRegistryRebuild(b *testing.B) {
	t := &testing.T{}
	w := newWorld(t, time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC))
	w.t = t
	w.add("alice", `{"type":"model.version","model":{"name":"credit","version":"1"},"attrs":{"digest_unknown":"bench"}}`)
	const n, batch = 200000, 5000
	raws := make([]string, batch)
	for i := range raws {
		raws[i] = fmt.Sprintf(`{"type":"inference","model":{"name":"credit","version":"1"},"deployment":"prod","attrs":{"confidence":0.7},"payload":{"subject":"a-%d","output":{"score":%d}}}`, i, i)
	}
	for range n / batch {
		w.add("svc", raws...)
	}
	lg := w.lg.Store()
	size := lg.Size()
	b.ResetTimer()
	for b.Loop() {
		reg := registry.New(nil)
		if err := reg.CatchUp(context.Background(), "credit", lg); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(size), "ns/event")
}
