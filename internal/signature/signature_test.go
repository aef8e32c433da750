package signature

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const digest = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

func TestRoundTrip(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	for _, c := range []struct {
		format, sig, key string
	}{
		{FormatSSH, SignSSH(priv, digest), AuthorizedKey(pub)},
		{FormatEd25519, SignEd25519(priv, digest), AuthorizedKey(pub)},
	} {
		fp, err := Verify(c.format, c.sig, c.key, digest)
		if err != nil || fp != Fingerprint(pub) {
			t.Fatalf("%s: %v %s", c.format, err, fp)
		}
		if _, err := Verify(c.format, c.sig, c.key, digest[:len(digest)-1]+"9"); err == nil {
			t.Errorf("%s: verified over another digest", c.format)
		}
		if _, err := Verify(c.format, c.sig, AuthorizedKey(other.Public().(ed25519.PublicKey)), digest); err == nil {
			t.Errorf("%s: verified with another key", c.format)
		}
		// Every changed byte of the signature fails (whitespace in the armor aside).
		for i := range c.sig {
			b := []byte(c.sig)
			if b[i] == '\n' {
				continue
			}
			b[i] ^= 0x01
			if _, err := Verify(c.format, string(b), c.key, digest); err == nil {
				t.Fatalf("%s: signature with byte %d changed verified", c.format, i)
			}
		}
	}
}

// TestSSHKeygen checks interoperability with OpenSSH in both directions.
func TestSSHKeygen(t *testing.T) {
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("ssh-keygen is not installed")
		}
		t.Skip("ssh-keygen is not installed")
	}
	dir := t.TempDir()
	key := filepath.Join(dir, "id_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "signatory", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	pubLine, _ := os.ReadFile(key + ".pub")
	msg := filepath.Join(dir, "digest")
	os.WriteFile(msg, []byte(digest), 0o600)
	if out, err := exec.Command("ssh-keygen", "-Y", "sign", "-n", Namespace, "-f", key, msg).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	sig, _ := os.ReadFile(msg + ".sig")
	if _, err := Verify(FormatSSH, string(sig), string(pubLine), digest); err != nil {
		t.Fatalf("ssh-keygen's signature: %v", err)
	}
	// Our key parser reads the OpenSSH private key, and ssh-keygen accepts our signature.
	kb, _ := os.ReadFile(key)
	priv, err := ParsePrivateKey(kb)
	if err != nil {
		t.Fatal(err)
	}
	if got := AuthorizedKey(priv.Public().(ed25519.PublicKey)); !strings.HasPrefix(string(pubLine), got) {
		t.Fatalf("public key %s, want %s", got, pubLine)
	}
	ours := filepath.Join(dir, "ours.sig")
	os.WriteFile(ours, []byte(SignSSH(priv, digest)), 0o600)
	cmd := exec.Command("ssh-keygen", "-Y", "check-novalidate", "-n", Namespace, "-s", ours)
	cmd.Stdin = strings.NewReader(digest)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen rejects our signature: %v %s", err, out)
	}
}
