// Package local is Cairn's embedded store: each log is a directory of append-only segment files, which are the
// write-ahead log and the source of truth, plus projections rebuilt from them (the tree's stored hashes and a
// locator from index to record), kept in memory-mapped files and made durable behind the segments.
//
// Recovery truncates only a torn tail after the last durable frame; damage before it is reported as
// store.ErrCorrupt and never repaired silently.
//
// Every file goes through an FS (the real one by default), so crash tests can run the store on a file system
// that forgets what was never made durable. Durability is ordered so that the segments come first: a batch is
// acknowledged after its frame's fsync; projections and the watermark in state follow behind, and every file
// or directory the store creates is made durable by syncing its parent before anything depends on it.
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
	// NoSync skips fsync (benchmarks of the CPU path only: unsafe).
	NoSync bool
	// ReadOnly opens the store for verification: it never changes the segments, the checkpoints or the
	// watermark, so a torn tail is left in place and ignored instead of cut; Create, Append and SetCheckpoint
	// fail. The projections (derived data) may still be rebuilt.
	ReadOnly bool
	// FS is the file system to keep the store in (default: OS, the real one).
	FS     FS
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
	if o.FS == nil {
		o.FS = OS
	}
}

// Store is a directory of logs.
type Store struct {
	dir  string
	fs   FS
	opts Options
	mu   sync.Mutex
	open map[string]*Log
}

var nameRE = regexp.MustCompile(`^[a-z0-9_][a-z0-9_-]{0,63}$`)

// Open opens (creating if needed) a store in dir.
func Open(dir string, opts Options) (*Store, error) {
	opts.fill()
	if opts.ReadOnly {
		if _, err := opts.FS.Stat(filepath.Join(dir, "logs")); err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
	} else if err := mkdirAllDurable(opts.FS, filepath.Join(dir, "logs")); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	return &Store{dir: dir, fs: opts.FS, opts: opts, open: map[string]*Log{}}, nil
}

