package seal

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func testKeyring(t *testing.T) (*Keyring, string, *FileKEK) {
	t.Helper()
	k := make([]byte, 32)
	rand.Read(k)
	kek, err := NewKEK(k)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kr, err := OpenKeyring(dir, kek)
	if err != nil {
		t.Fatal(err)
	}
	return kr, dir, kek
}

var eventID = []byte("0123456789abcdef")

func TestSealOpen(t *testing.T) {
	kr, dir, kek := testKeyring(t)
	pk, err := kr.Period("credit", "log", time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	if pk.ID != "credit/log/2026-11" {
		t.Errorf("period id = %s", pk.ID)
	}
	pt := []byte(`{"subject":"Jane Roe","output":1}`)
	sealed, c, err := Seal(nil, pk, eventID, pt)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("Jane")) {
		t.Fatal("plaintext visible in the sealed form")
	}
	if err := Check(sealed, c); err != nil {
		t.Fatalf("Check: %v", err)
	}
	got, err := Open(pk, eventID, sealed, c.KeyCommit)
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("Open = %q, %v", got, err)
	}
	// Two seals of the same plaintext differ (fresh key per event).
	sealed2, c2, _ := Seal(nil, pk, eventID, pt)
	if bytes.Equal(sealed, sealed2) || c.Digest == c2.Digest || c.KeyCommit == c2.KeyCommit {
		t.Errorf("sealing is deterministic")
	}
	// The key survives a reopen of the keyring from disk.
	kr2, _ := OpenKeyring(dir, kek)
	pk2, err := kr2.Lookup("credit/log/2026-11")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(pk2, eventID, sealed, c.KeyCommit); err != nil {
		t.Errorf("Open after reopen: %v", err)
	}

	// Negative cases: each must fail to open.
	other, _ := kr.Period("credit", "log", time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	flip := func(i int) []byte { b := bytes.Clone(sealed); b[i] ^= 1; return b }
	for name, f := range map[string]func() error{
		"wrong period key":    func() error { _, err := Open(other, eventID, sealed, c.KeyCommit); return err },
		"wrong event id":      func() error { _, err := Open(pk, []byte("fedcba9876543210"), sealed, c.KeyCommit); return err },
		"flipped wrapped key": func() error { _, err := Open(pk, eventID, flip(20), c.KeyCommit); return err },
		"flipped ciphertext":  func() error { _, err := Open(pk, eventID, flip(len(sealed)-20), c.KeyCommit); return err },
		"flipped tag":         func() error { _, err := Open(pk, eventID, flip(len(sealed)-1), c.KeyCommit); return err },
		"wrong key commit":    func() error { _, err := Open(pk, eventID, sealed, c2.KeyCommit); return err },
		"truncated":           func() error { _, err := Open(pk, eventID, sealed[:40], c.KeyCommit); return err },
	} {
		if err := f(); err == nil {
			t.Errorf("%s: opened", name)
		}
	}
	if err := Check(flip(len(sealed)-20), c); err == nil {
		t.Errorf("Check accepted an altered ciphertext")
	}
	if err := Check(sealed2, c); err == nil {
		t.Errorf("Check accepted another event's valid payload")
	}
}

func TestRewrapKeepsCommitment(t *testing.T) {
	kr, _, _ := testKeyring(t)
	from, _ := kr.Period("s", "log", time.Now())
	hold, _ := kr.Period("s", "hold", time.Now())
	sealed, c, _ := Seal(nil, from, eventID, []byte("payload"))
	moved, err := Rewrap(from, hold, eventID, sealed)
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(moved, c); err != nil {
		t.Errorf("re-wrapping changed the commitment: %v", err)
	}
	if _, err := Open(hold, eventID, moved, c.KeyCommit); err != nil {
		t.Errorf("open under the hold key: %v", err)
	}
	if _, err := Open(from, eventID, moved, c.KeyCommit); err == nil {
		t.Errorf("the old period key still opens a re-wrapped payload")
	}
}

func TestKEKFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "kek")
	k1, created, err := LoadKEK(p, true)
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("KEK file mode %v", fi.Mode().Perm())
	}
	k2, created, err := LoadKEK(p, true)
	if err != nil || created || k1.ID() != k2.ID() {
		t.Fatalf("reload: %v %v %s %s", created, err, k1.ID(), k2.ID())
	}
	w, _ := k1.Wrap([]byte("id"), []byte("secret"))
	if _, err := k2.Unwrap([]byte("id"), w); err != nil {
		t.Errorf("unwrap with the reloaded KEK: %v", err)
	}
	if _, err := k2.Unwrap([]byte("other id"), w); !errors.Is(err, ErrOpen) {
		t.Errorf("unwrap under another id: %v", err)
	}
	other, _ := NewKEK(make([]byte, 32))
	if _, err := other.Unwrap([]byte("id"), w); err == nil {
		t.Errorf("another KEK unwrapped the key")
	}
	os.WriteFile(p, []byte("not base64!\n"), 0o600)
	if _, _, err := LoadKEK(p, false); err == nil {
		t.Errorf("a damaged KEK file loaded")
	}
	if _, _, err := LoadKEK(filepath.Join(t.TempDir(), "missing"), false); err == nil {
		t.Errorf("a missing KEK loaded without create")
	}
}

func TestKeyringRejectsBadIDs(t *testing.T) {
	kr, _, _ := testKeyring(t)
	for _, id := range []string{"", "a/b", "../x/log/2026-11", "s/log/2026-13", "S/log/2026-11", "s/log/2026-11/x"} {
		if _, err := kr.Lookup(id); err == nil {
			t.Errorf("Lookup(%q) succeeded", id)
		}
	}
	if _, err := kr.Lookup("s/log/2020-01"); !errors.Is(err, ErrDestroyed) {
		t.Errorf("a missing period key: %v, want ErrDestroyed", err)
	}
}

func TestSecretStable(t *testing.T) {
	kr, dir, kek := testKeyring(t)
	a, err := kr.Secret("dedup")
	if err != nil {
		t.Fatal(err)
	}
	kr2, _ := OpenKeyring(dir, kek)
	b, _ := kr2.Secret("dedup")
	if !bytes.Equal(a, b) || len(a) != 32 {
		t.Errorf("secret changed across a reopen")
	}
	if raw, _ := os.ReadFile(filepath.Join(dir, "_secrets", "dedup.key")); bytes.Contains(raw, []byte(hex.EncodeToString(a))) {
		t.Errorf("secret stored in clear")
	}
}

// TestGolden opens a payload sealed by an earlier build, with its KEK and period key file committed under
// testdata: the sealed format and the key files must stay readable.
func TestGolden(t *testing.T) {
	kek, _, err := LoadKEK("testdata/golden/kek", false)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := OpenKeyring("testdata/golden/keys", kek)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := kr.Lookup("credit/log/2026-11")
	if err != nil {
		t.Fatal(err)
	}
	sealed, _ := os.ReadFile("testdata/golden/sealed.bin")
	kc, _ := os.ReadFile("testdata/golden/keycommit.hex")
	var commit [32]byte
	hex.Decode(commit[:], bytes.TrimSpace(kc))
	pt, err := Open(pk, eventID, sealed, commit)
	if err != nil || string(pt) != `{"output":{"score":712},"subject":"applicant-17"}` {
		t.Fatalf("golden payload: %q, %v", pt, err)
	}
	// Cross-checked outside Go: sha256(b"cairn/v1/data-key-commitment\x00" + bytes(32)).
	if got := KeyCommitment(make([]byte, 32)); hex.EncodeToString(got[:]) != "55b3093a9f238dd3d70b4c1619b32c14ba37a7e4e220e07f5623d96e14567fb3" {
		t.Errorf("KeyCommitment of the zero key = %x", got)
	}
}
