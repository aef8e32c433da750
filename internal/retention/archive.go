package retention

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/store"
	"github.com/cairn-ai/cairn/internal/verify"
)

// Archive is where archived months go: a directory (Dir) here; S3-compatible object storage fits the same
// three calls. Names are slash-separated paths ("<system>/<class>/<month>.cairn-archive").
type Archive interface {
	// Put stores an object durably, replacing any object of that name, only once r is read to its end.
	Put(ctx context.Context, name string, r io.Reader) error
	// Get opens an object; a missing one is an error wrapping fs.ErrNotExist.
	Get(ctx context.Context, name string) (io.ReadCloser, error)
	// Delete removes an object; a missing one is not an error.
	Delete(ctx context.Context, name string) error
}

// Dir is an Archive in a local directory (which may be a mounted network or object-store file system).
type Dir struct{ Path string }

func (d Dir) path(name string) (string, error) {
	if name == "" || strings.Contains(name, "..") || filepath.IsAbs(name) {
		return "", fmt.Errorf("bad archive name %q", name)
	}
	return filepath.Join(d.Path, filepath.FromSlash(name)), nil
}

// Put writes to a temporary file beside the object, syncs it, renames it into place and syncs the directory.
func (d Dir) Put(ctx context.Context, name string, r io.Reader) error {
	p, err := d.path(name)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(p), ".put-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return fmt.Errorf("archive %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), p); err != nil {
		return err
	}
	return syncDir(filepath.Dir(p))
}

func (d Dir) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	p, err := d.path(name)
	if err != nil {
		return nil, err
	}
	return os.Open(p)
}

func (d Dir) Delete(ctx context.Context, name string) error {
	p, err := d.path(name)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return syncDir(filepath.Dir(p))
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// ArchiveName names the archive object of one class of one month of a system.
func ArchiveName(sys, class, month string) string {
	return sys + "/" + class + "/" + month + ".cairn-archive"
}

// An archive object is JSON lines: a header, one line per entry, a trailer. Each entry carries everything needed
// to check it without the store: its leaf fields, salt, envelope and sealed payload (still encrypted: opening it
// needs the period key, which the archive never holds), and an inclusion proof against the signed checkpoint in
// the header. The trailer's range digest is the one the `archived` record in the log carries.
const archiveFormat = "cairn-archive/1"

type archiveHeader struct {
	Format     string `json:"format"`
	System     string `json:"system"`
	Class      string `json:"class"`
	Month      string `json:"month"`
	KeyID      string `json:"key_id"`
	Checkpoint string `json:"checkpoint"` // signed note covering every entry
}

type archiveEntry struct {
	Index    uint64   `json:"index"`
	ID       string   `json:"id"`
	Recorded int64    `json:"recorded"`
	Type     string   `json:"type"`
	Digest   []byte   `json:"digest"`
	Salt     []byte   `json:"salt"`
	Envelope []byte   `json:"envelope"`
	Sealed   []byte   `json:"sealed,omitempty"`
	Proof    [][]byte `json:"proof"`
}

type archiveTrailer struct {
	Count       uint64 `json:"count"`
	RangeDigest string `json:"range_digest"`
}

// writeArchive writes the archive object of the entries each yields (in index order) to w.
func writeArchive(w io.Writer, lg *ledger.Log, h archiveHeader, each func(func(*store.Entry) error) error) (archiveTrailer, error) {
	note, size := lg.Checkpoint()
	if note == nil {
		return archiveTrailer{}, errors.New("no signed checkpoint yet")
	}
	h.Format, h.Checkpoint = archiveFormat, string(note)
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	if err := enc.Encode(h); err != nil {
		return archiveTrailer{}, err
	}
	rh := verify.NewRangeHash()
	err := each(func(e *store.Entry) error {
		if e.Index >= size {
			return fmt.Errorf("entry %d is not covered by the signed checkpoint of size %d", e.Index, size)
		}
		proof, err := lg.InclusionProof(e.Index, size)
		if err != nil {
			return fmt.Errorf("inclusion proof of %d: %w", e.Index, err)
		}
		ae := archiveEntry{Index: e.Index, ID: e.ID.String(), Recorded: e.Recorded, Type: e.Type, Digest: e.Digest[:],
			Salt: e.Salt[:], Envelope: e.Envelope, Sealed: e.Sealed}
		for _, p := range proof {
			ae.Proof = append(ae.Proof, p[:])
		}
		if err := enc.Encode(ae); err != nil {
			return err
		}
		rh.Add(e)
		return nil
	})
	if err != nil {
		return archiveTrailer{}, err
	}
	t := archiveTrailer{Count: rh.Count(), RangeDigest: rh.Sum()}
	if err := enc.Encode(t); err != nil {
		return archiveTrailer{}, err
	}
	return t, bw.Flush()
}

// Restored is an archived month read back and verified.
type Restored struct {
	System, Class, Month, KeyID string
	CheckpointSize              uint64
	Count                       uint64
	RangeDigest                 string
	Entries                     []*store.Entry

	checkpointRoot tlog.Hash
}

// ReadArchive reads an archive object and verifies it on its own: the checkpoint's signature (vkey), every
// entry's inclusion proof against it, every envelope against its leaf digest and every sealed payload against
// its envelope's commitment, and the trailer's count and range digest. CheckAgainstLog then ties it to the log.
// An archive written before a signing-key rotation carries a checkpoint of the retired key: pass it in retired.
func ReadArchive(r io.Reader, vkey string, retired ...string) (*Restored, error) {
	dec := json.NewDecoder(bufio.NewReader(r))
	var h archiveHeader
	if err := dec.Decode(&h); err != nil || h.Format != archiveFormat {
		return nil, fmt.Errorf("archive: not a %s object", archiveFormat)
	}
	cp, err := ledger.OpenCheckpoint([]byte(h.Checkpoint), vkey)
	for _, rk := range retired {
		if err == nil {
			break
		}
		cp, err = ledger.OpenCheckpoint([]byte(h.Checkpoint), rk)
	}
	if err != nil {
		return nil, fmt.Errorf("archive checkpoint: %w", err)
	}
	out := &Restored{System: h.System, Class: h.Class, Month: h.Month, KeyID: h.KeyID, CheckpointSize: cp.Size, checkpointRoot: cp.Root}
	rh := verify.NewRangeHash()
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("archive: truncated: %w", err)
		}
		if strings.Contains(string(raw), `"range_digest"`) && !strings.Contains(string(raw), `"envelope"`) {
			var t archiveTrailer
			if err := json.Unmarshal(raw, &t); err != nil {
				return nil, fmt.Errorf("archive trailer: %w", err)
			}
			if t.Count != rh.Count() || t.RangeDigest != rh.Sum() {
				return nil, errors.New("archive: the trailer's count or range digest does not match its entries")
			}
			out.Count, out.RangeDigest = t.Count, t.RangeDigest
			return out, nil
		}
		var ae archiveEntry
		if err := json.Unmarshal(raw, &ae); err != nil {
			return nil, fmt.Errorf("archive entry: %w", err)
		}
		e, err := ae.check(h, cp)
		if err != nil {
			return nil, fmt.Errorf("archive entry %d: %w", ae.Index, err)
		}
		rh.Add(e)
		out.Entries = append(out.Entries, e)
	}
}

