// Package verify checks Cairn logs without trusting the server: every leaf against its envelope, every
// envelope against its sealed payload, the tree recomputed from the leaves alone, every checkpoint's signature
// and root, and that the log only grew since the last verification (state kept outside the store).
//
// It needs only public keys; it never decrypts a payload.
package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/cairn-ai/cairn/internal/atomicfile"
	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/seal"
	"github.com/cairn-ai/cairn/internal/signature"
	"github.com/cairn-ai/cairn/internal/store"
)

// Failure is one thing that did not verify.
type Failure struct {
	System string `json:"system"`
	Index  *int64 `json:"index,omitempty"`
	Reason string `json:"reason"`
}

func (f Failure) String() string {
	if f.Index != nil {
		return fmt.Sprintf("%s[%d]: %s", f.System, *f.Index, f.Reason)
	}
	return fmt.Sprintf("%s: %s", f.System, f.Reason)
}

// Report is the outcome of a verification.
type Report struct {
	Logs    map[string]LogState `json:"logs"`
	Checked uint64              `json:"entries_checked"`
	// Destroyed counts, per log, the entries read whose envelope and payload are gone and a `retention` record
	// accounts for them: destroyed by record, not tampered with.
	Destroyed map[string]uint64 `json:"destroyed_by_record,omitempty"`
	Failures  []Failure         `json:"failures,omitempty"`
}

// OK reports whether everything verified.
func (r *Report) OK() bool { return len(r.Failures) == 0 }

// LogState is what a verifier remembers about a log: the verified size, its root, the right edge of the tree
// (to continue incrementally) and the largest verified checkpoint.
type LogState struct {
	Size           uint64      `json:"size"`
	Root           tlog.Hash   `json:"root"`
	Edge           []tlog.Hash `json:"edge"`
	EdgeHeights    []int       `json:"edge_heights"`
	CheckpointSize uint64      `json:"checkpoint_size"`
	LastRecorded   int64       `json:"last_recorded"`
}

// LoadState reads remembered state; a missing file is empty state.
func LoadState(path string) (map[string]LogState, error) {
	m := map[string]LogState{}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("verification state %s is unreadable: %w", path, err)
	}
	return m, nil
}

// SaveState writes remembered state.
func SaveState(path string, m map[string]LogState) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	return atomicfile.Write(path, b, 0o600)
}

// Options for a store verification.
type Options struct {
	// VKey returns the checkpoint verifier key of a system.
	VKey func(system string) string
	// Retired returns the signing keys a system's log used before a rotation, each accepted only for checkpoints
	// up to the handover size: the checkpoint the retiring and the new key both signed. nil: none.
	Retired func(system string) []RetiredKey
	// Full re-checks every entry instead of continuing from the remembered state.
	Full bool
	// Prev is the remembered state (may be empty).
	Prev map[string]LogState
	// Open, when set, opens every sealed payload (the operator's check, with the keys): it catches damage to a
	// wrapped data key, which the keyless commitments cannot see because re-wrapping (a legal hold) must not
	// change them.
	Open func(system string, e *store.Entry) error
}

// edge is the right edge of a Merkle tree: the roots of its perfect subtrees, largest first.
type edge struct {
	hashes  []tlog.Hash
	heights []int
}

func (e *edge) push(h tlog.Hash) {
	height := 0
	for len(e.heights) > 0 && e.heights[len(e.heights)-1] == height {
		h = tlog.NodeHash(e.hashes[len(e.hashes)-1], h)
		e.hashes, e.heights = e.hashes[:len(e.hashes)-1], e.heights[:len(e.heights)-1]
		height++
	}
	e.hashes, e.heights = append(e.hashes, h), append(e.heights, height)
}

func (e *edge) root() tlog.Hash {
	if len(e.hashes) == 0 {
		return tlog.Hash{}
	}
	h := e.hashes[len(e.hashes)-1]
	for i := len(e.hashes) - 2; i >= 0; i-- {
		h = tlog.NodeHash(e.hashes[i], h)
	}
	return h
}

// Store verifies every log of a store.
func Store(ctx context.Context, st store.Store, opts Options) (*Report, error) {
	names, err := st.Logs(ctx)
	if err != nil {
		return nil, err
	}
	rep := &Report{Logs: map[string]LogState{}}
	for name := range opts.Prev {
		if !slices.Contains(names, name) {
			rep.Failures = append(rep.Failures, Failure{System: name, Reason: "log previously verified is missing from the store"})
		}
	}
	for _, name := range names {
		lg, err := st.Open(ctx, name)
		if err != nil {
			rep.Failures = append(rep.Failures, Failure{System: name, Reason: err.Error()})
			continue
		}
		prev, had := opts.Prev[name]
		ls := verifyLog(ctx, name, lg, opts, prev, had, rep)
		rep.Logs[name] = ls
	}
	return rep, nil
}

