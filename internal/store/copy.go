package store

import (
	"context"
	"fmt"

	"golang.org/x/mod/sumdb/tlog"
)

// Copy copies logs from one store to another: every entry with all its layers, the tree's stored hashes
// (recomputed from the leaves, so the destination's tree is checked against the source's as it is built) and
// every kept checkpoint, latest last. Leaves are copied byte for byte, so every checkpoint stays valid. A log
// that already exists in the destination is refused. progress, when set, is called after each batch.
func Copy(ctx context.Context, from, to Store, names []string, progress func(log string, done, total uint64)) error {
	for _, name := range names {
		src, err := from.Open(ctx, name)
		if err != nil {
			return fmt.Errorf("copy %s: %w", name, err)
		}
		dst, err := to.Create(ctx, name)
		if err != nil {
			return fmt.Errorf("copy %s: destination: %w", name, err)
		}
		n := src.Size()
		const chunk = 1000
		for start := uint64(0); start < n; start += chunk {
			end := min(start+chunk, n)
			b := &Batch{Start: start}
			if err := src.Entries(ctx, start, end, func(e *Entry) error {
				c := *e
				c.Envelope = append([]byte(nil), e.Envelope...)
				if e.Envelope == nil {
					c.Envelope = nil
				}
				c.Sealed = append([]byte(nil), e.Sealed...)
				if e.Sealed == nil {
					c.Sealed = nil
				}
				b.Entries = append(b.Entries, c)
				return nil
			}); err != nil {
				return fmt.Errorf("copy %s: read: %w", name, err)
			}
			if err := HashBatch(dst, b); err != nil {
				return fmt.Errorf("copy %s: %w", name, err)
			}
			if err := dst.Append(ctx, b); err != nil {
				return fmt.Errorf("copy %s: write: %w", name, err)
			}
			if progress != nil {
				progress(name, end, n)
			}
		}
		if n > 0 {
			want, err := tlog.TreeHash(int64(n), src)
			if err != nil {
				return err
			}
			got, err := tlog.TreeHash(int64(n), dst)
			if err != nil || got != want {
				return fmt.Errorf("copy %s: the copied tree differs from the source's", name)
			}
		}
		if err := src.Checkpoints(ctx, func(size uint64, note []byte) error {
			return dst.SetCheckpoint(ctx, size, note)
		}); err != nil {
			return fmt.Errorf("copy %s: checkpoint history: %w", name, err)
		}
		latest, err := src.Checkpoint(ctx)
		if err != nil {
			return err
		}
		if latest != nil {
			if err := dst.SetCheckpoint(ctx, checkpointSize(latest), latest); err != nil {
				return fmt.Errorf("copy %s: checkpoint: %w", name, err)
			}
		}
	}
	return nil
}

// checkpointSize reads a checkpoint note's tree size (its second line) without verifying it; the store keeps it
// as given, and verification happens elsewhere.
func checkpointSize(note []byte) uint64 {
	var n uint64
	line := 0
	for _, c := range note {
		if c == '\n' {
			line++
			if line == 2 {
				break
			}
			continue
		}
		if line == 1 {
			if c < '0' || c > '9' {
				return 0
			}
			n = n*10 + uint64(c-'0')
		}
	}
	return n
}

// HashBatch computes a batch's stored hashes (b.Hashes) over the log it will be appended to, whose earlier
// hashes it reads.
func HashBatch(lg Log, b *Batch) error {
	base := tlog.StoredHashCount(int64(b.Start))
	r := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			if x >= base {
				out[i] = b.Hashes[x-base]
				continue
			}
			h, err := lg.ReadHashes([]int64{x})
			if err != nil {
				return nil, err
			}
			out[i] = h[0]
		}
		return out, nil
	})
	var leaf []byte
	for i := range b.Entries {
		leaf = b.Entries[i].AppendLeaf(leaf[:0])
		hs, err := tlog.StoredHashes(int64(b.Start)+int64(i), leaf, r)
		if err != nil {
			return err
		}
		b.Hashes = append(b.Hashes, hs...)
	}
	return nil
}