func (ae *archiveEntry) check(h archiveHeader, cp ledger.Checkpoint) (*store.Entry, error) {
	id, err := event.ParseUUID(ae.ID)
	if err != nil || len(ae.Digest) != 32 || len(ae.Salt) != 16 {
		return nil, errors.New("malformed leaf fields")
	}
	e := &store.Entry{Index: ae.Index, ID: id, Recorded: ae.Recorded, Type: ae.Type, Envelope: ae.Envelope, Sealed: ae.Sealed}
	copy(e.Digest[:], ae.Digest)
	copy(e.Salt[:], ae.Salt)
	proof := make(tlog.RecordProof, len(ae.Proof))
	for i, p := range ae.Proof {
		if len(p) != 32 {
			return nil, errors.New("malformed proof")
		}
		copy(proof[i][:], p)
	}
	if err := tlog.CheckRecord(proof, int64(cp.Size), cp.Root, int64(e.Index), tlog.RecordHash(e.AppendLeaf(nil))); err != nil {
		return nil, fmt.Errorf("leaf not in the signed tree: %w", err)
	}
	if err := verify.CheckLayers(h.System, e); err != nil {
		return nil, err
	}
	if ClassOf(e.Type) != h.Class || monthID(e.Recorded) != h.Month {
		return nil, errors.New("entry is not of the archive's class and month")
	}
	return e, nil
}

// CheckAgainstLog ties a restored archive to the log: the log's tree at the archive's checkpoint size has the
// checkpoint's root (so the archive's proofs hold in the log as it is), and the log's `archived` record for the
// month names the same count and range digest.
func (r *Restored) CheckAgainstLog(ctx context.Context, l *ledger.Ledger) error {
	lg, err := l.Log(r.System)
	if err != nil {
		return err
	}
	n, _ := lg.Tree()
	if r.CheckpointSize > n {
		return fmt.Errorf("the archive's checkpoint covers %d entries, the log holds %d", r.CheckpointSize, n)
	}
	// ReadArchive checked every proof against the checkpoint; the log's tree at that size must have its root.
	if root, err := tlog.TreeHash(int64(r.CheckpointSize), lg.Store()); err != nil || root != r.checkpointRoot {
		return fmt.Errorf("the log's tree of size %d does not match the archive's signed checkpoint", r.CheckpointSize)
	}
	for _, e := range r.Entries {
		le, err := lg.Entry(ctx, e.Index)
		if err != nil {
			return err
		}
		if le.ID != e.ID || le.Digest != e.Digest || le.Recorded != e.Recorded || le.Type != e.Type {
			return fmt.Errorf("entry %d of the archive differs from the log's leaf", e.Index)
		}
	}
	st, err := scanLog(ctx, l, r.System)
	if err != nil {
		return err
	}
	rec := st.Archived[group{r.Class, r.Month}]
	if rec == nil {
		return fmt.Errorf("the log has no archived record for %s %s", r.Class, r.Month)
	}
	if rec.Count != r.Count || rec.RangeDigest != r.RangeDigest {
		return fmt.Errorf("the log's archived record (index %d) names %d entries with digest %s; the archive holds %d with %s", rec.Index, rec.Count, rec.RangeDigest, r.Count, r.RangeDigest)
	}
	return nil
}

// ClassOf returns an event type's retention class ("" for an unknown type).
func ClassOf(typ string) string {
	if sp := event.Specs[typ]; sp != nil {
		return sp.Class
	}
	return ""
}

func monthID(recorded int64) string { return time.Unix(0, recorded).UTC().Format("2006-01") }
