package pg_test

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/store"
	"github.com/cairn-ai/cairn/internal/store/pg"
)

// benchBatch returns a batch of n entries of about 1.3 KiB each (a 900-byte envelope, a 400-byte sealed payload,
// the leaf fields), with zero stored hashes: the store does not interpret them.
func benchBatch(start uint64, n int) *store.Batch {
	b := &store.Batch{Start: start, Entries: make([]store.Entry, n)}
	now := time.Now()
	for i := range b.Entries {
		e := &b.Entries[i]
		e.Index = start + uint64(i)
		e.ID = event.NewV7(now)
		e.Recorded = now.UnixNano()
		e.Type = "inference"
		e.Envelope = make([]byte, 900)
		for j := range e.Envelope {
			e.Envelope[j] = 'a' + byte((i+j)%26)
		}
		e.Sealed = make([]byte, 400)
		rand.Read(e.Sealed) // ciphertext: incompressible
		rand.Read(e.Salt[:])
		rand.Read(e.ContentKey[:])
		e.Digest = event.Digest(e.Salt[:], e.Envelope)
	}
	return b
}

// BenchmarkAppend appends 1,000-entry batches of ~1.3 KiB entries to one log, one transaction per batch, with
// synchronous_commit on (the durable path). It reports entries/s.
func BenchmarkAppend(b *testing.B) {
	ctx := context.Background()
	s, _, _ := openStore(b, pg.Options{})
	lg, err := s.Create(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	const n = 1000
	batches := make([]*store.Batch, 8)
	for i := range batches {
		batches[i] = benchBatch(0, n)
	}
	b.SetBytes(n * 1300)
	b.ResetTimer()
	var start uint64
	for i := 0; b.Loop(); i++ {
		bt := batches[i%len(batches)]
		bt.Start = start
		for j := range bt.Entries {
			bt.Entries[j].Index = start + uint64(j)
			bt.Entries[j].ID = event.NewV7(time.Now())
		}
		k := tlog.StoredHashCount(int64(start)+n) - tlog.StoredHashCount(int64(start))
		bt.Hashes = append(bt.Hashes[:0], make([]tlog.Hash, k)...)
		if err := lg.Append(ctx, bt); err != nil {
			b.Fatal(err)
		}
		start += n
	}
	b.ReportMetric(float64(start)/b.Elapsed().Seconds(), "entries/s")
}

// benchLog returns a log of 100,000 entries appended in 1,000-entry batches.
func benchLog(b *testing.B) store.Log {
	ctx := context.Background()
	s, _, _ := openStore(b, pg.Options{})
	lg, err := s.Create(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	for i := range benchLogSize / 1000 {
		bt := benchBatch(uint64(i*1000), 1000)
		k := tlog.StoredHashCount(int64(i*1000+1000)) - tlog.StoredHashCount(int64(i*1000))
		bt.Hashes = make([]tlog.Hash, k)
		if err := lg.Append(ctx, bt); err != nil {
			b.Fatal(err)
		}
	}
	return lg
}

const benchLogSize = 100_000

// BenchmarkReadHashes reads one stored hash at a time from a log of 100,000 entries.
func BenchmarkReadHashes(b *testing.B) {
	lg := benchLog(b)
	total := tlog.StoredHashCount(benchLogSize)
	idx := []int64{0}
	for i := 0; b.Loop(); i++ {
		idx[0] = int64(i*7919) % total
		if _, err := lg.ReadHashes(idx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTreeHash computes the root of the tree at a size of up to 100,000 entries: one ReadHashes call of
// up to 17 indexes, the reads of a checkpoint or a consistency proof.
func BenchmarkTreeHash(b *testing.B) {
	lg := benchLog(b)
	for i := 0; b.Loop(); i++ {
		if _, err := tlog.TreeHash(int64(1+(i*7919)%benchLogSize), lg); err != nil {
			b.Fatal(err)
		}
	}
}
