package seal

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"
)

func newTestKEK(t *testing.T) *FileKEK {
	t.Helper()
	k := make([]byte, 32)
	rand.Read(k)
	kek, err := NewKEK(k)
	if err != nil {
		t.Fatal(err)
	}
	return kek
}

type sealedFixture struct {
	period string
	sealed []byte
	commit Commitment
	plain  []byte
}

// rotationFixture fills a keyring with several period keys and secrets and seals one payload per period.
func rotationFixture(t *testing.T) (dir string, old *FileKEK, secrets map[string][]byte, fx []sealedFixture) {
	t.Helper()
	kr, dir, old := testKeyring(t)
	secrets = map[string][]byte{}
	for _, name := range []string{"dedup", "pseudo-0123"} {
		s, err := kr.Secret(name)
		if err != nil {
			t.Fatal(err)
		}
		secrets[name] = append([]byte(nil), s...)
	}
	for i, p := range []struct{ sys, class string }{{"credit", "log"}, {"credit", "hold"}, {"hiring", "log"}} {
		pk, err := kr.Period(p.sys, p.class, time.Date(2026, time.Month(9+i), 3, 0, 0, 0, 0, time.UTC))
		if err != nil {
			t.Fatal(err)
		}
		pt := []byte(`{"subject":"applicant-` + p.sys + `"}`)
		sealed, c, err := Seal(nil, pk, eventID, pt)
		if err != nil {
			t.Fatal(err)
		}
		fx = append(fx, sealedFixture{period: pk.ID, sealed: sealed, commit: c, plain: pt})
	}
	return dir, old, secrets, fx
}

// snapshot returns the content of every file under dir.
func snapshot(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	m := map[string][]byte{}
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if !d.IsDir() {
			b, _ := os.ReadFile(p)
			m[p] = b
		}
		return nil
	})
	return m
}

func keyFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for p := range snapshot(t, dir) {
		if filepath.Ext(p) == ".key" {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

// checkOpens opens every period key and secret with a fresh keyring under kek alone.
func checkOpens(t *testing.T, dir string, kek KEK, secrets map[string][]byte, fx []sealedFixture) {
	t.Helper()
	kr, err := OpenKeyring(dir, kek)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fx {
		pk, err := kr.Lookup(f.period)
		if err != nil {
			t.Fatalf("lookup %s: %v", f.period, err)
		}
		got, err := Open(pk, eventID, f.sealed, f.commit.KeyCommit)
		if err != nil || !bytes.Equal(got, f.plain) {
			t.Fatalf("open payload of %s = %q, %v", f.period, got, err)
		}
	}
	for name, want := range secrets {
		got, err := kr.Secret(name)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("secret %s changed or unreadable: %v", name, err)
		}
	}
}

func kekOf(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f keyFile
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	return f.KEK
}

func TestRewrapKeyring(t *testing.T) {
	dir, old, secrets, fx := rotationFixture(t)
	next := newTestKEK(t)
	files := keyFiles(t, dir)
	if len(files) != 5 {
		t.Fatalf("fixture has %d key files, want 5", len(files))
	}
	n, err := RewrapKeyring(dir, old, next)
	if err != nil || n != 5 {
		t.Fatalf("RewrapKeyring = %d, %v; want 5", n, err)
	}
	for _, p := range files {
		if got := kekOf(t, p); got != next.ID() {
			t.Errorf("%s names %s, want %s", p, got, next.ID())
		}
		if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v", p, fi.Mode().Perm())
		}
	}
	// Only the new KEK is needed now: every period key, secret and earlier payload opens.
	checkOpens(t, dir, next, secrets, fx)
	// The old KEK opens none of the rewrapped files.
	kr, _ := OpenKeyring(dir, old)
	for _, f := range fx {
		if _, err := kr.Lookup(f.period); !errors.Is(err, ErrOpen) {
			t.Errorf("old KEK still opens %s: %v", f.period, err)
		}
	}
	for name := range secrets {
		if _, err := kr.Secret(name); !errors.Is(err, ErrOpen) {
			t.Errorf("old KEK still opens secret %s: %v", name, err)
		}
	}
	// No temporary files are left behind.
	for p := range snapshot(t, dir) {
		if filepath.Ext(p) != ".key" {
			t.Errorf("stray file %s", p)
		}
	}
	// Running it again changes nothing.
	before := snapshot(t, dir)
	if n, err := RewrapKeyring(dir, old, next); err != nil || n != 0 {
		t.Fatalf("second run = %d, %v; want 0", n, err)
	}
	if after := snapshot(t, dir); len(after) != len(before) {
		t.Fatal("second run changed the keyring")
	} else {
		for p, b := range before {
			if !bytes.Equal(after[p], b) {
				t.Errorf("second run rewrote %s", p)
			}
		}
	}
}