func (s *Store) Logs(ctx context.Context) ([]string, error) {
	ents, err := s.fs.ReadDir(filepath.Join(s.dir, "logs"))
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

// Create builds the log's directory under a temporary name and renames it into place, so that a crash leaves
// either no log or a complete empty one, never a log directory without its segments.
func (s *Store) Create(ctx context.Context, name string) (store.Log, error) {
	if !nameRE.MatchString(name) {
		return nil, fmt.Errorf("log name %q: want a lowercase slug", name)
	}
	if err := s.create(name); err != nil {
		return nil, err
	}
	return s.Open(ctx, name)
}

// errReadOnly: a change to a store opened with Options.ReadOnly.
var errReadOnly = errors.New("store opened read-only")

func (s *Store) create(name string) error {
	if s.opts.ReadOnly {
		return errReadOnly
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	logs := filepath.Join(s.dir, "logs")
	dir := filepath.Join(logs, name)
	if _, err := s.fs.Stat(dir); err == nil {
		return store.ErrExists
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	tmp := filepath.Join(logs, ".new-"+name) // never a log name: names cannot start with '.'
	if err := removeAll(s.fs, tmp); err != nil {
		return fmt.Errorf("remove leftover %s: %w", tmp, err)
	}
	if err := s.fs.Mkdir(tmp, 0o700); err != nil {
		return err
	}
	if err := s.fs.Mkdir(filepath.Join(tmp, "segments"), 0o700); err != nil {
		return err
	}
	if err := s.fs.SyncDir(tmp); err != nil {
		return err
	}
	if err := s.fs.Rename(tmp, dir); err != nil {
		return err
	}
	return s.fs.SyncDir(logs)
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
	if _, err := s.fs.Stat(filepath.Join(dir, "segments")); err != nil {
		return nil, store.ErrNotFound
	}
	l, err := openLog(dir, name, s.opts)
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", name, err)
	}
	s.open[name] = l
	return l, nil
}

// Rebuild discards a log's projections (stored hashes, locator, watermark) and derives them again from its
// segments, as recovery does from a watermark. The log must not be open.
func (s *Store) Rebuild(ctx context.Context, name string) (store.Log, error) {
	if s.opts.ReadOnly {
		return nil, errors.New("rebuild: the store is open read-only")
	}
	s.mu.Lock()
	_, open := s.open[name]
	s.mu.Unlock()
	if open || !nameRE.MatchString(name) {
		return nil, fmt.Errorf("rebuild %s: the log is open or misnamed", name)
	}
	dir := filepath.Join(s.dir, "logs", name)
	for _, f := range []string{"state", "hashes", "locator"} {
		if err := s.fs.Remove(filepath.Join(dir, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("rebuild %s: %w", name, err)
		}
	}
	if err := s.fs.SyncDir(dir); err != nil {
		return nil, err
	}
	return s.Open(ctx, name)
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
	fs   FS
	opts Options

	appendMu sync.Mutex // one appender
	failed   error      // set when a write or fsync failed: the log takes no more appends until reopened
	buf      []byte
	pbuf     []byte // projection bytes of one batch

	segMu sync.RWMutex
	segs  []File // segment files by number

	eraseMu sync.RWMutex        // held by Erase and ReplaceSealed while they rewrite records in place; readers share it
	frames  map[int]*frameIndex // per segment, where its frames start (under eraseMu)
	tail    int64               // end of the last segment's durable data

	hashes  Mapped // stored hashes, 32 bytes each
	locator Mapped // per index: segment number << 40 | offset of the record

	size      atomic.Uint64
	nhash     atomic.Int64
	floor     uint64 // entries known durable at open (signed checkpoints, the watermark): recovery never cuts below
	typeMu    sync.Mutex
	lastOfTyp map[string]uint64

	flushMu  sync.Mutex
	flushed  state // the watermark last written
	stop     chan struct{}
	stopped  chan struct{}
	cpMu     sync.Mutex
	lastHist time.Time
	hist     File
	histTorn bool // read-only: the history's last record is torn; histEnd is where it starts
	histEnd  int64
}

// state is the durable watermark of the projections.
type state struct {
	Size       uint64            `json:"size"`
	Segment    int               `json:"segment"`
	Offset     int64             `json:"offset"`
	LastOfType map[string]uint64 `json:"last_of_type"`
}

func openLog(dir, name string, opts Options) (*Log, error) {
	l := &Log{dir: dir, name: name, fs: opts.FS, opts: opts, lastOfTyp: map[string]uint64{}, stop: make(chan struct{}), stopped: make(chan struct{})}
	err := l.openFiles()
	if err == nil {
		err = l.redoJournal()
	}
	if err == nil {
		err = l.recover()
	}
	if err != nil {
		l.closeFiles()
		return nil, err
	}
	if opts.ReadOnly {
		close(l.stopped)
	} else {
		go l.flusher()
	}
	return l, nil
}

// openFiles opens the projections and the checkpoint history, creating them durably on first use.
func (l *Log) openFiles() error {
	var err error
	if l.hashes, err = l.fs.OpenMapped(filepath.Join(l.dir, "hashes"), 32<<20); err != nil {
		return err
	}
	if l.locator, err = l.fs.OpenMapped(filepath.Join(l.dir, "locator"), 8<<20); err != nil {
		return err
	}
	if l.opts.ReadOnly {
		return l.recoverHistory()
	}
	if l.hist, err = l.fs.OpenFile(filepath.Join(l.dir, "checkpoints"), os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600); err != nil {
		return err
	}
	if err := l.recoverHistory(); err != nil {
		return err
	}
	// The files may be new: make their names durable before anything is synced into them.
	return l.fs.SyncDir(l.dir)
}

// recoverHistory truncates a torn last record of the checkpoint history: one the file ends inside of, as a crash
// during SetCheckpoint's append leaves it. A complete record that fails its checksum is damage, not a torn
// write: it is left for Checkpoints to report, never repaired.
func (l *Log) recoverHistory() error {
	b, err := readFile(l.fs, filepath.Join(l.dir, "checkpoints"))
	if errors.Is(err, fs.ErrNotExist) && l.opts.ReadOnly {
		return nil
	}
	if err != nil {
		return err
	}
	off := 0
	for off < len(b) {
		k, ok := histRecord(b[off:])
		if !ok {
			break
		}
		l.floor = max(l.floor, binary.BigEndian.Uint64(b[off+4:]))
		off += k
	}
	rest := b[off:]
	const maxNote = 1 << 16
	torn := len(rest) > 0 && (len(rest) < 4 || (binary.BigEndian.Uint32(rest) <= maxNote && 16+int(binary.BigEndian.Uint32(rest)) > len(rest)))
	if !torn {
		return nil
	}
	if l.opts.ReadOnly {
		l.histTorn, l.histEnd = true, int64(off)
		return nil
	}
	l.opts.Logger.Warn("truncating torn checkpoint history tail", "log", l.name, "offset", off, "bytes", len(rest))
	if err := l.hist.Truncate(int64(off)); err != nil {
		return err
	}
	return l.hist.Sync()
}

// histRecord reports whether b starts with a whole, undamaged checkpoint history record, and its length.
func histRecord(b []byte) (int, bool) {
	if len(b) < 16 {
		return 0, false
	}
	k := int(binary.BigEndian.Uint32(b))
	if k > len(b)-16 {
		return 0, false
	}
	if crc32.Checksum(b[:12+k], castagnoli) != binary.BigEndian.Uint32(b[12+k:]) {
		return 0, false
	}
	return 16 + k, true
}

func segName(n int) string { return fmt.Sprintf("%08d.seg", n) }

// recover opens the segments and replays every frame after the projections' durable watermark.
func (l *Log) recover() error {
	var st state
	if b, err := readFile(l.fs, filepath.Join(l.dir, "state")); err == nil {
		if err := json.Unmarshal(b, &st); err != nil {
			return fmt.Errorf("%w: state file unreadable", store.ErrCorrupt)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	l.flushed = st
	cpSize, _, err := l.readCheckpoint()
	if err != nil {
		return err
	}
	l.floor = max(l.floor, cpSize, st.Size)
	if st.LastOfType != nil {
		l.lastOfTyp = st.LastOfType
	}
	ents, err := l.fs.ReadDir(filepath.Join(l.dir, "segments"))
	if err != nil {
		return err
	}
	for i, e := range ents {
		if e.Name() != segName(i) {
			return fmt.Errorf("%w: segment %s out of sequence", store.ErrCorrupt, e.Name())
		}
		flag := os.O_RDWR
		if l.opts.ReadOnly {
			flag = os.O_RDONLY
		}
		f, err := l.fs.OpenFile(filepath.Join(l.dir, "segments", e.Name()), flag, 0)
		if err != nil {
			return err
		}
		l.segs = append(l.segs, f)
	}
	if len(l.segs) == 0 {
		if l.opts.ReadOnly {
			if l.floor > 0 {
				return fmt.Errorf("%w: no segments, but %d entries were durable", store.ErrCorrupt, l.floor)
			}
			return nil
		}
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
	if n < l.floor {
		return fmt.Errorf("%w: the segments hold %d entries but %d were durable (covered by a signed checkpoint or the projections' watermark)", store.ErrCorrupt, n, l.floor)
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
			if *n < l.floor {
				// A torn write can only follow every acknowledged batch; this frame holds entries a signed
				// checkpoint covered, so it was acknowledged and is damaged, not torn.
				return 0, fmt.Errorf("%w: segment %d offset %d: %s, in entries from %d that a signed checkpoint of size %d covers", store.ErrCorrupt, seg, off, reason, *n, l.floor)
			}
			if l.opts.ReadOnly {
				l.opts.Logger.Warn("ignoring torn tail", "log", l.name, "segment", seg, "offset", off, "bytes", size-off, "reason", reason)
				return off, nil
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
func (l *Log) validFrameAfter(f File, from, size int64) bool {
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
	if err := l.hashes.Grow(tlog.StoredHashCount(int64(size)) * 32); err != nil {
		return err
	}
	return l.locator.Grow(int64(size) * 8)
}

// project writes hashes and locators for a durable batch and publishes it to readers.
func (l *Log) project(start uint64, entries []store.Entry, hashes []tlog.Hash, locs []uint64) error {
	end := start + uint64(len(entries))
	if err := l.ensureProjections(end); err != nil {
		return err
	}
	hb := tlog.StoredHashCount(int64(start))
	l.pbuf = l.pbuf[:0]
	for _, h := range hashes {
		l.pbuf = append(l.pbuf, h[:]...)
	}
	if _, err := l.hashes.WriteAt(l.pbuf, hb*32); err != nil {
		return fmt.Errorf("project hashes: %w", err)
	}
	l.pbuf = l.pbuf[:0]
	for _, loc := range locs {
		l.pbuf = binary.BigEndian.AppendUint64(l.pbuf, loc)
	}
	if _, err := l.locator.WriteAt(l.pbuf, int64(start)*8); err != nil {
		return fmt.Errorf("project locators: %w", err)
	}
	if cap(l.pbuf) > 1<<20 {
		l.pbuf = nil
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
	f, err := l.fs.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if err := l.fs.SyncDir(filepath.Dir(p)); err != nil {
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
	if l.opts.ReadOnly {
		return errReadOnly
	}
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
			l.failed = err
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
		if err := f.Sync(); err != nil {
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
	if err := l.project(b.Start, b.Entries, b.Hashes, locs); err != nil {
		// The batch is durable but the projections are not in step with it: recovery will replay it.
		l.failed = err
		return err
	}
	return nil
}

func (l *Log) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	n := l.nhash.Load()
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= n {
			return nil, fmt.Errorf("stored hash %d not in log of %d stored hashes", x, n)
		}
		if _, err := l.hashes.ReadAt(out[i][:], x*32); err != nil {
			return nil, fmt.Errorf("read stored hash %d: %w", x, err)
		}
	}
	return out, nil
}

func (l *Log) loc(index uint64) (int, int64, error) {
	var b [8]byte
	if _, err := l.locator.ReadAt(b[:], int64(index)*8); err != nil {
		return 0, 0, fmt.Errorf("read locator %d: %w", index, err)
	}
	v := binary.BigEndian.Uint64(b[:])
	return int(v >> 40), int64(v & (1<<40 - 1)), nil
}

func (l *Log) seg(n int) (File, error) {
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
	l.eraseMu.RLock()
	defer l.eraseMu.RUnlock()
	segn, off, err := l.loc(index)
	if err != nil {
		return nil, err
	}
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
	if l.flushed.Size == st.Size && l.flushed.Segment == st.Segment {
		return nil
	}
	// Projections first, then the watermark that vouches for them.
	if !l.opts.NoSync {
		if err := l.hashes.Sync(); err != nil {
			return err
		}
		if err := l.locator.Sync(); err != nil {
			return err
		}
	}
	b, _ := json.Marshal(st)
	if err := writeFileAtomic(l.fs, filepath.Join(l.dir, "state"), b, 0o600); err != nil {
		return err
	}
	l.flushed = st
	return nil
}

func (l *Log) SetCheckpoint(ctx context.Context, n uint64, note []byte) error {
	if l.opts.ReadOnly {
		return errReadOnly
	}
	l.cpMu.Lock()
	defer l.cpMu.Unlock()
	cp := make([]byte, 0, len(cpMagic)+8+len(note))
	cp = append(cp, cpMagic...)
	cp = binary.BigEndian.AppendUint64(cp, n)
	cp = append(cp, note...)
	if err := writeFileAtomic(l.fs, filepath.Join(l.dir, "checkpoint"), cp, 0o644); err != nil {
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
		if err := l.hist.Sync(); err != nil {
			return fmt.Errorf("sync checkpoint history: %w", err)
		}
	}
	l.lastHist = time.Now()
	return nil
}

func (l *Log) Checkpoint(ctx context.Context) ([]byte, error) {
	_, note, err := l.readCheckpoint()
	return note, err
}

// The latest checkpoint file is cpMagic, the tree size (u64) and the signed note, so that recovery knows how
// far the log must reach without parsing notes. A file without the magic is a bare note of unknown size.
const cpMagic = "\x00cp1"

// readCheckpoint returns the latest checkpoint's tree size (0 if unknown) and note (nil if none).
func (l *Log) readCheckpoint() (uint64, []byte, error) {
	b, err := readFile(l.fs, filepath.Join(l.dir, "checkpoint"))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil, nil
	}
	if err != nil {
		return 0, nil, err
	}
	if rest, ok := bytes.CutPrefix(b, []byte(cpMagic)); ok {
		if len(rest) < 8 {
			return 0, nil, fmt.Errorf("%w: checkpoint file truncated", store.ErrCorrupt)
		}
		return binary.BigEndian.Uint64(rest), rest[8:], nil
	}
	return 0, b, nil
}

func (l *Log) Checkpoints(ctx context.Context, fn func(n uint64, note []byte) error) error {
	b, err := readFile(l.fs, filepath.Join(l.dir, "checkpoints"))
	if errors.Is(err, fs.ErrNotExist) && l.opts.ReadOnly {
		return nil
	}
	if err != nil {
		return err
	}
	if l.histTorn && int64(len(b)) > l.histEnd {
		b = b[:l.histEnd] // read-only: the torn record a writable open would cut
	}
	for len(b) > 0 {
		k, ok := histRecord(b)
		if !ok {
			return fmt.Errorf("%w: checkpoint history record damaged", store.ErrCorrupt)
		}
		if err := fn(binary.BigEndian.Uint64(b[4:]), b[12:k-4]); err != nil {
			return err
		}
		b = b[k:]
	}
	return nil
}

func (l *Log) close() error {
	close(l.stop)
	<-l.stopped
	var err error
	if !l.opts.ReadOnly {
		err = l.flush()
	}
	return errors.Join(err, l.closeFiles())
}

func (l *Log) Close() error { return nil } // logs are closed with their store

func (l *Log) closeFiles() error {
	var errs []error
	for _, f := range l.segs {
		errs = append(errs, f.Close())
	}
	if l.hashes != nil {
		errs = append(errs, l.hashes.Close())
	}
	if l.locator != nil {
		errs = append(errs, l.locator.Close())
	}
	if l.hist != nil {
		errs = append(errs, l.hist.Close())
	}
	return errors.Join(errs...)
}
