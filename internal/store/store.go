// Package store defines the storage contract of a Cairn ledger: what a backend must keep durably for each log
// (its entries and the Merkle tree's stored hashes) and how it must behave on append, read and recovery.
// Backends live in sub-packages (local: segment files; pg: PostgreSQL) and all pass storetest.Run.
//
// A store never interprets what it keeps: it does not parse envelopes, decrypt payloads or sign checkpoints.
package store

import (
	"context"
	"errors"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/cairn-ai/cairn/internal/event"
)

// Entry is one log entry in its three layers. The leaf fields (ID, Recorded, Type, Digest) are permanent; the
// envelope with its salt and the sealed payload are kept for their retention class.
type Entry struct {
	Index    uint64
	ID       event.UUID
	Recorded int64 // Unix nanoseconds
	Type     string
	Digest   [32]byte // SHA-256(salt || envelope), which the leaf carries

	Salt     [16]byte
	Envelope []byte // canonical JSON; nil once destroyed by retention
	Sealed   []byte // sealed payload; nil if the event has none, or once destroyed
	// ContentKey is a keyed digest of the client's canonical event, for idempotency; zero when the server chose
	// the id.
	ContentKey [16]byte
}

// Leaf returns the entry's permanent leaf fields.
func (e *Entry) Leaf() event.Leaf {
	return event.Leaf{ID: e.ID, Recorded: e.Recorded, Type: e.Type, Digest: e.Digest}
}

// AppendLeaf appends the entry's canonical leaf entry, the bytes the Merkle tree commits to.
func (e *Entry) AppendLeaf(dst []byte) []byte {
	l := e.Leaf()
	return l.AppendLeaf(dst)
}

// Batch is a group of consecutive entries appended as one unit.
type Batch struct {
	Start   uint64 // index of Entries[0]; must equal the log's size
	Entries []Entry
	// Hashes are the tree's new stored hashes (golang.org/x/mod/sumdb/tlog layout), starting at stored-hash index
	// tlog.StoredHashCount(Start).
	Hashes []tlog.Hash
}

// Errors callers act on.
var (
	// ErrStale: the batch's Start is not the log's current size; another writer appended. Re-read and retry.
	ErrStale = errors.New("log moved on: batch start is not the current size")
	// ErrNotFound: no such log or entry.
	ErrNotFound = errors.New("not found")
	// ErrExists: the log already exists.
	ErrExists = errors.New("already exists")
	// ErrCorrupt: stored data is damaged before its durable end; the store will not guess a repair.
	ErrCorrupt = errors.New("store is damaged")
)

// Store holds many logs, one per AI system.
type Store interface {
	// Logs lists the names of all logs.
	Logs(ctx context.Context) ([]string, error)
	// Create makes a new, empty log.
	Create(ctx context.Context, name string) (Log, error)
	// Open opens an existing log, recovering it to its last durable batch.
	Open(ctx context.Context, name string) (Log, error)
	Close() error
}

// Log is one append-only log.
//
// Append must be atomic and durable: when it returns nil, the whole batch survives any crash; when a crash
// interrupts it, the batch is either wholly present after recovery or wholly absent. Reads see only appended
// batches. One goroutine appends at a time per process; reads may run concurrently with appends.
type Log interface {
	// Size is the number of entries durably stored.
	Size() uint64
	Append(ctx context.Context, b *Batch) error
	// Entry reads one entry.
	Entry(ctx context.Context, index uint64) (*Entry, error)
	// Entries calls fn for entries [start, end) in order, stopping at the first error.
	Entries(ctx context.Context, start, end uint64, fn func(*Entry) error) error
	// ReadHashes reads stored hashes (tlog.HashReader).
	ReadHashes(indexes []int64) ([]tlog.Hash, error)
	// LastOfType returns the index of the last entry of a type.
	LastOfType(ctx context.Context, typ string) (uint64, bool, error)
	// SetCheckpoint durably records a signed checkpoint for tree size n as the latest; it also keeps it in the
	// checkpoint history when the history's sampling allows.
	SetCheckpoint(ctx context.Context, n uint64, note []byte) error
	// Checkpoint returns the latest signed checkpoint, or nil.
	Checkpoint(ctx context.Context) ([]byte, error)
	// Checkpoints calls fn for every checkpoint kept in the history, oldest first.
	Checkpoints(ctx context.Context, fn func(n uint64, note []byte) error) error
	// Erase destroys, durably, the envelope, salt, content key and sealed payload of each entry at indexes, for
	// retention: afterwards the entry reads with its leaf fields only (Envelope and Sealed nil, Salt and
	// ContentKey zero). Leaves, stored hashes and checkpoints are unchanged, so the tree still verifies. Erasing
	// an erased entry does nothing; an index at or beyond Size is ErrNotFound. It may run concurrently with
	// appends and reads; a crash leaves each entry whole or erased, never torn.
	Erase(ctx context.Context, indexes []uint64) error
	// ReplaceSealed durably replaces the sealed payload of the entry at index with sealed, which must be exactly
	// as long as the stored one: a data key re-wrapped under another period key (a legal hold), ciphertext and
	// so every commitment unchanged. An entry without a sealed payload is ErrNotFound.
	ReplaceSealed(ctx context.Context, index uint64, sealed []byte) error
	Close() error
}

// Shared is implemented by logs that other processes may append to (several nodes over one database). A ledger
// over a shared log checks the store's size before it builds a batch and catches up with what others appended;
// Append answers ErrStale when another writer got there first.
type Shared interface {
	Shared() bool
}

// LeafReader is implemented by logs that can read entries without their envelopes and sealed payloads (Envelope
// and Sealed are nil): a ledger catching up with what other nodes appended needs only the leaf fields and
// content keys, and reading the layers it does not need would cost as much as appending them again.
type LeafReader interface {
	Leaves(ctx context.Context, start, end uint64, fn func(*Entry) error) error
}