// rewrapOne rewraps a single key file, as an interrupted rotation would have left it.
func rewrapOne(t *testing.T, path, id string, from, to KEK) {
	t.Helper()
	b, _ := os.ReadFile(path)
	var f keyFile
	json.Unmarshal(b, &f)
	w, _ := base64.StdEncoding.DecodeString(f.Wrapped)
	key, err := from.Unwrap([]byte(id), w)
	if err != nil {
		t.Fatal(err)
	}
	w2, _ := to.Wrap([]byte(id), key)
	b, _ = json.Marshal(keyFile{ID: id, KEK: to.ID(), Wrapped: base64.StdEncoding.EncodeToString(w2)})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestRewrapKeyringInterrupted(t *testing.T) {
	dir, old, secrets, fx := rotationFixture(t)
	next := newTestKEK(t)
	// A crash after two of five files: one period key and one secret are already under the new KEK.
	rewrapOne(t, filepath.Join(dir, "credit", "log", "2026-09.key"), "credit/log/2026-09", old, next)
	rewrapOne(t, filepath.Join(dir, "_secrets", "dedup.key"), "_secrets/dedup", old, next)
	done := snapshot(t, dir)
	n, err := RewrapKeyring(dir, old, next)
	if err != nil || n != 3 {
		t.Fatalf("completing run = %d, %v; want 3", n, err)
	}
	// The files already rewrapped were skipped, not rewritten.
	for _, p := range []string{filepath.Join(dir, "credit", "log", "2026-09.key"), filepath.Join(dir, "_secrets", "dedup.key")} {
		if b, _ := os.ReadFile(p); !bytes.Equal(b, done[p]) {
			t.Errorf("%s was rewritten", p)
		}
	}
	for _, p := range keyFiles(t, dir) {
		if got := kekOf(t, p); got != next.ID() {
			t.Errorf("%s names %s", p, got)
		}
	}
	checkOpens(t, dir, next, secrets, fx)
}

func TestRewrapKeyringWrongKEK(t *testing.T) {
	dir, old, secrets, fx := rotationFixture(t)
	next := newTestKEK(t)
	before := snapshot(t, dir)
	check := func(what string) {
		t.Helper()
		after := snapshot(t, dir)
		if len(after) != len(before) {
			t.Fatalf("%s: files added or removed", what)
		}
		for p, b := range before {
			if !bytes.Equal(after[p], b) {
				t.Fatalf("%s: %s changed", what, p)
			}
		}
	}
	if n, err := RewrapKeyring(dir, newTestKEK(t), next); err == nil || n != 0 {
		t.Fatalf("wrong old KEK: %d, %v", n, err)
	} else if !errors.Is(err, ErrOpen) {
		t.Errorf("wrong old KEK: error %v does not wrap ErrOpen", err)
	}
	check("wrong old KEK")
	// Even with some files already rotated, a wrong old KEK leaves the rest alone.
	p := filepath.Join(dir, "hiring", "log", "2026-11.key")
	rewrapOne(t, p, "hiring/log/2026-11", old, next)
	before = snapshot(t, dir)
	if _, err := RewrapKeyring(dir, newTestKEK(t), next); err == nil {
		t.Fatal("wrong old KEK after a partial rotation succeeded")
	}
	check("wrong old KEK, partial")
	if _, err := RewrapKeyring(dir, old, old); err == nil {
		t.Fatal("rewrap to the same KEK succeeded")
	}
	// A damaged key file stops the rotation before anything is written.
	bad := filepath.Join(dir, "credit", "hold", "2026-10.key")
	good, _ := os.ReadFile(bad)
	os.WriteFile(bad, []byte(`{"id":"credit/hold/2026-10","kek":"x","wrapped":"!!"}`), 0o600)
	before = snapshot(t, dir)
	if _, err := RewrapKeyring(dir, old, next); err == nil {
		t.Fatal("damaged key file accepted")
	}
	check("damaged key file")
	os.WriteFile(bad, good, 0o600)
	if n, err := RewrapKeyring(dir, old, next); err != nil || n != 4 {
		t.Fatalf("after repair = %d, %v; want 4", n, err)
	}
	checkOpens(t, dir, next, secrets, fx)
}
