package verify

import (
	"crypto/ed25519"
	"fmt"
	"strings"
	"testing"

	"github.com/cairn-ai/cairn/internal/signature"
)

// TestRecordedSignature: a document or approval event whose recorded signature does not verify over its digest
// fails verification, whatever let it in.
func TestRecordedSignature(t *testing.T) {
	priv := ed25519.NewKeyFromSeed(make([]byte, 32))
	d := "sha256:" + strings.Repeat("ab", 32)
	key := signature.AuthorizedKey(priv.Public().(ed25519.PublicKey))
	good := fmt.Sprintf(`{"digest":%q,"kind":"declaration-of-conformity","signature":%q,"signature_format":"ssh","signer_key":%q}`, d, signature.SignSSH(priv, d), key)
	if r := checkSignature([]byte(good), "digest"); r != "" {
		t.Fatalf("a good signature: %s", r)
	}
	other := strings.Replace(good, d, "sha256:"+strings.Repeat("cd", 32), 1)
	if r := checkSignature([]byte(other), "digest"); !strings.Contains(r, "does not verify") {
		t.Errorf("a signature over another digest: %q", r)
	}
	appr := fmt.Sprintf(`{"decision":"approve","signed_digest":%q,"signature":%q,"signature_format":"ed25519","signer_key":%q}`, d, signature.SignEd25519(priv, d), key)
	if r := checkSignature([]byte(appr), "signed_digest"); r != "" {
		t.Fatalf("a good approval signature: %s", r)
	}
	if r := checkSignature([]byte(strings.Replace(appr, `"signature":"`, `"signature":"A`, 1)), "signed_digest"); r == "" {
		t.Error("an altered approval signature verified")
	}
	if r := checkSignature([]byte(`{"decision":"approve"}`), "signed_digest"); r != "" {
		t.Errorf("no signature: %q", r)
	}
}
