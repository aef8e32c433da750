package ledger

import (
	"crypto/ed25519"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// A fixed key, so the signed checkpoint is a golden vector (Ed25519 signatures are deterministic).
var goldenSeed = []byte("cairn golden checkpoint seed 32b")

func TestCheckpointGolden(t *testing.T) {
	key := ed25519.NewKeyFromSeed(goldenSeed)
	s := newNoteSigner("example.org/cairn/credit", key)
	var root tlog.Hash
	for i := range root {
		root[i] = byte(i)
	}
	body := Checkpoint{Origin: s.Name(), Size: 70000, Root: root}.Marshal()
	const wantBody = "example.org/cairn/credit\n70000\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
	if string(body) != wantBody {
		t.Fatalf("body = %q", body)
	}
	signed, err := note.Sign(&note.Note{Text: string(body)}, s)
	if err != nil {
		t.Fatal(err)
	}
	const wantSigned = wantBody + "\n— example.org/cairn/credit "
	if !strings.HasPrefix(string(signed), wantSigned) {
		t.Fatalf("signed note = %q", signed)
	}
	vk, err := VerifierKey(s.Name(), key.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	// The key hash must be the one x/mod's own signer computes for the same key and name.
	skey, _, err := note.GenerateKey(strings.NewReader(string(goldenSeed)), s.Name())
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := note.NewSigner(skey)
	if ref.KeyHash() != s.KeyHash() {
		t.Errorf("key hash %08x, x/mod computes %08x", s.KeyHash(), ref.KeyHash())
	}
	c, err := OpenCheckpoint(signed, vk)
	if err != nil || c.Size != 70000 || c.Root != root {
		t.Fatalf("OpenCheckpoint = %+v, %v", c, err)
	}
	// Negative cases: a flipped byte in the body or the signature, a wrong key, a truncated note.
	for name, bad := range map[string][]byte{
		"body byte":      []byte(strings.Replace(string(signed), "70000", "70001", 1)),
		"signature byte": flipLast(signed),
		"truncated":      signed[:len(signed)/2],
	} {
		if _, err := OpenCheckpoint(bad, vk); err == nil {
			t.Errorf("%s: a damaged checkpoint verified", name)
		}
	}
	other, _ := VerifierKey("example.org/cairn/other", key.Public().(ed25519.PublicKey))
	if _, err := OpenCheckpoint(signed, other); err == nil {
		t.Errorf("verified under another origin")
	}
	_, otherKey, _ := ed25519.GenerateKey(nil)
	vk2, _ := VerifierKey(s.Name(), otherKey.Public().(ed25519.PublicKey))
	if _, err := OpenCheckpoint(signed, vk2); err == nil {
		t.Errorf("verified under another key")
	}
}

func flipLast(b []byte) []byte {
	c := append([]byte(nil), b...)
	i := len(c) - 6 // inside the base64 signature
	if c[i] == 'A' {
		c[i] = 'B'
	} else {
		c[i] = 'A'
	}
	return c
}

func TestParseCheckpointRejects(t *testing.T) {
	for _, s := range []string{
		"", "origin\n", "origin\n1\n", "origin\nx\nAAAA\n", "origin\n01\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
		"origin\n1\nAAEC\n", "\n1\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
	} {
		if _, err := ParseCheckpoint(s); err == nil {
			t.Errorf("ParseCheckpoint(%q) accepted", s)
		}
	}
}

func FuzzParseCheckpoint(f *testing.F) {
	f.Add("example.org/log\n5\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n")
	f.Add("example.org/log\n5\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\next\n")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCheckpoint(s)
		if err != nil {
			return
		}
		// What parses re-encodes to the same first three lines.
		if !strings.HasPrefix(s, string(c.Marshal())) {
			t.Fatalf("checkpoint %q re-encodes as %q", s, c.Marshal())
		}
	})
}

func TestTilePath(t *testing.T) {
	for _, tc := range []struct {
		level   int
		entries bool
		n       int64
		w       int
		path    string
	}{
		{0, false, 0, 256, "0/000"},
		{0, false, 1234067, 256, "0/x001/x234/067"},
		{1, false, 5, 17, "1/005.p/17"},
		{0, true, 1000, 256, "entries/x001/000"},
		{0, true, 273, 112, "entries/273.p/112"},
		{2, false, 1000000, 1, "2/x001/x000/000.p/1"},
	} {
		if got := TilePath(tc.level, tc.entries, tc.n, tc.w); got != tc.path {
			t.Errorf("TilePath(%d,%v,%d,%d) = %q, want %q", tc.level, tc.entries, tc.n, tc.w, got, tc.path)
		}
		l, e, n, w, err := ParseTilePath(tc.path)
		if err != nil || l != tc.level || e != tc.entries || n != tc.n || w != tc.w {
			t.Errorf("ParseTilePath(%q) = %d %v %d %d %v", tc.path, l, e, n, w, err)
		}
	}
	for _, bad := range []string{"", "0", "0/1", "0/0001", "0/x1/000", "0/001.p/0", "0/001.p/256", "0/001.p/07",
		"00/001", "-1/001", "0/x000/001", "entries/001.p/", "0/001/", "x/001", "0/x001", "64/000"} {
		if _, _, _, _, err := ParseTilePath(bad); err == nil {
			t.Errorf("ParseTilePath(%q) accepted", bad)
		}
	}
}

func FuzzTilePath(f *testing.F) {
	f.Add("0/x001/x234/067.p/8")
	f.Add("entries/273.p/112")
	f.Fuzz(func(t *testing.T, p string) {
		l, e, n, w, err := ParseTilePath(p)
		if err != nil {
			return
		}
		if TilePath(l, e, n, w) != p {
			t.Fatalf("%q parses but formats as %q", p, TilePath(l, e, n, w))
		}
	})
}

func TestEntryBundleGolden(t *testing.T) {
	var b []byte
	for _, e := range []string{"", "a", strings.Repeat("x", 300)} {
		var err error
		if b, err = AppendEntry(b, []byte(e)); err != nil {
			t.Fatal(err)
		}
	}
	if want := "\x00\x00\x00\x01a\x01\x2c"; string(b[:len(want)]) != want || len(b) != 2+3+2+300 {
		t.Fatalf("bundle = %q", b[:10])
	}
	es, err := ParseEntryBundle(b)
	if err != nil || len(es) != 3 || string(es[1]) != "a" || len(es[2]) != 300 {
		t.Fatalf("ParseEntryBundle = %q, %v", es, err)
	}
	for _, cut := range []int{1, 3, len(b) - 1} {
		if _, err := ParseEntryBundle(b[:cut]); err == nil {
			t.Errorf("bundle truncated at %d parsed", cut)
		}
	}
	if _, err := AppendEntry(nil, make([]byte, 65536)); err == nil {
		t.Errorf("an entry over 65,535 bytes was bundled")
	}
}

func FuzzEntryBundle(f *testing.F) {
	f.Add([]byte("\x00\x01a\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		es, err := ParseEntryBundle(b)
		if err != nil {
			return
		}
		var again []byte
		for _, e := range es {
			again, _ = AppendEntry(again, e)
		}
		if string(again) != string(b) {
			t.Fatalf("bundle does not re-encode to itself")
		}
	})
}
