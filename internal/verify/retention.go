package verify

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash"
	"maps"
	"slices"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/store"
)

// RangeHash is the digest a `retention` record carries of the entries it archived or destroyed: SHA-256 over a
// domain label and, for each entry in index order, its index (8 bytes, big-endian) and its leaf hash (RFC 6962).
// It depends on leaves only, which outlive every retention period, so it can be recomputed forever.
type RangeHash struct {
	h hash.Hash
	n uint64
	b []byte
}

// NewRangeHash starts a range digest.
func NewRangeHash() *RangeHash {
	h := sha256.New()
	h.Write([]byte("cairn/v1/retention-range\x00"))
	return &RangeHash{h: h}
}

// Add adds an entry (entries must be added in index order).
func (r *RangeHash) Add(e *store.Entry) {
	r.b = e.AppendLeaf(r.b[:0])
	lh := tlog.RecordHash(r.b)
	var ix [8]byte
	binary.BigEndian.PutUint64(ix[:], e.Index)
	r.h.Write(ix[:])
	r.h.Write(lh[:])
	r.n++
}

// Count is how many entries were added.
func (r *RangeHash) Count() uint64 { return r.n }

// Sum returns the digest as envelopes write digests ("sha256:<hex>").
func (r *RangeHash) Sum() string {
	var d [32]byte
	r.h.Sum(d[:0])
	return event.SHA256Hex(d)
}

// retentionCheck tells destruction by record from tampering. During the pass it notes, per retention class and
// month, the span of entries whose envelope and payload are gone, and the latest `destroyed` record of each
// (class, month). Each such record states the span of that month's entries of that class, how many of them are
// destroyed and the range digest of exactly those; after the pass each record is checked against the store as
// it now is, and every missing entry must lie in the span of its group's record.
//
// `retention` events are appended only by Cairn (the type is server-only), so a client cannot forge a record.
type retentionCheck struct {
	gone      map[retGroup][2]uint64 // lowest and highest index of missing entries
	destroyed map[retGroup]retRecord
}

type retGroup struct{ class, month string }

type retRecord struct {
	index, first, last, count uint64
	digest                    string
}

func newRetentionCheck() *retentionCheck {
	return &retentionCheck{gone: map[retGroup][2]uint64{}, destroyed: map[retGroup]retRecord{}}
}

func groupOf(e *store.Entry) retGroup {
	c := ""
	if sp := event.Specs[e.Type]; sp != nil {
		c = sp.Class
	}
	return retGroup{c, time.Unix(0, e.Recorded).UTC().Format("2006-01")}
}

func (rc *retentionCheck) missing(e *store.Entry) {
	g := groupOf(e)
	if sp, ok := rc.gone[g]; ok {
		rc.gone[g] = [2]uint64{min(sp[0], e.Index), max(sp[1], e.Index)}
	} else {
		rc.gone[g] = [2]uint64{e.Index, e.Index}
	}
}

// record notes a `destroyed` retention record.
func (rc *retentionCheck) record(e *store.Entry, fail func(int64, string)) {
	if e.Type != "retention" {
		return
	}
	env, err := event.ParseEnvelope(e.Envelope)
	if err != nil {
		return // checkEntry reported it
	}
	var a struct {
		Action      string  `json:"action"`
		Class       string  `json:"class"`
		Month       string  `json:"month"`
		Count       *uint64 `json:"count"`
		RangeDigest string  `json:"range_digest"`
		First       *uint64 `json:"first_index"`
		Last        *uint64 `json:"last_index"`
	}
	if json.Unmarshal(env.Attrs, &a) != nil || a.Action != "destroyed" {
		return
	}
	if a.Count == nil || a.First == nil || a.Last == nil || a.RangeDigest == "" || *a.Last < *a.First || *a.Last >= e.Index {
		fail(int64(e.Index), "retention record of a destruction is incomplete or names entries after itself")
		return
	}
	rc.destroyed[retGroup{a.Class, a.Month}] = retRecord{index: e.Index, first: *a.First, last: *a.Last, count: *a.Count, digest: a.RangeDigest}
}

// check verifies the records against the store and every missing entry against the records; it returns how
// many entries are destroyed by record.
func (rc *retentionCheck) check(ctx context.Context, lg store.Log, fail func(int64, string)) uint64 {
	var n uint64
	for g, sp := range rc.gone {
		r, ok := rc.destroyed[g]
		if !ok || sp[0] < r.first || sp[1] > r.last {
			fail(int64(sp[0]), fmt.Sprintf("envelope missing, and no retention event covers it (class %q, month %s)", g.class, g.month))
		}
	}
	for _, g := range slices.SortedFunc(maps.Keys(rc.destroyed), func(a, b retGroup) int { return cmp.Compare(rc.destroyed[a].index, rc.destroyed[b].index) }) {
		r := rc.destroyed[g]
		rh := NewRangeHash()
		err := lg.Entries(ctx, r.first, r.last+1, func(e *store.Entry) error {
			if e.Envelope == nil && e.Sealed == nil && groupOf(e) == g {
				rh.Add(e)
			}
			return nil
		})
		switch {
		case err != nil:
			fail(int64(r.index), "read the entries a retention record covers: "+err.Error())
		case rh.Count() != r.count || rh.Sum() != r.digest:
			fail(int64(r.index), fmt.Sprintf("retention record says %d entries of class %q, month %s were destroyed; the store is missing %d, or others", r.count, g.class, g.month, rh.Count()))
		default:
			n += r.count
		}
	}
	return n
}
