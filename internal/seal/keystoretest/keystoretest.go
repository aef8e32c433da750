// Package keystoretest is the conformance suite of seal.KeyStore: every implementation (the key directory, the
// PostgreSQL store's table) runs the same tests, so a Keyring behaves alike over either.
package keystoretest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/cairn-ai/cairn/internal/seal"
)

// Run runs the suite. newStore returns a new, empty KeyStore; called twice in a test, it must return two
// handles on the same (empty at the first call of that test) store, as two nodes would hold.
func Run(t *testing.T, newStore func(t *testing.T) (a, b seal.KeyStore)) {
	t.Run("CreateGet", func(t *testing.T) { testCreateGet(t, newStore) })
	t.Run("CreateRace", func(t *testing.T) { testCreateRace(t, newStore) })
	t.Run("Destroy", func(t *testing.T) { testDestroy(t, newStore) })
	t.Run("ListReplace", func(t *testing.T) { testListReplace(t, newStore) })
	t.Run("KeyringNodes", func(t *testing.T) { testKeyringNodes(t, newStore) })
	t.Run("Rewrap", func(t *testing.T) { testRewrap(t, newStore) })
}

func wk(id, kek string) seal.WrappedKey {
	w := make([]byte, 60)
	rand.Read(w)
	return seal.WrappedKey{ID: id, KEK: kek, Wrapped: w}
}

func same(a, b seal.WrappedKey) bool {
	return a.ID == b.ID && a.KEK == b.KEK && bytes.Equal(a.Wrapped, b.Wrapped)
}

func testCreateGet(t *testing.T, newStore func(*testing.T) (seal.KeyStore, seal.KeyStore)) {
	ctx := context.Background()
	ks, other := newStore(t)
	const id = "credit/log/2026-09"
	if _, err := ks.Get(ctx, id); !errors.Is(err, seal.ErrNoKey) {
		t.Fatalf("Get of a missing key = %v, want ErrNoKey", err)
	}
	w := wk(id, "kek-1")
	got, err := ks.Create(ctx, w)
	if err != nil || !same(got, w) {
		t.Fatalf("Create = %+v, %v", got, err)
	}
	if got, err := other.Get(ctx, id); err != nil || !same(got, w) {
		t.Fatalf("Get from the other handle = %+v, %v", got, err)
	}
	// A second Create of the id keeps the first key and answers it.
	if got, err := other.Create(ctx, wk(id, "kek-2")); err != nil || !same(got, w) {
		t.Fatalf("second Create = %+v, %v; want the first key", got, err)
	}
	s := wk("_secrets/dedup", "kek-1")
	if _, err := ks.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	if got, err := ks.Get(ctx, s.ID); err != nil || !same(got, s) {
		t.Fatalf("Get secret = %+v, %v", got, err)
	}
	for _, bad := range []string{"", "credit", "credit/log", "credit/log/2026-13", "Credit/log/2026-09", "../x/2026-09", "_secrets/../x", "a/b/c/d"} {
		if _, err := ks.Create(ctx, wk(bad, "kek-1")); err == nil {
			t.Errorf("Create(%q) succeeded", bad)
		}
		if _, err := ks.Get(ctx, bad); err == nil || errors.Is(err, seal.ErrNoKey) {
			t.Errorf("Get(%q) = %v, want a bad-id error", bad, err)
		}
	}
}

