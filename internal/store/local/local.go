// Package local is Cairn's embedded store: each log is a directory of append-only segment files, which are the
// write-ahead log and the source of truth, plus projections rebuilt from them (the tree's stored hashes and a
// locator from index to record), kept in memory-mapped files and made durable behind the segments.
//
// Recovery truncates only a torn tail after the last durable frame; damage before it is reported as
// store.ErrCorrupt and never repaired silently.
package local

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/cairn-ai/cairn/internal/atomicfile"
	"github.com/cairn-ai/cairn/internal/store"
)

// Options tune the embedded store. The zero value gives the defaults.
type Options struct {
	// SegmentBytes starts a new segment file once the current one reaches this size (default 512 MiB).
	SegmentBytes int64
	// FlushInterval is how often projections are made durable (default 1 s). Recovery replays at most this much.
	FlushInterval time.Duration
	// HistoryInterval keeps at most one checkpoint per interval in the history (default 1 s); the latest
	// checkpoint is always kept.
	HistoryInterval time.Duration
	// NoSync skips fsync (tests of the crash file layer and benchmarks of the CPU path only: unsafe).
	NoSync bool
	Logger *slog.Logger
}

func (o *Options) fill() {
	if o.SegmentBytes == 0 {
		o.SegmentBytes = 512 << 20
	}
	if o.FlushInterval == 0 {
		o.FlushInterval = time.Second
	}
	if o.HistoryInterval == 0 {
		o.HistoryInterval = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Store is a directory of logs.
type Store struct {
	dir  string
	opts Options
	mu   sync.Mutex
	open map[string]*Log
}

var nameRE = regexp.MustCompile(`^[a-z0-9_][a-z0-9_-]{0,63}$`)

// Open opens (creating if needed) a store in dir.
func Open(dir string, opts Options) (*Store, error) {
	opts.fill()
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o700); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	return &Store{dir: dir, opts: opts, open: map[string]*Log{}}, nil
}

func (s *Store) Logs(ctx context.Context) ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(s.dir, "logs"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && nameRE.MatchString(e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

func (s *Store) Create(ctx context.Context, name string) (store.Log, error) {
	if !nameRE.MatchString(name) {
		return nil, fmt.Errorf("log name %q: want a lowercase slug", name)
	}
	dir := filepath.Join(s.dir, "logs", name)
	if err := os.Mkdir(dir, 0o700); errors.Is(err, fs.ErrExist) {
		return nil, store.ErrExists
	} else if err != nil {
		return nil, err
	}
	if err := os.Mkdir(filepath.Join(dir, "segments"), 0o700); err != nil {
		return nil, err
	}
	if err := atomicfile.SyncDir(filepath.Join(s.dir, "logs")); err != nil {
		return nil, err
	}
	return s.Open(ctx, name)
}

func (s *Store) Open(ctx context.Context, name string) (store.Log, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.open[name]; l != nil {
		return l, nil
	}
	if !nameRE.MatchString(name) {
		return nil, store.ErrNotFound
	}
	dir := filepath.Join(s.dir, "logs", name)
	if _, err := os.Stat(filepath.Join(dir, "segments")); err != nil {
		return nil, store.ErrNotFound
	}
	l, err := openLog(dir, name, s.opts)
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", name, err)
	}
	s.open[name] = l
	return l, nil
}

func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for n, l := range s.open {
		errs = append(errs, l.close())
		delete(s.open, n)
	}
	return errors.Join(errs...)
}

// Log is one log of the embedded store.
type Log struct {
	dir  string
	name string
	opts Options

	appendMu sync.Mutex // one appender
	failed   error      // set when a write or fsync failed: the log takes no more appends until reopened
	buf      []byte

	segMu sync.RWMutex
	segs  []*os.File // segment files by number
	tail  int64      // end of the last segment's durable data

	hashes  *mapped // stored hashes, 32 bytes each
	locator *mapped // per index: segment number << 40 | offset of the record

	size      atomic.Uint64
	nhash     atomic.Int64
	typeMu    sync.Mutex
	lastOfTyp map[string]uint64

	flushMu  sync.Mutex
	stop     chan struct{}
	stopped  chan struct{}
	cpMu     sync.Mutex
	lastHist time.Time
	hist     *os.File
}

// state is the durable watermark of the projections.
type state struct {
	Size       uint64            `json:"size"`
	Segment    int               `json:"segment"`
	Offset     int64             `json:"offset"`
	LastOfType map[string]uint64 `json:"last_of_type"`
}

func openLog(dir, name string, opts Options) (*Log, error) {
	l := &Log{dir: dir, name: name, opts: opts, lastOfTyp: map[string]uint64{}, stop: make(chan struct{}), stopped: make(chan struct{})}
	var err error
	if l.hashes, err = openMapped(filepath.Join(dir, "hashes"), 32<<20); err != nil {
		return nil, err
	}
	if l.locator, err = openMapped(filepath.Join(dir, "locator"), 8<<20); err != nil {
		return nil, err
	}
	if l.hist, err = os.OpenFile(filepath.Join(dir, "checkpoints"), os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600); err != nil {
		return nil, err
	}
	if err := l.recover(); err != nil {
		l.closeFiles()
		return nil, err
	}
	go l.flusher()
	return l, nil
}

func segName(n int) string { return fmt.Sprintf("%08d.seg", n) }

// recover opens the segments and replays every frame after the projections' durable watermark.
func (l *Log) recover() error {
	var st state
	if b, err := os.ReadFile(filepath.Join(l.dir, "state")); err == nil {
		if err := json.Unmarshal(b, &st); err != nil {
			return fmt.Errorf("%w: state file unreadable", store.ErrCorrupt)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if st.LastOfType != nil {
		l.lastOfTyp = st.LastOfType
	}
	ents, err := os.ReadDir(filepath.Join(l.dir, "segments"))
	if err != nil {
		return err
	}
	for i, e := range ents {
		if e.Name() != segName(i) {
			return fmt.Errorf("%w: segment %s out of sequence", store.ErrCorrupt, e.Name())
		}
		f, err := os.OpenFile(filepath.Join(l.dir, "segments", e.Name()), os.O_RDWR, 0)
		if err != nil {
			return err
		}
		l.segs = append(l.segs, f)
	}
	if len(l.segs) == 0 {
		if err := l.newSegment(); err != nil {
			return err
		}
	}
	if st.Segment >= len(l.segs) {
		return fmt.Errorf("%w: state names segment %d, which is missing", store.ErrCorrupt, st.Segment)
	}
	l.size.Store(st.Size)
	l.nhash.Store(tlog.StoredHashCount(int64(st.Size)))
	if err := l.ensureProjections(st.Size); err != nil {
		return err
	}
	// Replay frames from the watermark.
	n := st.Size
	for seg := st.Segment; seg < len(l.segs); seg++ {
		off := int64(0)
		if seg == st.Segment {
			off = st.Offset
		}
		last := seg == len(l.segs)-1
		end, err := l.replaySegment(seg, off, &n, last)
		if err != nil {
			return err
		}
		if last {
			l.tail = end
		}
	}
	return nil
}

// replaySegment re-derives projections for every frame of a segment from off; it returns the end of the last
// valid frame. A bad frame is tolerated only as the torn tail of the last segment.
func (l *Log) replaySegment(seg int, off int64, n *uint64, last bool) (int64, error) {
	f := l.segs[seg]
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := fi.Size()
	if off > size {
		return 0, fmt.Errorf("%w: segment %d is %d bytes, shorter than its durable watermark %d", store.ErrCorrupt, seg, size, off)
	}
	hdr := make([]byte, headerSize)
	var body []byte
	for off < size {
		bad := func(reason string) (int64, error) {
			if !last || l.validFrameAfter(f, off+1, size) {
				return 0, fmt.Errorf("%w: segment %d offset %d: %s, with data after it", store.ErrCorrupt, seg, off, reason)
			}
			l.opts.Logger.Warn("truncating torn tail", "log", l.name, "segment", seg, "offset", off, "bytes", size-off, "reason", reason)
			if err := f.Truncate(off); err != nil {
				return 0, err
			}
			return off, f.Sync()
		}
		if _, err := f.ReadAt(hdr, off); err != nil {
			return bad("short frame header")
		}
		h, err := parseHeader(hdr)
		if err != nil {
			return bad("bad frame header")
		}
		if h.first != *n {
			return 0, fmt.Errorf("%w: segment %d offset %d: frame starts at index %d, want %d", store.ErrCorrupt, seg, off, h.first, *n)
		}
		if int64(h.bodyLen) > size-off-headerSize {
			return bad("short frame body")
		}
		body = slices.Grow(body[:0], int(h.bodyLen))[:h.bodyLen]
		if _, err := f.ReadAt(body, off+headerSize); err != nil {
			return bad("short frame body")
		}
		if crc32.Checksum(body, castagnoli) != h.bodyCRC {
			return bad("frame body checksum mismatch")
		}
		entries := make([]store.Entry, h.count)
		pos := 0
		locs := make([]uint64, h.count)
		for i := range entries {
			k, err := parseRecord(body[pos:], &entries[i])
			if err != nil {
				return 0, fmt.Errorf("%w: segment %d offset %d: record %d: %v", store.ErrCorrupt, seg, off, i, err)
			}
			entries[i].Index = *n + uint64(i)
			locs[i] = uint64(seg)<<40 | uint64(off+headerSize+int64(pos))
			pos += k
		}
		hashes, err := l.storedHashes(*n, entries)
		if err != nil {
			return 0, err
		}
		if err := l.project(*n, entries, hashes, locs); err != nil {
			return 0, err
		}
		*n += uint64(h.count)
		off += headerSize + int64(h.bodyLen)
	}
	return off, nil
}

// validFrameAfter reports whether any valid frame header exists in f in [from, size).
func (l *Log) validFrameAfter(f *os.File, from, size int64) bool {
	const window = 1 << 20
	buf := make([]byte, window+headerSize)
	for off := from; off < size; off += window {
		n, _ := f.ReadAt(buf, off)
		b := buf[:n]
		for i := 0; ; {
			j := bytes.Index(b[i:], []byte(frameMagic))
			if j < 0 {
				break
			}
			if _, err := parseHeader(b[i+j:]); err == nil {
				return true
			}
			i += j + 1
		}
	}
	return false
}

// storedHashes computes the new stored hashes for entries appended at n (used in recovery).
func (l *Log) storedHashes(n uint64, entries []store.Entry) ([]tlog.Hash, error) {
	var out []tlog.Hash
	base := tlog.StoredHashCount(int64(n))
	r := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		hs := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			if x >= base {
				hs[i] = out[x-base]
				continue
			}
			h, err := l.ReadHashes([]int64{x})
			if err != nil {
				return nil, err
			}
			hs[i] = h[0]
		}
		return hs, nil
	})
	var leaf []byte
	for i := range entries {
		leaf = entries[i].AppendLeaf(leaf[:0])
		hs, err := tlog.StoredHashes(int64(n)+int64(i), leaf, r)
		if err != nil {
			return nil, err
		}
		out = append(out, hs...)
	}
	return out, nil
}