// RetiredKey is a checkpoint verifier key retired by a rotation, valid for checkpoints of at most MaxSize entries.
type RetiredKey struct {
	VKey    string
	MaxSize uint64
}

func verifyLog(ctx context.Context, name string, lg store.Log, opts Options, prev LogState, had bool, rep *Report) LogState {
	fail := func(idx int64, reason string) {
		f := Failure{System: name, Reason: reason}
		if idx >= 0 {
			i := idx
			f.Index = &i
		}
		rep.Failures = append(rep.Failures, f)
	}
	// Checkpoints: the latest and the history, each signed, each to be matched against the recomputed tree.
	vkey := opts.VKey(name)
	cps := map[uint64]tlog.Hash{}
	var maxCP uint64
	var retired []RetiredKey
	if opts.Retired != nil {
		retired = opts.Retired(name)
	}
	addCP := func(note []byte, where string) {
		c, err := ledger.OpenCheckpoint(note, vkey)
		for _, rk := range retired {
			if err == nil {
				break
			}
			// A retired key vouches only for checkpoints up to the handover: one it signed later is a forgery
			// by whoever kept the old key.
			if rc, rerr := ledger.OpenCheckpoint(note, rk.VKey); rerr == nil && rc.Size <= rk.MaxSize {
				c, err = rc, nil
			}
		}
		if err != nil {
			fail(-1, fmt.Sprintf("%s checkpoint: %v", where, err))
			return
		}
		if old, ok := cps[c.Size]; ok && old != c.Root {
			fail(-1, fmt.Sprintf("two checkpoints of size %d with different roots: the log forked", c.Size))
		}
		cps[c.Size] = c.Root
		maxCP = max(maxCP, c.Size)
	}
	if cp, err := lg.Checkpoint(ctx); err != nil {
		fail(-1, "read checkpoint: "+err.Error())
	} else if cp != nil {
		addCP(cp, "latest")
	}
	if err := lg.Checkpoints(ctx, func(_ uint64, note []byte) error { addCP(note, "history"); return nil }); err != nil {
		fail(-1, "read checkpoint history: "+err.Error())
	}
	// The size is read after the checkpoints, so a store that other nodes append to while it is verified still
	// holds everything the checkpoints read cover.
	n := lg.Size()
	if had && n < prev.Size {
		fail(-1, fmt.Sprintf("store rolled back: it holds %d entries, %d were verified before", n, prev.Size))
		return prev
	}
	if had && maxCP < prev.CheckpointSize {
		fail(-1, fmt.Sprintf("checkpoints rolled back: the latest covers %d entries, %d were verified before", maxCP, prev.CheckpointSize))
	}
	if maxCP > n {
		fail(-1, fmt.Sprintf("checkpoint covers %d entries but the store holds %d: acknowledged entries are missing", maxCP, n))
	}
	start := uint64(0)
	var e edge
	lastRec := int64(0)
	if had && !opts.Full {
		start = prev.Size
		e = edge{hashes: slices.Clone(prev.Edge), heights: slices.Clone(prev.EdgeHeights)}
		lastRec = prev.LastRecorded
		// The store's own tree at the old size must still be the one verified before.
		if prev.Size > 0 {
			if h, err := tlog.TreeHash(int64(prev.Size), lg); err != nil || h != prev.Root {
				fail(-1, fmt.Sprintf("the tree of size %d is not the one verified before: history was rewritten", prev.Size))
			}
		}
	}
	var leaf []byte
	next := start
	rt := newRetentionCheck()
	err := lg.Entries(ctx, start, n, func(en *store.Entry) error {
		i := int64(en.Index)
		if en.Index != next {
			fail(i, fmt.Sprintf("entry found where entry %d should be: the log has a gap or is out of order", next))
		}
		next = en.Index + 1
		leaf = en.AppendLeaf(leaf[:0])
		lh := tlog.RecordHash(leaf)
		if stored, err := lg.ReadHashes([]int64{tlog.StoredHashIndex(0, i)}); err != nil || stored[0] != lh {
			fail(i, "leaf does not match the tree's stored leaf hash")
		}
		if en.Recorded < lastRec {
			fail(i, "recorded time goes backwards")
		}
		lastRec = en.Recorded
		if en.Envelope == nil && en.Sealed == nil {
			rt.missing(en) // legitimate only under a retention record: checked after the pass
		} else {
			checkEntry(name, en, fail)
			rt.record(en, fail)
		}
		if opts.Open != nil && en.Sealed != nil && en.Envelope != nil {
			if err := opts.Open(name, en); err != nil {
				fail(i, "sealed payload does not open: "+err.Error())
			}
		}
		e.push(lh)
		size := en.Index + 1
		if want, ok := cps[size]; ok {
			if e.root() != want {
				fail(-1, fmt.Sprintf("signed checkpoint of size %d does not match the tree recomputed from the leaves", size))
			}
		}
		rep.Checked++
		return nil
	})
	if err != nil {
		fail(-1, "read entries: "+err.Error())
	} else if next != n {
		fail(-1, fmt.Sprintf("the store says it holds %d entries but %d were read", n, next))
	}
	if err == nil {
		if d := rt.check(ctx, lg, fail); d > 0 {
			if rep.Destroyed == nil {
				rep.Destroyed = map[string]uint64{}
			}
			rep.Destroyed[name] += d
		}
	}
	// The stored interior hashes (which tiles and proofs are served from) must give the recomputed root.
	if n > 0 && err == nil {
		if h, herr := tlog.TreeHash(int64(n), lg); herr != nil || h != e.root() {
			fail(-1, "the tree's stored hashes do not match the tree recomputed from the leaves")
		}
	}
	if !opts.Full && had {
		for size := range cps {
			if size <= prev.Size && size > 0 {
				if h, err := tlog.TreeHash(int64(size), lg); err != nil || h != cps[size] {
					fail(-1, fmt.Sprintf("signed checkpoint of size %d does not match the stored tree", size))
				}
			}
		}
	}
	if had && opts.Full && prev.Size > 0 && prev.Size <= n {
		if h, err := tlog.TreeHash(int64(prev.Size), lg); err != nil || h != prev.Root {
			fail(-1, fmt.Sprintf("the tree of size %d is not the one verified before: history was rewritten", prev.Size))
		}
	}
	ls := LogState{Size: n, Root: e.root(), Edge: e.hashes, EdgeHeights: e.heights, CheckpointSize: max(maxCP, prev.CheckpointSize), LastRecorded: lastRec}
	return ls
}

