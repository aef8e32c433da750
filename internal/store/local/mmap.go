package local

import (
	"fmt"
	"os"
	"sync"
	"syscall"
)

// mapped is a file of fixed-size slots read and written through memory maps, grown a chunk at a time. The
// maps are MAP_SHARED, so writes land in the page cache at once and fdatasync of the file makes them durable.
type mapped struct {
	f     *os.File
	chunk int64 // bytes per chunk; a multiple of the slot size
	mu    sync.RWMutex
	maps  [][]byte
}

func openMapped(path string, chunk int64) (*mapped, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	m := &mapped{f: f, chunk: chunk}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if err := m.ensure(fi.Size()); err != nil {
		f.Close()
		return nil, err
	}
	return m, nil
}

// ensure makes bytes [0, size) addressable.
func (m *mapped) ensure(size int64) error {
	m.mu.RLock()
	have := int64(len(m.maps)) * m.chunk
	m.mu.RUnlock()
	if size <= have {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for int64(len(m.maps))*m.chunk < size {
		n := int64(len(m.maps))
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
		m.maps = append(m.maps, b)
	}
	return nil
}

// at returns the n bytes at off; they must lie within one chunk and within an ensured range.
func (m *mapped) at(off, n int64) []byte {
	m.mu.RLock()
	c := m.maps[off/m.chunk]
	m.mu.RUnlock()
	o := off % m.chunk
	return c[o : o+n : o+n]
}

func (m *mapped) sync() error { return m.f.Sync() }

func (m *mapped) close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, b := range m.maps {
		syscall.Munmap(b)
	}
	m.maps = nil
	return m.f.Close()
}
