package bench

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// DiskUsage is what a log occupies on disk (allocated blocks, as du counts them) against the bytes of client
// JSON it was given.
type DiskUsage struct {
	Events      uint64 `json:"events"`
	ClientJSON  int64  `json:"client_json_bytes"`
	Segments    int64  `json:"segments_bytes"`    // the append-only segment files: the source of truth
	Projections int64  `json:"projections_bytes"` // stored hashes, locator, state
	Checkpoints int64  `json:"checkpoints_bytes"` // latest checkpoint and history
	Index       int64  `json:"index_bytes"`       // the SQLite query index (shared by all systems)
	Keys        int64  `json:"keys_bytes"`
	// Ratios to client JSON.
	SegmentsRatio float64 `json:"segments_ratio"`
	LogRatio      float64 `json:"log_ratio"`        // segments + projections + checkpoints
	WithIndex     float64 `json:"with_index_ratio"` // everything in the data directory
}

// allocated is a file's allocated size (st_blocks × 512).
func allocated(fi fs.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return fi.Size()
}

// MeasureDisk measures env's data directory; the ledger should be closed so the projections are flushed.
// events is the log's size and clientJSON the bytes of client JSON behind its events.
func MeasureDisk(env *Env, events uint64, clientJSON int64) DiskUsage {
	d := DiskUsage{Events: events, ClientJSON: clientJSON}
	logDir := env.LogDir()
	filepath.WalkDir(env.DataDir(), func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return nil
		}
		fi, err := de.Info()
		if err != nil {
			return nil
		}
		sz := allocated(fi)
		rel, _ := filepath.Rel(logDir, p)
		name := de.Name()
		switch {
		case strings.HasPrefix(name, "index.db"):
			d.Index += sz
		case strings.Contains(p, string(os.PathSeparator)+"keys"+string(os.PathSeparator)):
			d.Keys += sz
		case strings.HasPrefix(rel, "segments"+string(os.PathSeparator)):
			d.Segments += sz
		case rel == "checkpoint" || rel == "checkpoints":
			d.Checkpoints += sz
		case !strings.HasPrefix(rel, ".."):
			d.Projections += sz
		}
		return nil
	})
	if clientJSON > 0 {
		c := float64(clientJSON)
		d.SegmentsRatio = float64(d.Segments) / c
		d.LogRatio = float64(d.Segments+d.Projections+d.Checkpoints) / c
		d.WithIndex = float64(d.Segments+d.Projections+d.Checkpoints+d.Index+d.Keys) / c
	}
	return d
}
