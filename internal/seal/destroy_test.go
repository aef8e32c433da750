package seal_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-ai/cairn/internal/seal"
)

// TestDestroy: a destroyed period key is gone from disk (a tombstone remains) and from the cache; what it sealed no longer opens, not
// even through a fresh keyring with the same KEK; destroying it again is not an error; other keys are untouched.
func TestDestroy(t *testing.T) {
	dir := t.TempDir()
	kek, err := seal.NewKEK(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	kr, _ := seal.OpenKeyring(dir, kek)
	jan := time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC)
	pk, err := kr.Period("sys", "log", jan)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := kr.Period("sys", "log", jan.AddDate(0, 1, 0))
	id := []byte("event-1")
	sealed, c, err := seal.Seal(nil, pk, id, []byte("personal"))
	if err != nil {
		t.Fatal(err)
	}
	if err := kr.Destroy(pk.ID); err != nil {
		t.Fatal(err)
	}
	// What stays on disk is a tombstone, so the month's key is never made again; it holds no key material.
	if b, err := os.ReadFile(filepath.Join(dir, "sys", "log", "2026-01.key")); err != nil || strings.Contains(string(b), `"wrapped"`) {
		t.Errorf("key file after Destroy: %s (%v)", b, err)
	}
	if _, err := kr.Lookup(pk.ID); !errors.Is(err, seal.ErrDestroyed) {
		t.Errorf("Lookup after Destroy = %v, want ErrDestroyed", err)
	}
	kr2, _ := seal.OpenKeyring(dir, kek)
	if _, err := kr2.Lookup(pk.ID); !errors.Is(err, seal.ErrDestroyed) {
		t.Errorf("a fresh keyring with the same KEK finds the destroyed key: %v", err)
	}
	if k, err := kr2.Lookup(other.ID); err != nil {
		t.Errorf("another month's key is gone: %v", err)
	} else if _, err := seal.Open(k, id, sealed, c.KeyCommit); err == nil {
		t.Errorf("another month's key opens the destroyed month's payload")
	}
	if err := kr.Destroy(pk.ID); err != nil {
		t.Errorf("destroying a destroyed key: %v", err)
	}
	if err := kr.Destroy("../escape"); err == nil {
		t.Errorf("Destroy accepted a bad id")
	}
	if got := seal.HoldKeyID(pk.ID); got != "sys/hold-log/2026-01" {
		t.Errorf("HoldKeyID = %q", got)
	}
	if got := seal.HoldKeyID("sys/hold-log/2026-01"); got != "" {
		t.Errorf("HoldKeyID of a hold key = %q, want none", got)
	}
}