func (l *Log) ensureProjections(size uint64) error {
	if err := l.hashes.ensure(tlog.StoredHashCount(int64(size)) * 32); err != nil {
		return err
	}
	return l.locator.ensure(int64(size) * 8)
}

// project writes hashes and locators for a durable batch and publishes it to readers.
func (l *Log) project(start uint64, entries []store.Entry, hashes []tlog.Hash, locs []uint64) error {
	end := start + uint64(len(entries))
	if err := l.ensureProjections(end); err != nil {
		return err
	}
	hb := tlog.StoredHashCount(int64(start))
	for i, h := range hashes {
		copy(l.hashes.at((hb+int64(i))*32, 32), h[:])
	}
	for i, loc := range locs {
		binary.BigEndian.PutUint64(l.locator.at(int64(start+uint64(i))*8, 8), loc)
	}
	l.typeMu.Lock()
	for i := range entries {
		l.lastOfTyp[entries[i].Type] = start + uint64(i)
	}
	l.typeMu.Unlock()
	l.nhash.Store(hb + int64(len(hashes)))
	l.size.Store(end)
	return nil
}

func (l *Log) newSegment() error {
	p := filepath.Join(l.dir, "segments", segName(len(l.segs)))
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if err := atomicfile.SyncDir(filepath.Dir(p)); err != nil {
		f.Close()
		return err
	}
	l.segMu.Lock()
	l.segs = append(l.segs, f)
	l.segMu.Unlock()
	l.tail = 0
	return nil
}

