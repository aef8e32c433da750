package signature

import (
	"crypto/ed25519"
	"testing"
)

// FuzzVerify feeds arbitrary signatures and keys to Verify: it must never panic, and never accept a signature
// under a key other than the one that signed.
func FuzzVerify(f *testing.F) {
	priv := ed25519.NewKeyFromSeed(make([]byte, 32))
	key := AuthorizedKey(priv.Public().(ed25519.PublicKey))
	f.Add(FormatSSH, SignSSH(priv, digest), key)
	f.Add(FormatEd25519, SignEd25519(priv, digest), key)
	f.Add(FormatSSH, "-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n-----END SSH SIGNATURE-----\n", key)
	f.Add("pgp", "x", "ssh-ed25519 AAAA")
	f.Fuzz(func(t *testing.T, format, sig, k string) {
		if _, err := Verify(format, sig, k, digest); err != nil {
			return
		}
		// Only the seeded key signed this digest: whatever the spelling of key and signature, nothing made
		// without it can verify.
		if pub, err := ParsePublicKey(k); err != nil || !pub.Equal(priv.Public()) {
			t.Fatalf("accepted format %q signature %q under key %q", format, sig, k)
		}
	})
}

// FuzzParsePrivateKey: arbitrary bytes never panic the key parser.
func FuzzParsePrivateKey(f *testing.F) {
	f.Add([]byte("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAAB\n-----END OPENSSH PRIVATE KEY-----\n"))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIGNhaXJuIGRvY3MudHh0YXI6IHNpZ25hdG9yeSBrZXkh\n-----END PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) { ParsePrivateKey(b) })
}
