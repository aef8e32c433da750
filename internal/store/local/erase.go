package local

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/cairn-ai/cairn/internal/store"
)

// Retention changes records in place, the one exception to append-only segments: Erase overwrites a record's
// salt, content key, envelope and sealed payload with zeros and clears its marker's flags; ReplaceSealed
// overwrites a sealed payload with one of the same length. Record lengths never change, so locators stay valid,
// and the frame's body checksum and header are rewritten to match.
//
// Each change is made crash-safe by a redo journal: the intended changes (where each record is, and the new
// sealed bytes) are written atomically to DIR/erase.journal first, then applied and synced, then the journal is
// removed. A store opened after a crash applies a journal it finds before anything reads the segments, so a
// frame is never left with a checksum that does not match its body.

const journalName = "erase.journal"

// journalFrame is one frame to change: where it is, its header fields (so a torn header can be rewritten), and
// the records to change in it.
type journalFrame struct {
	Seg     int             `json:"seg"`
	Off     int64           `json:"off"` // offset of the frame header in the segment
	Count   uint32          `json:"count"`
	First   uint64          `json:"first"`
	BodyLen uint32          `json:"body_len"`
	Records []journalRecord `json:"records"`
}

type journalRecord struct {
	Off    int64  `json:"off"`              // offset of the record in the segment
	Sealed []byte `json:"sealed,omitempty"` // ReplaceSealed: the new sealed payload; nil: erase
}

// Erase implements store.Log.
func (l *Log) Erase(ctx context.Context, indexes []uint64) error {
	recs := make(map[uint64]journalRecord, len(indexes))
	for _, i := range indexes {
		recs[i] = journalRecord{}
	}
	return l.change(ctx, recs)
}

// ReplaceSealed implements store.Log.
func (l *Log) ReplaceSealed(ctx context.Context, index uint64, sealed []byte) error {
	e, err := l.Entry(ctx, index)
	if err != nil {
		return err
	}
	if e.Sealed == nil {
		return fmt.Errorf("entry %d has no sealed payload: %w", index, store.ErrNotFound)
	}
	if len(e.Sealed) != len(sealed) {
		return fmt.Errorf("replace sealed payload of entry %d: %d bytes, the stored one has %d", index, len(sealed), len(e.Sealed))
	}
	return l.change(ctx, map[uint64]journalRecord{index: {Sealed: slices.Clone(sealed)}})
}

