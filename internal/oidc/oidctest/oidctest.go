// Package oidctest is an OpenID Connect identity provider for tests: a discovery document and a JWKS served on
// loopback, and RSA, EC P-256 and Ed25519 keys to sign tokens with. It is test scaffolding, never a real provider.
package oidctest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// Provider serves discovery at URL + "/.well-known/openid-configuration" and its keys at URL + "/keys": an RSA key
// (kid r1), an EC P-256 key (e1), an Ed25519 key (d1) and a symmetric key (h1) that a verifier must ignore.
type Provider struct {
	URL     string
	srv     *httptest.Server
	RSA     *rsa.PrivateKey
	EC      *ecdsa.PrivateKey
	Ed      ed25519.PrivateKey
	JWKS    atomic.Value // []map[string]string
	Fetches atomic.Int32 // of the JWKS
}

// B64 is base64url without padding, as JOSE writes it.
func B64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// New starts a provider; it stops when the test ends.
func New(t testing.TB) *Provider {
	t.Helper()
	p := &Provider{}
	p.RSA, _ = rsa.GenerateKey(rand.Reader, 2048)
	p.EC, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, p.Ed, _ = ed25519.GenerateKey(rand.Reader)
	ecb, _ := p.EC.PublicKey.Bytes() // 0x04 || X || Y
	p.JWKS.Store([]map[string]string{
		{"kty": "RSA", "kid": "r1", "use": "sig", "n": B64(p.RSA.N.Bytes()), "e": B64(big.NewInt(int64(p.RSA.E)).Bytes())},
		{"kty": "EC", "kid": "e1", "crv": "P-256", "x": B64(ecb[1:33]), "y": B64(ecb[33:])},
		{"kty": "OKP", "kid": "d1", "crv": "Ed25519", "x": B64(p.Ed.Public().(ed25519.PublicKey))},
		{"kty": "oct", "kid": "h1", "k": B64([]byte(hmacSecret))},
	})
	mux := http.NewServeMux()
	p.srv = httptest.NewServer(mux)
	p.URL = p.srv.URL
	t.Cleanup(p.srv.Close)
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"issuer": p.URL, "jwks_uri": p.URL + "/keys"})
	})
	mux.HandleFunc("/keys", func(w http.ResponseWriter, r *http.Request) {
		p.Fetches.Add(1)
		json.NewEncoder(w).Encode(map[string]any{"keys": p.JWKS.Load()})
	})
	return p
}

const hmacSecret = "a shared secret must never verify"

// Sign makes a compact JWT with alg (RS256, PS256, ES256, EdDSA, HS256 or none), kid and claims.
func (p *Provider) Sign(t testing.TB, alg, kid string, claims map[string]any) string {
	t.Helper()
	h, _ := json.Marshal(map[string]string{"alg": alg, "kid": kid, "typ": "JWT"})
	c, _ := json.Marshal(claims)
	in := B64(h) + "." + B64(c)
	sum := sha256.Sum256([]byte(in))
	var sig []byte
	var err error
	switch alg {
	case "RS256":
		sig, err = rsa.SignPKCS1v15(rand.Reader, p.RSA, crypto.SHA256, sum[:])
	case "PS256":
		sig, err = rsa.SignPSS(rand.Reader, p.RSA, crypto.SHA256, sum[:], nil)
	case "ES256":
		r, s, e := ecdsa.Sign(rand.Reader, p.EC, sum[:])
		sig, err = append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...), e
	case "EdDSA":
		sig = ed25519.Sign(p.Ed, []byte(in))
	case "HS256":
		m := hmac.New(sha256.New, []byte(hmacSecret))
		m.Write([]byte(in))
		sig = m.Sum(nil)
	case "none":
	}
	if err != nil {
		t.Fatal(err)
	}
	return in + "." + B64(sig)
}