func (l *Log) Size() uint64 { return l.size.Load() }

func (l *Log) Append(ctx context.Context, b *store.Batch) error {
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	if l.failed != nil {
		return fmt.Errorf("log %s failed earlier and must be reopened: %w", l.name, l.failed)
	}
	if b.Start != l.size.Load() {
		return store.ErrStale
	}
	if len(b.Entries) == 0 {
		return nil
	}
	if want := tlog.StoredHashCount(int64(b.Start)+int64(len(b.Entries))) - tlog.StoredHashCount(int64(b.Start)); int64(len(b.Hashes)) != want {
		return fmt.Errorf("batch has %d stored hashes, want %d", len(b.Hashes), want)
	}
	if l.tail >= l.opts.SegmentBytes {
		if err := l.newSegment(); err != nil {
			return err
		}
	}
	seg := len(l.segs) - 1
	l.buf = appendFrame(l.buf[:0], b.Start, b.Entries)
	f := l.segs[seg]
	if _, err := f.WriteAt(l.buf, l.tail); err != nil {
		l.failed = err
		return fmt.Errorf("write segment %d: %w", seg, err)
	}
	if !l.opts.NoSync {
		if err := fdatasync(f); err != nil {
			// After a failed fsync the page cache state is unknown: refuse further appends until recovery.
			l.failed = err
			return fmt.Errorf("sync segment %d: %w", seg, err)
		}
	}
	locs := make([]uint64, len(b.Entries))
	pos := l.tail + headerSize
	for i := range b.Entries {
		locs[i] = uint64(seg)<<40 | uint64(pos)
		pos += int64(recordSize(&b.Entries[i]))
	}
	l.tail += int64(len(l.buf))
	if len(l.buf) > 4<<20 {
		l.buf = nil
	}
	return l.project(b.Start, b.Entries, b.Hashes, locs)
}