func (l *Log) change(ctx context.Context, recs map[uint64]journalRecord) error {
	if l.opts.ReadOnly {
		return errReadOnly
	}
	if len(recs) == 0 {
		return nil
	}
	l.eraseMu.Lock()
	defer l.eraseMu.Unlock()
	jpath := filepath.Join(l.dir, journalName)
	if _, err := l.fs.Stat(jpath); err == nil {
		return fmt.Errorf("an earlier erase of log %s did not complete: reopen the store to complete it", l.name)
	}
	size := l.size.Load()
	// Group the records by frame: each segment's frame offsets are found by walking its headers once.
	frames := map[[2]int64]*journalFrame{}
	for _, idx := range slices.Sorted(mapKeys(recs)) {
		if idx >= size {
			return fmt.Errorf("entry %d: %w", idx, store.ErrNotFound)
		}
		seg, off, err := l.loc(idx)
		if err != nil {
			return err
		}
		fs, err := l.frameStarts(seg, off)
		if err != nil {
			return err
		}
		k, _ := slices.BinarySearch(fs, off+1)
		if k == 0 {
			return fmt.Errorf("%w: entry %d lies before the first frame of segment %d", store.ErrCorrupt, idx, seg)
		}
		key := [2]int64{int64(seg), fs[k-1]}
		jf := frames[key]
		if jf == nil {
			f, err := l.seg(seg)
			if err != nil {
				return err
			}
			hdr := make([]byte, headerSize)
			if _, err := f.ReadAt(hdr, fs[k-1]); err != nil {
				return err
			}
			h, err := parseHeader(hdr)
			if err != nil {
				return fmt.Errorf("%w: segment %d offset %d: %v", store.ErrCorrupt, seg, fs[k-1], err)
			}
			jf = &journalFrame{Seg: seg, Off: fs[k-1], Count: h.count, First: h.first, BodyLen: h.bodyLen}
			frames[key] = jf
		}
		r := recs[idx]
		r.Off = off
		jf.Records = append(jf.Records, r)
	}
	var journal []*journalFrame
	for _, k := range slices.SortedFunc(mapKeys(frames), func(a, b [2]int64) int {
		if a[0] != b[0] {
			return int(a[0] - b[0])
		}
		return int(a[1] - b[1])
	}) {
		journal = append(journal, frames[k])
	}
	b, err := json.Marshal(journal)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(l.fs, jpath, b, 0o600); err != nil {
		return fmt.Errorf("write erase journal: %w", err)
	}
	if err := l.applyJournal(journal, func(seg int) (File, error) { return l.seg(seg) }); err != nil {
		return fmt.Errorf("erase (the journal completes it when the store is reopened): %w", err)
	}
	if err := l.fs.Remove(jpath); err != nil {
		return err
	}
	return l.fs.SyncDir(l.dir)
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// frameIndex is where the frames of a segment start, as far as walked. Frames never move (in-place changes keep
// every length), so it only grows; Erase walks each segment's headers once over the life of the Log.
type frameIndex struct {
	starts []int64
	end    int64 // offset of the next frame header to read
}

// frameStarts returns the frame offsets of a segment, walked at least past off. Called with eraseMu held.
func (l *Log) frameStarts(seg int, off int64) ([]int64, error) {
	f, err := l.seg(seg)
	if err != nil {
		return nil, err
	}
	if l.frames == nil {
		l.frames = map[int]*frameIndex{}
	}
	fx := l.frames[seg]
	if fx == nil {
		fx = &frameIndex{}
		l.frames[seg] = fx
	}
	hdr := make([]byte, headerSize)
	for fx.end <= off {
		if _, err := f.ReadAt(hdr, fx.end); err != nil {
			return nil, fmt.Errorf("read frame header of segment %d at %d: %w", seg, fx.end, err)
		}
		h, err := parseHeader(hdr)
		if err != nil {
			return nil, fmt.Errorf("%w: segment %d offset %d: %v", store.ErrCorrupt, seg, fx.end, err)
		}
		fx.starts = append(fx.starts, fx.end)
		fx.end += headerSize + int64(h.bodyLen)
	}
	return fx.starts, nil
}

// applyJournal makes the journal's changes to the segments and syncs them. It is idempotent, so a journal left
// by a crash is applied again in full.
func (l *Log) applyJournal(journal []*journalFrame, open func(seg int) (File, error)) error {
	synced := map[int]File{}
	for _, jf := range journal {
		f, err := open(jf.Seg)
		if err != nil {
			return err
		}
		body := make([]byte, jf.BodyLen)
		if _, err := f.ReadAt(body, jf.Off+headerSize); err != nil {
			return fmt.Errorf("read frame at segment %d offset %d: %w", jf.Seg, jf.Off, err)
		}
		for _, r := range jf.Records {
			if err := changeRecord(body, r.Off-jf.Off-headerSize, r.Sealed); err != nil {
				return fmt.Errorf("%w: segment %d offset %d: %v", store.ErrCorrupt, jf.Seg, r.Off, err)
			}
		}
		h := make([]byte, headerSize)
		copy(h, frameMagic)
		binary.BigEndian.PutUint32(h[4:], jf.Count)
		binary.BigEndian.PutUint64(h[8:], jf.First)
		binary.BigEndian.PutUint32(h[16:], jf.BodyLen)
		binary.BigEndian.PutUint32(h[20:], crc32.Checksum(body, castagnoli))
		binary.BigEndian.PutUint32(h[28:], crc32.Checksum(h[:28], castagnoli))
		if _, err := f.WriteAt(body, jf.Off+headerSize); err != nil {
			return err
		}
		if _, err := f.WriteAt(h, jf.Off); err != nil {
			return err
		}
		synced[jf.Seg] = f
	}
	if l.opts.NoSync {
		return nil
	}
	for _, f := range synced {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	return nil
}

// changeRecord erases the record at off in body (sealed nil) or replaces its sealed payload.
func changeRecord(body []byte, off int64, sealed []byte) error {
	if off < 0 || off >= int64(len(body)) {
		return errors.New("record outside its frame")
	}
	b := body[off:]
	envOff, err := recordPrefixLen(b)
	if err != nil {
		return err
	}
	if len(b) < envOff+4 {
		return errors.New("record truncated")
	}
	el := int(binary.BigEndian.Uint32(b[envOff:]))
	sOff := envOff + 4 + el
	if len(b) < sOff+4 {
		return errors.New("record truncated")
	}
	sl := int(binary.BigEndian.Uint32(b[sOff:]))
	if len(b) < sOff+4+sl {
		return errors.New("record truncated")
	}
	if sealed != nil {
		if b[0]&flagSealed == 0 || sl != len(sealed) {
			return errors.New("sealed payload absent or of another length")
		}
		copy(b[sOff+4:], sealed)
		return nil
	}
	b[0] = markerBit
	saltOff := 2 + int(b[1]) + 16 + 8 + 32
	clear(b[saltOff : saltOff+32]) // salt and content key
	clear(b[envOff+4 : envOff+4+el])
	clear(b[sOff+4 : sOff+4+sl])
	return nil
}

// redoJournal applies a journal left by an interrupted Erase or ReplaceSealed; called at open, before the
// segments are read.
func (l *Log) redoJournal() error {
	jpath := filepath.Join(l.dir, journalName)
	b, err := readFile(l.fs, jpath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if l.opts.ReadOnly {
		return fmt.Errorf("%w: a retention erase was interrupted; open the store writable (start the server) once to complete it", store.ErrCorrupt)
	}
	var journal []*journalFrame
	if err := json.Unmarshal(b, &journal); err != nil {
		return fmt.Errorf("%w: erase journal unreadable", store.ErrCorrupt)
	}
	files := map[int]File{}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	err = l.applyJournal(journal, func(seg int) (File, error) {
		if f := files[seg]; f != nil {
			return f, nil
		}
		f, err := l.fs.OpenFile(filepath.Join(l.dir, "segments", segName(seg)), os.O_RDWR, 0)
		if err != nil {
			return nil, err
		}
		files[seg] = f
		return f, nil
	})
	if err != nil {
		return fmt.Errorf("complete interrupted erase: %w", err)
	}
	l.opts.Logger.Warn("completed an interrupted retention erase", "log", l.name, "frames", len(journal))
	if err := l.fs.Remove(jpath); err != nil {
		return err
	}
	return l.fs.SyncDir(l.dir)
}
