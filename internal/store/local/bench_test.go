package local_test

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/store"
	"github.com/cairn-ai/cairn/internal/store/local"
)

// benchBatch returns a batch of n entries with ~300-byte envelopes and ~200-byte sealed payloads.
func benchBatch(start uint64, n int) *store.Batch {
	b := &store.Batch{Start: start, Entries: make([]store.Entry, n)}
	env := make([]byte, 300)
	sealed := make([]byte, 200)
	rand.Read(sealed)
	for i := range env {
		env[i] = 'a' + byte(i%26)
	}
	now := time.Now()
	for i := range b.Entries {
		e := &b.Entries[i]
		e.Index = start + uint64(i)
		e.ID = event.NewV7(now)
		e.Recorded = now.UnixNano()
		e.Type = "inference"
		rand.Read(e.Digest[:])
		e.Envelope, e.Sealed = env, sealed
	}
	k := tlog.StoredHashCount(int64(start)+int64(n)) - tlog.StoredHashCount(int64(start))
	b.Hashes = make([]tlog.Hash, k)
	return b
}

func benchAppend(b *testing.B, opts local.Options) {
	ctx := context.Background()
	opts.FlushInterval = time.Hour
	st, err := local.Open(b.TempDir(), opts)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	lg, err := st.Create(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	const n = 256
	batches := make([]*store.Batch, 64)
	for i := range batches {
		batches[i] = benchBatch(0, n)
	}
	b.SetBytes(int64(n * 600))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		bt := batches[i%len(batches)]
		bt.Start = lg.Size()
		bt.Hashes = bt.Hashes[:0]
		k := tlog.StoredHashCount(int64(bt.Start)+n) - tlog.StoredHashCount(int64(bt.Start))
		bt.Hashes = append(bt.Hashes, make([]tlog.Hash, k)...)
		if err := lg.Append(ctx, bt); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppend256 appends 256-entry batches with fsync (the durable path).
func BenchmarkAppend256(b *testing.B) { benchAppend(b, local.Options{}) }

// BenchmarkAppend256NoSync is the CPU and page-cache cost of the same appends without fsync.
func BenchmarkAppend256NoSync(b *testing.B) { benchAppend(b, local.Options{NoSync: true}) }

// BenchmarkReadHashes reads one stored hash at a time, as proofs do.
func BenchmarkReadHashes(b *testing.B) {
	ctx := context.Background()
	st, err := local.Open(b.TempDir(), local.Options{NoSync: true, FlushInterval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	lg, _ := st.Create(ctx, "bench")
	if err := lg.Append(ctx, benchBatch(0, 4096)); err != nil {
		b.Fatal(err)
	}
	n := tlog.StoredHashCount(4096)
	idx := []int64{0}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		idx[0] = int64(i) % n
		if _, err := lg.ReadHashes(idx); err != nil {
			b.Fatal(err)
		}
	}
}
