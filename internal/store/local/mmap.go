package local

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
)

// mapped is the OS implementation of Mapped: a file read and written through memory maps, grown a chunk at a
// time. The maps are MAP_SHARED, so writes land in the page cache at once and fsync of the file makes them
// durable. Chunks never move once mapped, so reads and writes take no lock: they load the current list of
// chunks, which Grow replaces with a longer copy.
type mapped struct {
	f      *os.File
	chunk  int64      // bytes per chunk; a multiple of the slot size
	growMu sync.Mutex // serialises Grow and Close
	maps   atomic.Pointer[[][]byte]
}

func openMapped(path string, chunk int64) (*mapped, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	m := &mapped{f: f, chunk: chunk}
	m.maps.Store(&[][]byte{})
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if err := m.Grow(fi.Size()); err != nil {
		f.Close()
		return nil, err
	}
	return m, nil
}

func (m *mapped) Size() int64 { return int64(len(*m.maps.Load())) * m.chunk }

// Grow makes bytes [0, size) addressable.
func (m *mapped) Grow(size int64) error {
	if size <= m.Size() {
		return nil
	}
	m.growMu.Lock()
	defer m.growMu.Unlock()
	maps := *m.maps.Load()
	grown := false
	for int64(len(maps))*m.chunk < size {
		n := int64(len(maps))
		end := (n + 1) * m.chunk
		fi, err := m.f.Stat()
		if err != nil {
			return err
		}
		if fi.Size() < end {
			if err := m.f.Truncate(end); err != nil {
				return fmt.Errorf("grow %s: %w", m.f.Name(), err)
			}
		}
		b, err := syscall.Mmap(int(m.f.Fd()), n*m.chunk, int(m.chunk), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
		if err != nil {
			return fmt.Errorf("map %s: %w", m.f.Name(), err)
		}
		if !grown {
			maps = append([][]byte(nil), maps...) // readers may hold the old list
			grown = true
		}
		maps = append(maps, b)
	}
	m.maps.Store(&maps)
	return nil
}

// at returns the n bytes at off if they lie within one mapped chunk.
func (m *mapped) at(off, n int64) ([]byte, bool) {
	maps := *m.maps.Load()
	c := off / m.chunk
	o := off % m.chunk
	if off < 0 || c >= int64(len(maps)) || o+n > m.chunk {
		return nil, false
	}
	return maps[c][o : o+n : o+n], true
}

func (m *mapped) ReadAt(p []byte, off int64) (int, error) {
	if b, ok := m.at(off, int64(len(p))); ok {
		return copy(p, b), nil
	}
	return m.span(p, off, false)
}

func (m *mapped) WriteAt(p []byte, off int64) (int, error) {
	if b, ok := m.at(off, int64(len(p))); ok {
		return copy(b, p), nil
	}
	return m.span(p, off, true)
}

// span copies a range that crosses chunks.
func (m *mapped) span(p []byte, off int64, write bool) (int, error) {
	done := 0
	for done < len(p) {
		o := off + int64(done)
		n := min(int64(len(p)-done), m.chunk-o%m.chunk)
		b, ok := m.at(o, n)
		if !ok {
			if write {
				return done, fmt.Errorf("write %s at %d: beyond its mapped size %d", m.f.Name(), o, m.Size())
			}
			return done, io.EOF
		}
		if write {
			copy(b, p[done:])
		} else {
			copy(p[done:], b)
		}
		done += int(n)
	}
	return done, nil
}

func (m *mapped) Sync() error { return m.f.Sync() }

// Close unmaps the file; no read or write may follow.
func (m *mapped) Close() error {
	m.growMu.Lock()
	defer m.growMu.Unlock()
	for _, b := range *m.maps.Load() {
		syscall.Munmap(b)
	}
	m.maps.Store(&[][]byte{})
	return m.f.Close()
}
