package proxy

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cairn-ai/cairn/internal/atomicfile"
)

// Spool is a local append-only queue of events on disk, read back in the order written. Records are framed
// (length, CRC-32C) in numbered segment files; a cursor file says how far the records were delivered. A record
// is in the file (the page cache) when Put returns, so a crash of the process loses nothing; it is fsync'd by a
// background syncer within the sync interval, or before Put returns when asked to wait.
//
// Events hold personal data before the ledger pseudonymises and seals them, so every record is encrypted
// (AES-256-GCM under the spool key, random nonce); nothing personal reaches the disk in clear.
type Spool struct {
	aead     cipher.AEAD
	dir      string
	maxSeg   int64
	interval time.Duration

	mu      sync.Mutex
	w       *os.File
	wgen    uint64
	wsize   int64
	written uint64 // records put
	synced  uint64 // records known durable
	cond    *sync.Cond
	wake    chan struct{} // a record was put
	closed  bool
	syncErr error

	// reader state, used by one reader only
	rgen uint64
	roff int64
	rf   *os.File

	quit chan struct{}
	done chan struct{}
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

const spoolHeader = 8

// OpenSpool opens (creating) a spool directory whose records are encrypted under key (32 bytes), cuts a torn
// tail off its newest segment and starts the syncer.
func OpenSpool(dir string, key []byte, syncInterval time.Duration) (*Spool, error) {
	if syncInterval <= 0 {
		syncInterval = 10 * time.Millisecond
	}
	if len(key) != 32 {
		return nil, errors.New("spool key must be 32 bytes")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	s := &Spool{aead: aead, dir: dir, maxSeg: 64 << 20, interval: syncInterval, wake: make(chan struct{}, 1),
		quit: make(chan struct{}), done: make(chan struct{})}
	s.cond = sync.NewCond(&s.mu)
	gens, err := s.segments()
	if err != nil {
		return nil, err
	}
	if b, err := os.ReadFile(filepath.Join(dir, "cursor")); err == nil {
		var c struct {
			Gen uint64 `json:"gen"`
			Off int64  `json:"off"`
		}
		if err := json.Unmarshal(b, &c); err != nil {
			return nil, fmt.Errorf("spool cursor: %w", err)
		}
		s.rgen, s.roff = c.Gen, c.Off
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	} else if len(gens) > 0 {
		s.rgen = gens[0]
	}
	if len(gens) > 0 {
		s.wgen = gens[len(gens)-1]
	} else {
		s.wgen = s.rgen
	}
	if s.wgen < s.rgen {
		s.wgen = s.rgen
	}
	f, err := os.OpenFile(s.segPath(s.wgen), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	good, err := scanValid(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Truncate(good); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	s.w, s.wsize = f, good
	go s.syncer()
	return s, nil
}

func (s *Spool) segPath(gen uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%016d.spool", gen))
}

func (s *Spool) segments() ([]uint64, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	var out []uint64
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), ".spool"); ok {
			if g, err := strconv.ParseUint(n, 10, 64); err == nil {
				out = append(out, g)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

// scanValid returns the length of the prefix of f made of whole records with good checksums.
func scanValid(f *os.File) (int64, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return 0, err
	}
	var off int64
	for {
		_, n := frame(data[off:])
		if n == 0 {
			return off, nil
		}
		off += int64(n)
	}
}

// frame returns the first whole, intact record of b and its framed length, or 0 when there is none.
func frame(b []byte) ([]byte, int) {
	if len(b) < spoolHeader {
		return nil, 0
	}
	n := binary.LittleEndian.Uint32(b)
	if uint64(n) > uint64(len(b)-spoolHeader) {
		return nil, 0
	}
	rec := b[spoolHeader : spoolHeader+int(n)]
	if crc32.Checksum(rec, crcTable) != binary.LittleEndian.Uint32(b[4:]) {
		return nil, 0
	}
	return rec, spoolHeader + int(n)
}

// Put appends a record. With wait it returns only once the record is fsync'd.
func (s *Spool) Put(rec []byte, wait bool) error {
	ns := s.aead.NonceSize()
	buf := make([]byte, spoolHeader+ns, spoolHeader+ns+len(rec)+s.aead.Overhead())
	rand.Read(buf[spoolHeader : spoolHeader+ns])
	buf = s.aead.Seal(buf, buf[spoolHeader:spoolHeader+ns], rec, nil)
	body := buf[spoolHeader:]
	binary.LittleEndian.PutUint32(buf, uint32(len(body)))
	binary.LittleEndian.PutUint32(buf[4:], crc32.Checksum(body, crcTable))
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errors.New("spool is closed")
	}
	if s.syncErr != nil {
		err := s.syncErr
		s.mu.Unlock()
		return err
	}
	if s.wsize >= s.maxSeg {
		if err := s.rotate(); err != nil {
			s.mu.Unlock()
			return err
		}
	}
	if _, err := s.w.Write(buf); err != nil {
		// Cut what may have been written partly, so the next record starts on a frame boundary.
		s.w.Truncate(s.wsize)
		s.w.Seek(s.wsize, io.SeekStart)
		s.mu.Unlock()
		return fmt.Errorf("spool write: %w", err)
	}
	s.wsize += int64(len(buf))
	s.written++
	seq := s.written
	if wait {
		for s.synced < seq && s.syncErr == nil && !s.closed {
			s.cond.Wait()
		}
	}
	err := s.syncErr
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return err
}

// rotate starts a new segment; the old one is fsync'd first. s.mu is held.
func (s *Spool) rotate() error {
	if err := s.w.Sync(); err != nil {
		return err
	}
	s.w.Close()
	f, err := os.OpenFile(s.segPath(s.wgen+1), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	s.w, s.wgen, s.wsize = f, s.wgen+1, 0
	return nil
}

func (s *Spool) syncer() {
	defer close(s.done)
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			s.syncNow()
			return
		case <-t.C:
			s.syncNow()
		}
	}
}

func (s *Spool) syncNow() {
	s.mu.Lock()
	if s.synced == s.written {
		s.mu.Unlock()
		return
	}
	w, target := s.w, s.written
	s.mu.Unlock()
	err := w.Sync()
	s.mu.Lock()
	if err != nil && s.syncErr == nil {
		s.syncErr = fmt.Errorf("spool fsync: %w", err)
	}
	// A rotation in between fsync'd the older segment itself.
	if target > s.synced {
		s.synced = target
	}
	s.cond.Broadcast()
	s.mu.Unlock()
}

// Wake returns a channel that receives after records are put.
func (s *Spool) Wake() <-chan struct{} { return s.wake }

// Pos is a position in the spool: a segment and an offset in it.
type Pos struct {
	Gen uint64 `json:"gen"`
	Off int64  `json:"off"`
}

// Next reads up to max records after the cursor, with the position just past them. It never returns a record
// that is being written.
func (s *Spool) Next(max int) ([][]byte, Pos, error) {
	s.mu.Lock()
	wgen, wsize := s.wgen, s.wsize
	s.mu.Unlock()
	for {
		end := wsize
		if s.rgen < wgen {
			st, err := os.Stat(s.segPath(s.rgen))
			if errors.Is(err, os.ErrNotExist) {
				s.setCursor(s.rgen+1, 0)
				continue
			}
			if err != nil {
				return nil, Pos{}, err
			}
			end = st.Size()
		}
		if s.roff >= end {
			if s.rgen < wgen {
				// This segment is delivered: move on and delete it.
				old := s.rgen
				if err := s.Ack(Pos{Gen: old + 1}); err != nil {
					return nil, Pos{}, err
				}
				if s.rf != nil {
					s.rf.Close()
					s.rf = nil
				}
				os.Remove(s.segPath(old))
				continue
			}
			return nil, Pos{Gen: s.rgen, Off: s.roff}, nil
		}
		if s.rf == nil || s.rf.Name() != s.segPath(s.rgen) {
			if s.rf != nil {
				s.rf.Close()
			}
			f, err := os.Open(s.segPath(s.rgen))
			if err != nil {
				return nil, Pos{}, err
			}
			s.rf = f
		}
		n := end - s.roff
		if n > 8<<20 {
			n = 8 << 20
		}
		buf := make([]byte, n)
		if _, err := s.rf.ReadAt(buf, s.roff); err != nil && err != io.EOF {
			return nil, Pos{}, err
		}
		var out [][]byte
		off := 0
		ns := s.aead.NonceSize()
		for len(out) < max {
			rec, k := frame(buf[off:])
			if k == 0 {
				break
			}
			if len(rec) < ns {
				return nil, Pos{}, fmt.Errorf("spool record at %d:%d is too short", s.rgen, s.roff+int64(off))
			}
			pt, err := s.aead.Open(nil, rec[:ns], rec[ns:], nil)
			if err != nil {
				return nil, Pos{}, fmt.Errorf("spool record at %d:%d does not decrypt under the spool key", s.rgen, s.roff+int64(off))
			}
			out = append(out, pt)
			off += k
		}
		if len(out) == 0 {
			if n < 8<<20 {
				return nil, Pos{}, fmt.Errorf("spool segment %d is damaged at offset %d", s.rgen, s.roff)
			}
			return nil, Pos{}, fmt.Errorf("spool record at %d:%d is larger than 8 MiB", s.rgen, s.roff)
		}
		return out, Pos{Gen: s.rgen, Off: s.roff + int64(off)}, nil
	}
}

// Ack records durably that every record before p was delivered.
func (s *Spool) Ack(p Pos) error {
	b, _ := json.Marshal(p)
	if err := atomicfile.Write(filepath.Join(s.dir, "cursor"), b, 0o600); err != nil {
		return fmt.Errorf("spool cursor: %w", err)
	}
	s.setCursor(p.Gen, p.Off)
	return nil
}

func (s *Spool) setCursor(gen uint64, off int64) {
	s.mu.Lock()
	s.rgen, s.roff = gen, off
	s.mu.Unlock()
}

// Backlog reports whether records wait for delivery.
func (s *Spool) Backlog() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rgen < s.wgen || s.roff < s.wsize
}

// Close fsyncs and closes the spool.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	close(s.quit)
	<-s.done
	s.mu.Lock()
	s.closed = true
	s.cond.Broadcast()
	err := s.w.Close()
	if s.rf != nil {
		s.rf.Close()
	}
	s.mu.Unlock()
	return err
}
