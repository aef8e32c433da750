package event_test

import (
	"testing"
	"time"

	"github.com/cairn-ai/cairn/internal/bench"
	"github.com/cairn-ai/cairn/internal/event"
)

// BenchmarkParse validates one ~1 KiB inference event (bench.AppendEvent: client id, model, attrs, a payload
// with subject, input features and output), as the ingest handler does for each event of a request.
func BenchmarkParse(b *testing.B) {
	now := time.Now()
	raw := bench.AppendEvent(nil, 1, now, true)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	cpu0 := bench.CPUTime()
	for b.Loop() {
		if _, err := event.Parse(0, raw, now, event.DefaultLimits, false); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(bench.CPUTime()-cpu0)/float64(b.N), "cpu-ns/op")
}

// BenchmarkSplit splits a request body of 1,000 such events (a JSON array) into events, without parsing them;
// one op is one body.
func BenchmarkSplit(b *testing.B) {
	body, _ := bench.AppendBatch(nil, 1000, 1, time.Now(), true)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		n := 0
		if err := event.Split(body, event.DefaultLimits, func(int, []byte) error { n++; return nil }); err != nil {
			b.Fatal(err)
		}
		if n != 1000 {
			b.Fatalf("split %d events", n)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "ns/event")
}
