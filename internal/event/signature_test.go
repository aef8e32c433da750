package event_test

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/signature"
)

// TestSignedEvents: a document or approval event may carry a signature over a document digest; it must verify,
// and its parts go together.
func TestSignedEvents(t *testing.T) {
	priv := ed25519.NewKeyFromSeed([]byte("approver key: thirty-two bytes!!"))
	key := signature.AuthorizedKey(priv.Public().(ed25519.PublicKey))
	d := "sha256:" + strings.Repeat("0f", 32)
	other := "sha256:" + strings.Repeat("1e", 32)
	approval := func(extra string) string {
		return `{"type":"approval","model":{"name":"m","version":"1"},"refs":["01a229ac-12fa-78d6-8979-96172b3cd744"],"attrs":{"decision":"approve"` + extra + `}}`
	}
	sig := func(digest string) string {
		return fmt.Sprintf(`,"signature":%q,"signature_format":"ssh","signer_key":%q`, signature.SignSSH(priv, d), key) + fmt.Sprintf(`,"signed_digest":%q`, digest)
	}
	doc := func(digest string) string {
		return fmt.Sprintf(`{"type":"document","attrs":{"kind":"model-card","digest":%q,"signature":%q,"signature_format":"ed25519","signer_key":%q}}`, digest, signature.SignEd25519(priv, d), key)
	}
	for _, c := range []struct {
		name, raw string
		ok        bool
	}{
		{"approval unsigned", approval(""), true},
		{"approval signed", approval(sig(d)), true},
		{"approval signed over another digest", approval(sig(other)), false},
		{"approval signature without its digest", approval(fmt.Sprintf(`,"signature":"x","signature_format":"ssh","signer_key":%q`, key)), false},
		{"approval digest and signature without a key", approval(fmt.Sprintf(`,"signature":"x","signature_format":"ssh","signed_digest":%q`, d)), false},
		{"document signed", doc(d), true},
		{"document signed over another digest", doc(other), false},
	} {
		_, err := parse(c.raw)
		var fe *event.Error
		switch {
		case c.ok && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case !c.ok && (err == nil || !errors.As(err, &fe) || fe.Field != "/attrs/signature"):
			t.Errorf("%s: accepted or wrong field: %v", c.name, err)
		}
	}
}
