package api_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairn-ai/cairn/internal/api"
	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/index"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/seal"
	"github.com/cairn-ai/cairn/internal/store/local"
)

// caughtUp is an index that has indexed the log's single entry.
type caughtUp struct{}

func (caughtUp) Lag(string) (uint64, error)                                 { return 0, nil }
func (caughtUp) Watermark(string) (uint64, error)                           { return 1, nil }
func (caughtUp) Find(context.Context, index.Query) ([]index.Row, error)     { return nil, nil }
func (caughtUp) ByID(context.Context, string, string) (uint64, bool, error) { return 0, false, nil }

// Regression (review): "indexed" counts the access event the query itself appends (and anything ingested meanwhile).
func TestReviewIndexedOverstated(t *testing.T) {
	dir := t.TempDir()
	k := make([]byte, 32)
	rand.Read(k)
	kek, _ := seal.NewKEK(k)
	keys, _ := seal.OpenKeyring(filepath.Join(dir, "keys"), kek)
	_, sk, _ := ed25519.GenerateKey(rand.Reader)
	st, _ := local.Open(dir, local.Options{})
	l, err := ledger.Open(context.Background(), ledger.Config{Origin: "test.example", CheckpointInterval: 5 * time.Millisecond}, st, keys, sk)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	tokens, _ := api.LoadTokens(filepath.Join(dir, "tokens.json"))
	f := &fixture{}
	f.admin, _ = tokens.Create(api.Principal{Name: "root", Roles: []string{api.RoleAdmin}})
	f.auditor, _ = tokens.Create(api.Principal{Name: "aud", Roles: []string{api.RoleAuditor}})
	f.srv = httptest.NewServer(api.New(api.Config{Limits: event.DefaultLimits}, l, tokens, caughtUp{}))
	t.Cleanup(f.srv.Close)
	f.do(t, "POST", "/v1/systems", f.admin, `{"id":"credit","name":"Credit","intended_purpose":"scoring","provider":"Acme"}`, 201)
	// The log holds 1 entry and the index has all of it.
	out := f.do(t, "GET", "/v1/systems/credit/events", f.auditor, "", 200)
	if got := out["indexed"].(float64); got != 1 {
		t.Errorf("indexed = %v, but the index covered 1 entry when it answered", got)
	}
}
