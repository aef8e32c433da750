package ledger_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/seal"
	"github.com/cairn-ai/cairn/internal/store"
	"github.com/cairn-ai/cairn/internal/store/local"
)

// gatedStore holds every Append until the test releases it, so the sequencer's queue fills deterministically.
type gatedStore struct {
	store.Store
	gate chan struct{}
}

func (g *gatedStore) Create(ctx context.Context, name string) (store.Log, error) {
	lg, err := g.Store.Create(ctx, name)
	return &gatedLog{lg, g.gate}, err
}

func (g *gatedStore) Open(ctx context.Context, name string) (store.Log, error) {
	lg, err := g.Store.Open(ctx, name)
	return &gatedLog{lg, g.gate}, err
}

type gatedLog struct {
	store.Log
	gate chan struct{}
}

func (g *gatedLog) Append(ctx context.Context, b *store.Batch) error {
	<-g.gate
	return g.Log.Append(ctx, b)
}

func TestPushback(t *testing.T) {
	k := make([]byte, 32)
	rand.Read(k)
	kek, _ := seal.NewKEK(k)
	keys, _ := seal.OpenKeyring(t.TempDir(), kek)
	_, sk, _ := ed25519.GenerateKey(rand.Reader)
	st, _ := local.Open(t.TempDir(), local.Options{})
	gate := make(chan struct{}, 1000)
	gate <- struct{}{} // let the registration through
	l, err := ledger.Open(context.Background(), ledger.Config{Origin: "t", MaxQueue: 10}, &gatedStore{st, gate}, keys, sk)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		close(gate)
		l.Close()
	}()
	if _, _, err := l.Register(context.Background(), []byte(`{"id":"s","name":"n","intended_purpose":"p","provider":"q"}`), "a"); err != nil {
		t.Fatal(err)
	}
	lg, _ := l.Log("s")
	prep := func(n int) []*ledger.Prepared {
		var out []*ledger.Prepared
		for i := 0; i < n; i++ {
			ev, _ := event.Parse(i, []byte(inference("", i)), time.Now(), event.DefaultLimits, false)
			p, err := lg.Prepare(ev, "a")
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, p)
		}
		return out
	}
	// The first request is taken by the sequencer and blocks in the store; the next ones fill the queue.
	results := make(chan error, 3)
	go func() { _, err := lg.Append(context.Background(), prep(6)); results <- err }()
	for lg.QueueLength() != 6 {
		time.Sleep(time.Millisecond)
	}
	go func() { _, err := lg.Append(context.Background(), prep(4)); results <- err }()
	for lg.QueueLength() != 10 {
		time.Sleep(time.Millisecond)
	}
	if _, err := lg.Append(context.Background(), prep(1)); !errors.Is(err, ledger.ErrBusy) {
		t.Fatalf("append to a full queue = %v, want ErrBusy", err)
	}
	gate <- struct{}{}
	gate <- struct{}{}
	for i := 0; i < 2; i++ {
		if err := <-results; err != nil {
			t.Errorf("queued append failed: %v", err)
		}
	}
	if n, _ := lg.Tree(); n != 11 {
		t.Errorf("log has %d entries, want 11 (the refused event must not be stored)", n)
	}
}