// checkEntry checks one entry's layers against each other (CheckLayers).
func checkEntry(system string, en *store.Entry, fail func(int64, string)) {
	if err := CheckLayers(system, en); err != nil {
		fail(int64(en.Index), err.Error())
	}
}

// CheckLayers checks one entry's layers against each other, as verification does: leaf digest against
// envelope, envelope fields against the leaf, payload commitment against the sealed payload. It needs no key.
func CheckLayers(system string, en *store.Entry) error {
	if en.Envelope == nil {
		// Retention erases envelope and payload together; a payload without its envelope is damage.
		return errors.New("envelope missing but its sealed payload is present")
	}
	if event.Digest(en.Salt[:], en.Envelope) != en.Digest {
		return errors.New("envelope does not match the leaf's digest")
	}
	env, err := event.ParseEnvelope(en.Envelope)
	if err != nil {
		return errors.New("envelope unreadable: " + err.Error())
	}
	if env.ID != en.ID.String() || env.Type != en.Type || env.System != system || env.Recorded != event.FormatRecorded(en.Recorded) {
		return errors.New("envelope disagrees with its leaf (id, type, system or recorded time)")
	}
	switch env.Type {
	case "document":
		if reason := checkSignature(env.Attrs, "digest"); reason != "" {
			return errors.New(reason)
		}
	case "approval":
		if reason := checkSignature(env.Attrs, "signed_digest"); reason != "" {
			return errors.New(reason)
		}
	}
	switch {
	case env.Payload == nil && en.Sealed != nil:
		return errors.New("sealed payload present but the envelope commits to none")
	case env.Payload != nil && en.Sealed == nil:
		return errors.New("sealed payload missing")
	case env.Payload != nil:
		var c seal.Commitment
		var err1, err2 error
		c.Digest, err1 = event.ParseSHA256(env.Payload.Digest)
		c.KeyCommit, err2 = event.ParseSHA256(env.Payload.KeyCommit)
		c.Size = env.Payload.Size
		if err1 != nil || err2 != nil {
			return errors.New("envelope payload commitment unreadable")
		} else if err := seal.Check(en.Sealed, c); err != nil {
			return errors.New("sealed payload does not match the envelope: " + err.Error())
		}
	}
	return nil
}

// checkSignature checks the detached signature a document or approval event records over the document digest in
// its attribute digestAttr, if it records one (docs/documents.md), and returns why it fails, or "".
func checkSignature(attrs []byte, digestAttr string) string {
	str := func(name string) string {
		v, ok := event.Member(attrs, name)
		if !ok {
			return ""
		}
		var s string
		if json.Unmarshal(v, &s) != nil {
			return ""
		}
		return s
	}
	sig := str("signature")
	if sig == "" {
		return ""
	}
	if _, err := signature.Verify(str("signature_format"), sig, str("signer_key"), str(digestAttr)); err != nil {
		return "recorded signature: " + err.Error()
	}
	return ""
}