func (l *Log) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	n := l.nhash.Load()
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= n {
			return nil, fmt.Errorf("stored hash %d not in log of %d stored hashes", x, n)
		}
		copy(out[i][:], l.hashes.at(x*32, 32))
	}
	return out, nil
}

func (l *Log) loc(index uint64) (int, int64) {
	v := binary.BigEndian.Uint64(l.locator.at(int64(index)*8, 8))
	return int(v >> 40), int64(v & (1<<40 - 1))
}

func (l *Log) seg(n int) (*os.File, error) {
	l.segMu.RLock()
	defer l.segMu.RUnlock()
	if n >= len(l.segs) {
		return nil, fmt.Errorf("%w: locator names segment %d", store.ErrCorrupt, n)
	}
	return l.segs[n], nil
}

func (l *Log) Entry(ctx context.Context, index uint64) (*store.Entry, error) {
	if index >= l.size.Load() {
		return nil, store.ErrNotFound
	}
	segn, off := l.loc(index)
	f, err := l.seg(segn)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 2048)
	k, err := f.ReadAt(buf, off)
	if err != nil && err != io.EOF {
		return nil, err
	}
	buf = buf[:k]
	need, err := fullRecordLen(buf)
	if err != nil {
		return nil, fmt.Errorf("%w: entry %d: %v", store.ErrCorrupt, index, err)
	}
	if need > len(buf) {
		if need > maxRecordBytes {
			return nil, fmt.Errorf("%w: entry %d: record length %d", store.ErrCorrupt, index, need)
		}
		buf = make([]byte, need)
		if _, err := f.ReadAt(buf, off); err != nil {
			return nil, fmt.Errorf("%w: entry %d: %v", store.ErrCorrupt, index, err)
		}
	}
	e := &store.Entry{Index: index}
	if _, err := parseRecord(buf, e); err != nil {
		return nil, fmt.Errorf("%w: entry %d: %v", store.ErrCorrupt, index, err)
	}
	return e, nil
}

// fullRecordLen reads a record's total length from its prefix; it may need more bytes than b holds.
func fullRecordLen(b []byte) (int, error) {
	envOff, err := recordPrefixLen(b)
	if err != nil {
		return 0, err
	}
	if len(b) < envOff+4 {
		return 0, errors.New("record truncated")
	}
	el := int(binary.BigEndian.Uint32(b[envOff:]))
	sOff := envOff + 4 + el
	if len(b) < sOff+4 {
		return sOff + 4 + 1<<16, nil // read more, then measure again
	}
	return sOff + 4 + int(binary.BigEndian.Uint32(b[sOff:])), nil
}

