package oidc

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/cairn-ai/cairn/internal/oidc/oidctest"
)

var now = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func claims(p *oidctest.Provider, over map[string]any) map[string]any {
	c := map[string]any{"iss": p.URL, "aud": "cairn", "sub": "u-123", "exp": now.Add(time.Hour).Unix(),
		"iat": now.Unix(), "groups": []string{"ml-platform"}}
	for k, v := range over {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func verifier(t testing.TB, p *oidctest.Provider) *Verifier {
	v, err := NewVerifier(Config{Issuer: p.URL, Audience: "cairn", Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVerify(t *testing.T) {
	p := oidctest.New(t)
	v := verifier(t, p)
	ctx := context.Background()
	for _, alg := range []struct{ alg, kid string }{{"RS256", "r1"}, {"PS256", "r1"}, {"ES256", "e1"}, {"EdDSA", "d1"}} {
		c, err := v.Verify(ctx, p.Sign(t, alg.alg, alg.kid, claims(p, nil)))
		if err != nil {
			t.Errorf("%s: %v", alg.alg, err)
			continue
		}
		if c.String("sub") != "u-123" || len(c.Strings("groups")) != 1 {
			t.Errorf("%s: claims %v", alg.alg, c)
		}
	}
	// An audience array holding ours is accepted.
	if _, err := v.Verify(ctx, p.Sign(t, "ES256", "e1", claims(p, map[string]any{"aud": []string{"other", "cairn"}}))); err != nil {
		t.Errorf("audience array: %v", err)
	}
	// Expiry within the leeway is still accepted.
	if _, err := v.Verify(ctx, p.Sign(t, "ES256", "e1", claims(p, map[string]any{"exp": now.Add(-10 * time.Second).Unix()}))); err != nil {
		t.Errorf("expired 10 s ago, within leeway: %v", err)
	}
	if n := p.Fetches.Load(); n != 1 {
		t.Errorf("JWKS fetched %d times, want once", n)
	}
}

func TestVerifyRefuses(t *testing.T) {
	p := oidctest.New(t)
	v := verifier(t, p)
	ctx := context.Background()
	other := oidctest.New(t) // another provider's keys under the same kids
	tampered := p.Sign(t, "RS256", "r1", claims(p, nil))
	tampered = tampered[:len(tampered)-4] + "AAAA"
	for name, tc := range map[string]struct {
		token string
		want  error
	}{
		"wrong issuer":         {p.Sign(t, "RS256", "r1", claims(p, map[string]any{"iss": "https://evil.example"})), ErrIssuer},
		"wrong audience":       {p.Sign(t, "RS256", "r1", claims(p, map[string]any{"aud": "someone-else"})), ErrAudience},
		"no audience":          {p.Sign(t, "RS256", "r1", claims(p, map[string]any{"aud": nil})), ErrAudience},
		"expired":              {p.Sign(t, "RS256", "r1", claims(p, map[string]any{"exp": now.Add(-time.Hour).Unix()})), ErrExpired},
		"no expiry":            {p.Sign(t, "RS256", "r1", claims(p, map[string]any{"exp": nil})), ErrMalformed},
		"not yet valid":        {p.Sign(t, "RS256", "r1", claims(p, map[string]any{"nbf": now.Add(time.Hour).Unix()})), ErrNotYet},
		"other key, same kid":  {other.Sign(t, "RS256", "r1", claims(p, nil)), ErrSignature},
		"EC key for EdDSA kid": {other.Sign(t, "EdDSA", "d1", claims(p, nil)), ErrSignature},
		"tampered signature":   {tampered, ErrSignature},
		"alg none":             {p.Sign(t, "none", "r1", claims(p, nil)), ErrAlgorithm},
		"HS256 (symmetric)":    {p.Sign(t, "HS256", "h1", claims(p, nil)), ErrAlgorithm},
		"alg/key mismatch":     {p.Sign(t, "RS256", "e1", claims(p, nil)), ErrSignature},
		"not a JWT":            {"cairn_abc", ErrMalformed},
		"bad base64":           {"eyJ!.e30.AA", ErrMalformed},
	} {
		_, err := v.Verify(ctx, tc.token)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
}

func TestKeyRotationRefetches(t *testing.T) {
	p := oidctest.New(t)
	clock := now
	v, _ := NewVerifier(Config{Issuer: p.URL, Audience: "cairn", Now: func() time.Time { return clock }})
	ctx := context.Background()
	if _, err := v.Verify(ctx, p.Sign(t, "EdDSA", "d1", claims(p, nil))); err != nil {
		t.Fatal(err)
	}
	// The provider rotates to a new kid; a token under it is refused until the JWKS may be fetched again.
	_, ed2, _ := ed25519.GenerateKey(rand.Reader)
	keys := append(p.JWKS.Load().([]map[string]string), map[string]string{"kty": "OKP", "kid": "d2", "crv": "Ed25519", "x": oidctest.B64(ed2.Public().(ed25519.PublicKey))})
	p.JWKS.Store(keys)
	p.Ed = ed2
	tok := p.Sign(t, "EdDSA", "d2", claims(p, nil))
	if _, err := v.Verify(ctx, tok); !errors.Is(err, ErrKey) {
		t.Errorf("right after a fetch, unknown kid: %v, want ErrKey (no refetch storm)", err)
	}
	clock = clock.Add(refetchAfter + time.Second)
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Errorf("after the refetch interval: %v", err)
	}
	if n := p.Fetches.Load(); n != 2 {
		t.Errorf("JWKS fetched %d times, want 2", n)
	}
}

func TestConfigRefusesPlainHTTP(t *testing.T) {
	if _, err := NewVerifier(Config{Issuer: "http://idp.example.com", Audience: "cairn"}); err == nil {
		t.Error("a plaintext issuer on the network was accepted")
	}
	if _, err := NewVerifier(Config{Issuer: "https://idp.example.com"}); err == nil {
		t.Error("a configuration without audience was accepted")
	}
}

func FuzzVerify(f *testing.F) {
	p := oidctest.New(f)
	v := verifier(f, p)
	f.Add(p.Sign(f, "RS256", "r1", claims(p, nil)))
	f.Add(p.Sign(f, "ES256", "e1", claims(p, nil)))
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := v.Verify(context.Background(), tok)
		if err == nil && c.String("iss") != p.URL {
			t.Fatalf("accepted a token of issuer %q", c.String("iss"))
		}
	})
}