func testCreateRace(t *testing.T, newStore func(*testing.T) (seal.KeyStore, seal.KeyStore)) {
	ctx := context.Background()
	a, b := newStore(t)
	const id = "credit/log/2026-10"
	const n = 8
	got := make([]seal.WrappedKey, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		ks := a
		if i%2 == 1 {
			ks = b
		}
		wg.Go(func() { got[i], errs[i] = ks.Create(ctx, wk(id, "kek-1")) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Create %d: %v", i, errs[i])
		}
		if !same(got[i], got[0]) {
			t.Fatalf("Create %d answered a different key than Create 0: racing creators must agree on one winner", i)
		}
	}
	if w, err := a.Get(ctx, id); err != nil || !same(w, got[0]) {
		t.Fatalf("stored key is not the winner: %v", err)
	}
}

func testDestroy(t *testing.T, newStore func(*testing.T) (seal.KeyStore, seal.KeyStore)) {
	ctx := context.Background()
	ks, other := newStore(t)
	const id = "credit/log/2026-08"
	if _, err := ks.Create(ctx, wk(id, "kek-1")); err != nil {
		t.Fatal(err)
	}
	if err := ks.Destroy(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Get(ctx, id); !errors.Is(err, seal.ErrDestroyed) {
		t.Fatalf("Get after Destroy = %v, want ErrDestroyed", err)
	}
	if _, err := other.Create(ctx, wk(id, "kek-1")); !errors.Is(err, seal.ErrDestroyed) {
		t.Fatalf("Create after Destroy = %v, want ErrDestroyed (a destroyed period is never made again)", err)
	}
	if err := other.Destroy(ctx, id); err != nil {
		t.Fatalf("second Destroy = %v", err)
	}
	// Destroying an id that never existed marks it destroyed too.
	const never = "credit/log/2026-07"
	if err := ks.Destroy(ctx, never); err != nil {
		t.Fatal(err)
	}
	if _, err := ks.Create(ctx, wk(never, "kek-1")); !errors.Is(err, seal.ErrDestroyed) {
		t.Fatalf("Create of a destroyed never-made id = %v, want ErrDestroyed", err)
	}
	n := 0
	if err := ks.List(ctx, func(seal.WrappedKey) error { n++; return nil }); err != nil || n != 0 {
		t.Fatalf("List after Destroy saw %d keys, %v", n, err)
	}
	if err := ks.Replace(ctx, wk(id, "kek-2"), "kek-1"); err == nil {
		t.Fatal("Replace of a destroyed key succeeded")
	}
}

func testListReplace(t *testing.T, newStore func(*testing.T) (seal.KeyStore, seal.KeyStore)) {
	ctx := context.Background()
	ks, other := newStore(t)
	ids := []string{"_secrets/dedup", "credit/hold/2026-09", "credit/log/2026-09", "hiring/log/2026-01"}
	keys := map[string]seal.WrappedKey{}
	for i := len(ids) - 1; i >= 0; i-- {
		w := wk(ids[i], "kek-1")
		keys[w.ID] = w
		if _, err := ks.Create(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	var seen []string
	err := other.List(ctx, func(w seal.WrappedKey) error {
		if !same(w, keys[w.ID]) {
			t.Errorf("List answered %s changed", w.ID)
		}
		seen = append(seen, w.ID)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != len(ids) {
		t.Fatalf("List = %v, want %v", seen, ids)
	}
	for i := range ids {
		if seen[i] != ids[i] {
			t.Fatalf("List = %v, want %v in id order", seen, ids)
		}
	}
	w2 := wk(ids[1], "kek-2")
	if err := other.Replace(ctx, w2, "kek-9"); err == nil {
		t.Fatal("Replace from the wrong KEK succeeded")
	}
	if got, _ := ks.Get(ctx, ids[1]); !same(got, keys[ids[1]]) {
		t.Fatal("a failed Replace changed the key")
	}
	if err := other.Replace(ctx, w2, "kek-1"); err != nil {
		t.Fatal(err)
	}
	if got, _ := ks.Get(ctx, ids[1]); !same(got, w2) {
		t.Fatal("Replace did not store the new wrapping")
	}
	if err := ks.Replace(ctx, wk("credit/log/2020-01", "kek-2"), "kek-1"); err == nil {
		t.Fatal("Replace of a missing key succeeded")
	}
}

func newKEK(t *testing.T) seal.KEK {
	k := make([]byte, 32)
	rand.Read(k)
	kek, err := seal.NewKEK(k)
	if err != nil {
		t.Fatal(err)
	}
	return kek
}

// testKeyringNodes runs two Keyrings over one store, as two nodes: racing to create the same period key and
// secret they end up with one, and a key one destroys is gone for the other.
func testKeyringNodes(t *testing.T, newStore func(*testing.T) (seal.KeyStore, seal.KeyStore)) {
	a, b := newStore(t)
	kek := newKEK(t)
	ka, kb := seal.NewKeyring(a, kek), seal.NewKeyring(b, kek)
	month := time.Date(2026, 9, 14, 0, 0, 0, 0, time.UTC)
	var (
		pa, pb *seal.PeriodKey
		sa, sb []byte
		ea, eb error
		wg     sync.WaitGroup
	)
	wg.Go(func() {
		if pa, ea = ka.Period("credit", "log", month); ea == nil {
			sa, ea = ka.Secret("dedup")
		}
	})
	wg.Go(func() {
		if pb, eb = kb.Period("credit", "log", month); eb == nil {
			sb, eb = kb.Secret("dedup")
		}
	})
	wg.Wait()
	if ea != nil || eb != nil {
		t.Fatal(ea, eb)
	}
	if !bytes.Equal(sa, sb) {
		t.Fatal("the two nodes derived different instance secrets")
	}
	id := []byte("0123456789abcdef")
	sealed, c, err := seal.Seal(nil, pa, id, []byte(`{"subject":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := seal.Open(pb, id, sealed, c.KeyCommit); err != nil {
		t.Fatalf("a payload sealed on one node does not open on the other: %v", err)
	}
	// The wrapped key is not the key: the store never holds it in clear.
	w, err := a.Get(context.Background(), pa.ID)
	if err != nil {
		t.Fatal(err)
	}
	if w.KEK != kek.ID() {
		t.Fatalf("stored key names KEK %q, want %q", w.KEK, kek.ID())
	}
	if err := ka.Destroy(pa.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := ka.Lookup(pa.ID); !errors.Is(err, seal.ErrDestroyed) {
		t.Fatalf("Lookup after Destroy = %v, want ErrDestroyed", err)
	}
	if _, err := ka.Period("credit", "log", month); !errors.Is(err, seal.ErrDestroyed) {
		t.Fatalf("Period after Destroy = %v, want ErrDestroyed", err)
	}
	kb.SetRecheck(0) // the other node's cache: checked at its next use
	if _, err := kb.Lookup(pa.ID); !errors.Is(err, seal.ErrDestroyed) {
		t.Fatalf("other node's Lookup after Destroy = %v, want ErrDestroyed", err)
	}
	if err := ka.Destroy("credit/log"); err == nil {
		t.Fatal("Destroy of a bad id succeeded")
	}
	if err := ka.Destroy("_secrets/dedup"); err == nil {
		t.Fatal("Destroy of an instance secret succeeded")
	}
}

func testRewrap(t *testing.T, newStore func(*testing.T) (seal.KeyStore, seal.KeyStore)) {
	ctx := context.Background()
	a, b := newStore(t)
	old, next := newKEK(t), newKEK(t)
	kr := seal.NewKeyring(a, old)
	pk, err := kr.Period("credit", "log", time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	secret, err := kr.Secret("dedup")
	if err != nil {
		t.Fatal(err)
	}
	if err := kr.Destroy("credit/log/2026-01"); err != nil {
		t.Fatal(err)
	}
	id := []byte("0123456789abcdef")
	sealed, c, _ := seal.Seal(nil, pk, id, []byte("x"))
	if err := seal.CheckRewrapStore(ctx, b, newKEK(t), next); err == nil {
		t.Fatal("rewrap check with a wrong old KEK passed")
	}
	if n, err := seal.RewrapStore(ctx, b, old, next); err != nil || n != 2 {
		t.Fatalf("RewrapStore = %d, %v; want 2", n, err)
	}
	if n, err := seal.RewrapStore(ctx, b, old, next); err != nil || n != 0 {
		t.Fatalf("second RewrapStore = %d, %v; want 0", n, err)
	}
	if ok, err := seal.WrapsAny(ctx, a, old.ID()); err != nil || ok {
		t.Fatalf("old KEK still wraps a key: %v, %v", ok, err)
	}
	kn := seal.NewKeyring(a, next)
	pk2, err := kn.Lookup(pk.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := seal.Open(pk2, id, sealed, c.KeyCommit); err != nil {
		t.Fatalf("payload does not open after rotation: %v", err)
	}
	if s2, err := kn.Secret("dedup"); err != nil || !bytes.Equal(s2, secret) {
		t.Fatalf("secret changed by rotation: %v", err)
	}
	if _, err := seal.NewKeyring(a, old).Lookup(pk.ID); !errors.Is(err, seal.ErrOpen) {
		t.Fatalf("old KEK still opens the period key: %v", err)
	}
	if _, err := kn.Lookup("credit/log/2026-01"); !errors.Is(err, seal.ErrDestroyed) {
		t.Fatalf("a destroyed key came back with rotation: %v", err)
	}
}
