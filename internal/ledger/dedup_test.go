package ledger

import (
	"testing"
	"time"

	"github.com/cairn-ai/cairn/internal/event"
)

func TestDedupExpiry(t *testing.T) {
	lg := &Log{l: &Ledger{cfg: Config{DedupWindow: time.Minute}}, dedup: map[event.UUID]dedupEntry{}}
	t0 := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	for i := 0; i < 5000; i++ {
		lg.remember(event.NewV7(t0.Add(time.Duration(i)*time.Millisecond)), dedupEntry{index: uint64(i)})
	}
	keep := event.NewV7(t0.Add(10 * time.Minute))
	lg.remember(keep, dedupEntry{index: 9})
	lg.expireDedup(t0.Add(2*time.Minute + 10*time.Second)) // ids older than now - window - 1 min expire
	if len(lg.dedup) != 1 {
		t.Fatalf("%d ids remembered after expiry, want 1", len(lg.dedup))
	}
	if _, ok := lg.dedup[keep]; !ok {
		t.Fatalf("an id inside the window was forgotten")
	}
	if live := len(lg.dedupOrder) - lg.dedupHead; live != 1 {
		t.Errorf("%d ids left in the expiry order, want 1", live)
	}
	if len(lg.dedupOrder) > 1024 {
		t.Errorf("expired ids were not compacted away: %d", len(lg.dedupOrder))
	}
}