func (l *Log) Entries(ctx context.Context, start, end uint64, fn func(*store.Entry) error) error {
	if end > l.size.Load() {
		end = l.size.Load()
	}
	for i := start; i < end; i++ {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		e, err := l.Entry(ctx, i)
		if err != nil {
			return err
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

func (l *Log) LastOfType(ctx context.Context, typ string) (uint64, bool, error) {
	l.typeMu.Lock()
	defer l.typeMu.Unlock()
	i, ok := l.lastOfTyp[typ]
	return i, ok, nil
}

// flusher makes projections durable every FlushInterval, so recovery replays little.
func (l *Log) flusher() {
	defer close(l.stopped)
	t := time.NewTicker(l.opts.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			if err := l.flush(); err != nil {
				l.opts.Logger.Error("flush projections", "log", l.name, "err", err)
			}
		}
	}
}

func (l *Log) flush() error {
	l.flushMu.Lock()
	defer l.flushMu.Unlock()
	l.appendMu.Lock()
	st := state{Size: l.size.Load(), Segment: len(l.segs) - 1, Offset: l.tail}
	l.typeMu.Lock()
	st.LastOfType = make(map[string]uint64, len(l.lastOfTyp))
	for k, v := range l.lastOfTyp {
		st.LastOfType[k] = v
	}
	l.typeMu.Unlock()
	l.appendMu.Unlock()
	var old state
	if b, err := os.ReadFile(filepath.Join(l.dir, "state")); err == nil {
		json.Unmarshal(b, &old)
	}
	if old.Size == st.Size && old.Segment == st.Segment {
		return nil
	}
	if !l.opts.NoSync {
		if err := l.hashes.sync(); err != nil {
			return err
		}
		if err := l.locator.sync(); err != nil {
			return err
		}
	}
	b, _ := json.Marshal(st)
	return atomicfile.Write(filepath.Join(l.dir, "state"), b, 0o600)
}

func (l *Log) SetCheckpoint(ctx context.Context, n uint64, note []byte) error {
	l.cpMu.Lock()
	defer l.cpMu.Unlock()
	if err := atomicfile.Write(filepath.Join(l.dir, "checkpoint"), note, 0o644); err != nil {
		return fmt.Errorf("write checkpoint: %w", err)
	}
	if time.Since(l.lastHist) < l.opts.HistoryInterval {
		return nil
	}
	rec := binary.BigEndian.AppendUint32(nil, uint32(len(note)))
	rec = binary.BigEndian.AppendUint64(rec, n)
	rec = append(rec, note...)
	rec = binary.BigEndian.AppendUint32(rec, crc32.Checksum(rec, castagnoli))
	if _, err := l.hist.Write(rec); err != nil {
		return fmt.Errorf("append checkpoint history: %w", err)
	}
	if !l.opts.NoSync {
		if err := fdatasync(l.hist); err != nil {
			return fmt.Errorf("sync checkpoint history: %w", err)
		}
	}
	l.lastHist = time.Now()
	return nil
}

func (l *Log) Checkpoint(ctx context.Context) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(l.dir, "checkpoint"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return b, err
}

func (l *Log) Checkpoints(ctx context.Context, fn func(n uint64, note []byte) error) error {
	b, err := os.ReadFile(filepath.Join(l.dir, "checkpoints"))
	if err != nil {
		return err
	}
	for len(b) > 0 {
		if len(b) < 16 {
			return fmt.Errorf("%w: checkpoint history truncated", store.ErrCorrupt)
		}
		k := int(binary.BigEndian.Uint32(b))
		if len(b) < 16+k {
			return fmt.Errorf("%w: checkpoint history truncated", store.ErrCorrupt)
		}
		rec := b[:12+k]
		if crc32.Checksum(rec, castagnoli) != binary.BigEndian.Uint32(b[12+k:]) {
			return fmt.Errorf("%w: checkpoint history record damaged", store.ErrCorrupt)
		}
		if err := fn(binary.BigEndian.Uint64(b[4:]), rec[12:]); err != nil {
			return err
		}
		b = b[16+k:]
	}
	return nil
}

func (l *Log) close() error {
	close(l.stop)
	<-l.stopped
	err := l.flush()
	return errors.Join(err, l.closeFiles())
}

func (l *Log) Close() error { return nil } // logs are closed with their store

func (l *Log) closeFiles() error {
	var errs []error
	for _, f := range l.segs {
		errs = append(errs, f.Close())
	}
	if l.hashes != nil {
		errs = append(errs, l.hashes.close())
	}
	if l.locator != nil {
		errs = append(errs, l.locator.close())
	}
	if l.hist != nil {
		errs = append(errs, l.hist.Close())
	}
	return errors.Join(errs...)
}
