package verify

import (
	"context"
	"testing"

	"github.com/cairn-ai/cairn/internal/store"
)

// stripLog wraps a store log and hides one entry's envelope, as a tamperer rewriting the segment would.
type stripLog struct {
	store.Log
	hide uint64
}

func (s stripLog) Entries(ctx context.Context, a, b uint64, fn func(*store.Entry) error) error {
	return s.Log.Entries(ctx, a, b, func(e *store.Entry) error {
		if e.Index == s.hide {
			c := *e
			c.Envelope, c.Sealed = nil, nil
			return fn(&c)
		}
		return fn(e)
	})
}

// Regression (review): an entry whose envelope is gone, with no retention event covering it, verifies clean.
func TestReviewMissingEnvelopeWithoutRetentionPasses(t *testing.T) {
	tl := newTestLog(t)
	tl.append(t, 5)
	rep := &Report{Logs: map[string]LogState{}}
	verifyLog(context.Background(), "sys", stripLog{tl.lg, 2}, Options{VKey: func(string) string { return tl.vkey }}, LogState{}, false, rep)
	if rep.OK() {
		t.Errorf("an inference whose envelope vanished (no retention event) verified OK")
	}
}
