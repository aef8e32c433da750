package client_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/cairn-ai/cairn/client"
	"github.com/cairn-ai/cairn/internal/api"
	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/seal"
	"github.com/cairn-ai/cairn/internal/store/local"
)

func server(t *testing.T) (*client.Client, string) {
	dir := t.TempDir()
	k := make([]byte, 32)
	rand.Read(k)
	kek, _ := seal.NewKEK(k)
	keys, _ := seal.OpenKeyring(filepath.Join(dir, "keys"), kek)
	_, sk, _ := ed25519.GenerateKey(rand.Reader)
	st, _ := local.Open(dir, local.Options{})
	l, err := ledger.Open(context.Background(), ledger.Config{Origin: "client.test", CheckpointInterval: 2 * time.Millisecond}, st, keys, sk)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	tokens, _ := api.LoadTokens(filepath.Join(dir, "tokens.json"))
	tok, _ := tokens.Create(api.Principal{Name: "admin", Roles: []string{api.RoleAdmin}})
	srv := httptest.NewServer(api.New(api.Config{}, l, tokens, nil))
	t.Cleanup(srv.Close)
	c := client.New(srv.URL, tok)
	if _, err := c.ApplySystem(context.Background(), []byte(`{"id":"s","name":"n","intended_purpose":"p","provider":"q"}`)); err != nil {
		t.Fatal(err)
	}
	return c, l.VerifierKey("s")
}

func TestAppendGetVerify(t *testing.T) {
	c, vkey := server(t)
	ctx := context.Background()
	// The vkey the server serves is the one the ledger signs with (in real use it comes out of band).
	if got, _ := c.VKey(ctx, "s"); got != vkey {
		t.Fatalf("served vkey %q, want %q", got, vkey)
	}
	id := event.NewV7(time.Now()).String()
	ev := client.Event{ID: id, Type: "inference", Model: &client.Model{Name: "m", Version: "1"},
		Attrs: map[string]any{"confidence": 0.7}, Payload: map[string]any{"output": "approve"}}
	rs, err := c.Append(ctx, "s", []client.Event{ev})
	if err != nil || len(rs) != 1 || rs[0].ID != id {
		t.Fatalf("Append = %+v, %v", rs, err)
	}
	again, err := c.Append(ctx, "s", []client.Event{ev})
	if err != nil || !again[0].Duplicate || again[0].Index != rs[0].Index {
		t.Errorf("retry = %+v, %v", again, err)
	}
	ev.Payload["output"] = "deny"
	_, err = c.Append(ctx, "s", []client.Event{ev})
	var p *client.Problem
	if !errors.As(err, &p) || p.Status != 409 {
		t.Errorf("conflicting retry = %v, want a 409 problem", err)
	}
	old := waitCheckpoint(t, c, vkey, rs[0].Index+1)
	rec, err := c.Get(ctx, "s", rs[0].Index, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.VerifyEvent(rec, vkey); err != nil {
		t.Errorf("VerifyEvent: %v", err)
	}
	bad := *rec
	bad.Leaf = bad.Leaf[:len(bad.Leaf)-2] + "2}"
	if _, err := client.VerifyEvent(&bad, vkey); err == nil {
		t.Errorf("an altered leaf verified")
	}
	for i := 0; i < 300; i++ {
		c.Append(ctx, "s", []client.Event{{Type: "inference", Model: &client.Model{Name: "m", Version: "1"}, Payload: map[string]any{"output": i}}})
	}
	cur := waitCheckpoint(t, c, vkey, old.Size+300)
	if err := c.Consistency(ctx, "s", old, cur); err != nil {
		t.Errorf("Consistency: %v", err)
	}
	forged := old
	forged.Root[0] ^= 1
	if err := c.Consistency(ctx, "s", forged, cur); err == nil {
		t.Errorf("consistency with a forged old root verified")
	}
	// Tiles fetched through the client verify against the checkpoint.
	thr := tlog.TileHashReader(tlog.Tree{N: int64(cur.Size), Hash: cur.Root}, &client.TileReader{C: c, System: "s"})
	leaves, err := c.EntryBundle(ctx, "s", 0, 256)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := thr.ReadHashes([]int64{tlog.StoredHashIndex(0, 255)})
	if err != nil || hs[0] != tlog.RecordHash(leaves[255]) {
		t.Errorf("leaf 255 does not match the verified tiles: %v", err)
	}
}

// waitCheckpoint polls until a verified checkpoint covers size entries.
func waitCheckpoint(t *testing.T, c *client.Client, vkey string, size uint64) ledger.Checkpoint {
	t.Helper()
	var last error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		cp, _, err := c.Checkpoint(context.Background(), "s", vkey)
		if err == nil && cp.Size >= size {
			return cp
		}
		last = err
	}
	t.Fatalf("no checkpoint of size %d: %v", size, last)
	return ledger.Checkpoint{}
}
