// Package oidc verifies OpenID Connect ID tokens and OAuth access tokens in JWT form, issued by an organisation's
// identity provider, against the provider's published keys (JWKS): signature (RS256, PS256, ES256, EdDSA), issuer,
// audience, expiry and not-before. It never accepts an unsigned token or a symmetric algorithm, and never logs or
// returns a token or a claim value in an error.
package oidc

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// Config says which tokens to accept.
type Config struct {
	// Issuer is the identity provider's issuer URL, exactly as in the tokens' "iss" claim. Its discovery document
	// (Issuer + "/.well-known/openid-configuration") names the JWKS unless JWKSURL is set.
	Issuer string `json:"issuer"`
	// Audience must be in the tokens' "aud" claim: the client id Cairn is registered under.
	Audience string `json:"audience"`
	// JWKSURL overrides discovery.
	JWKSURL string `json:"jwks_url,omitempty"`
	// Leeway tolerates clock skew on exp and nbf (default 30 s, at most 5 min).
	Leeway time.Duration `json:"-"`
	// HTTP fetches discovery and keys (default: a client with a 10 s timeout).
	HTTP *http.Client `json:"-"`
	// Now is the clock (tests inject one).
	Now func() time.Time `json:"-"`
}

// Errors a token can be refused with. They say what is wrong, never what the token held.
var (
	ErrMalformed = errors.New("not a well-formed JWT")
	ErrAlgorithm = errors.New("signature algorithm not accepted")
	ErrKey       = errors.New("no key of the issuer matches the token")
	ErrSignature = errors.New("signature does not verify")
	ErrIssuer    = errors.New("wrong issuer")
	ErrAudience  = errors.New("wrong audience")
	ErrExpired   = errors.New("expired")
	ErrNotYet    = errors.New("not valid yet")
)

// Verifier checks tokens of one issuer. It caches the issuer's keys and refetches them, at most every
// refetchAfter, when a token names a key it does not know (key rotation at the provider).
type Verifier struct {
	cfg Config

	mu      sync.Mutex
	keys    map[string]crypto.PublicKey // by kid
	all     []crypto.PublicKey          // for tokens without kid
	fetched time.Time
}

const refetchAfter = 30 * time.Second

// NewVerifier checks cfg; keys are fetched on first use.
func NewVerifier(cfg Config) (*Verifier, error) {
	if cfg.Issuer == "" || cfg.Audience == "" {
		return nil, errors.New("oidc: issuer and audience are required")
	}
	for _, u := range []string{cfg.Issuer, cfg.JWKSURL} {
		if u == "" {
			continue
		}
		if err := checkURL(u); err != nil {
			return nil, err
		}
	}
	if cfg.Leeway <= 0 {
		cfg.Leeway = 30 * time.Second
	}
	cfg.Leeway = min(cfg.Leeway, 5*time.Minute)
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Verifier{cfg: cfg}, nil
}

// checkURL accepts https, and http only to a loopback host (an identity provider on the same machine).
func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("oidc: %q is not an absolute URL", raw)
	}
	if u.Scheme == "https" {
		return nil
	}
	if u.Scheme == "http" {
		if ip := net.ParseIP(u.Hostname()); (ip != nil && ip.IsLoopback()) || u.Hostname() == "localhost" {
			return nil
		}
	}
	return fmt.Errorf("oidc: %s must be https (http only on loopback)", raw)
}

// Claims are a verified token's claims, as raw JSON values by name.
type Claims map[string]json.RawMessage

// String returns a string claim, or "".
func (c Claims) String(name string) string {
	var s string
	json.Unmarshal(c[name], &s)
	return s
}

// Strings returns a claim that is a string or an array of strings.
func (c Claims) Strings(name string) []string {
	var ss []string
	if json.Unmarshal(c[name], &ss) == nil {
		return ss
	}
	if s := c.String(name); s != "" {
		return []string{s}
	}
	return nil
}

// LooksLikeJWT reports whether a bearer token has the shape of a compact JWS, so a caller can tell it from its own
// opaque tokens without trying to verify it.
func LooksLikeJWT(tok string) bool {
	return strings.HasPrefix(tok, "eyJ") && strings.Count(tok, ".") == 2
}

type header struct {
	Alg  string `json:"alg"`
	Kid  string `json:"kid"`
	Typ  string `json:"typ"`
	Crit []any  `json:"crit"`
}

// Verify checks a compact JWT and returns its claims.
func (v *Verifier) Verify(ctx context.Context, token string) (Claims, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || len(token) > 16<<10 {
		return nil, ErrMalformed
	}
	hb, err1 := base64.RawURLEncoding.DecodeString(parts[0])
	pb, err2 := base64.RawURLEncoding.DecodeString(parts[1])
	sig, err3 := base64.RawURLEncoding.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil {
		return nil, ErrMalformed
	}
	var h header
	if err := json.Unmarshal(hb, &h); err != nil {
		return nil, ErrMalformed
	}
	if len(h.Crit) > 0 {
		return nil, ErrMalformed // no critical extension is understood
	}
	if !slices.Contains([]string{"RS256", "PS256", "ES256", "EdDSA"}, h.Alg) {
		return nil, ErrAlgorithm
	}
	signed := []byte(token[:len(parts[0])+1+len(parts[1])])
	keys, err := v.keysFor(ctx, h.Kid)
	if err != nil {
		return nil, err
	}
	ok := false
	for _, k := range keys {
		if verifySig(h.Alg, k, signed, sig) {
			ok = true
			break
		}
	}
	if !ok {
		return nil, ErrSignature
	}
	var c Claims
	if err := json.Unmarshal(pb, &c); err != nil {
		return nil, ErrMalformed
	}
	if c.String("iss") != v.cfg.Issuer {
		return nil, ErrIssuer
	}
	if !slices.Contains(c.Strings("aud"), v.cfg.Audience) {
		return nil, ErrAudience
	}
	now := v.cfg.Now()
	exp, ok := numericDate(c["exp"])
	if !ok {
		return nil, ErrMalformed // a token without expiry is never accepted
	}
	if !now.Before(exp.Add(v.cfg.Leeway)) {
		return nil, ErrExpired
	}
	if nbf, ok := numericDate(c["nbf"]); ok && now.Add(v.cfg.Leeway).Before(nbf) {
		return nil, ErrNotYet
	}
	return c, nil
}

func numericDate(raw json.RawMessage) (time.Time, bool) {
	var f float64
	if raw == nil || json.Unmarshal(raw, &f) != nil || f <= 0 || f > 1e11 {
		return time.Time{}, false
	}
	sec := int64(f)
	return time.Unix(sec, int64((f-float64(sec))*1e9)), true
}

func verifySig(alg string, key crypto.PublicKey, signed, sig []byte) bool {
	sum := sha256.Sum256(signed)
	switch alg {
	case "RS256":
		k, ok := key.(*rsa.PublicKey)
		return ok && k.N.BitLen() >= 2048 && rsa.VerifyPKCS1v15(k, crypto.SHA256, sum[:], sig) == nil
	case "PS256":
		k, ok := key.(*rsa.PublicKey)
		return ok && k.N.BitLen() >= 2048 && rsa.VerifyPSS(k, crypto.SHA256, sum[:], sig, nil) == nil
	case "ES256":
		k, ok := key.(*ecdsa.PublicKey)
		if !ok || k.Curve != elliptic.P256() || len(sig) != 64 {
			return false
		}
		r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
		return ecdsa.Verify(k, sum[:], r, s)
	case "EdDSA":
		k, ok := key.(ed25519.PublicKey)
		return ok && ed25519.Verify(k, signed, sig)
	}
	return false
}

// keysFor returns the keys a token with kid may be signed with, fetching the JWKS when it has none yet or does
// not know kid (and has not fetched in the last refetchAfter).
func (v *Verifier) keysFor(ctx context.Context, kid string) ([]crypto.PublicKey, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	known := func() []crypto.PublicKey {
		if kid == "" {
			return v.all
		}
		if k, ok := v.keys[kid]; ok {
			return []crypto.PublicKey{k}
		}
		return nil
	}
	if ks := known(); len(ks) > 0 {
		return ks, nil
	}
	if !v.fetched.IsZero() && v.cfg.Now().Sub(v.fetched) < refetchAfter {
		return nil, ErrKey
	}
	if err := v.fetch(ctx); err != nil {
		return nil, err
	}
	if ks := known(); len(ks) > 0 {
		return ks, nil
	}
	return nil, ErrKey
}

// fetch loads the issuer's JWKS. The caller holds v.mu.
func (v *Verifier) fetch(ctx context.Context) error {
	v.fetched = v.cfg.Now()
	jwksURL := v.cfg.JWKSURL
	if jwksURL == "" {
		var disc struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		if err := v.getJSON(ctx, strings.TrimRight(v.cfg.Issuer, "/")+"/.well-known/openid-configuration", &disc); err != nil {
			return err
		}
		if disc.Issuer != v.cfg.Issuer {
			return fmt.Errorf("oidc: the discovery document names issuer %q, not the configured one", disc.Issuer)
		}
		if err := checkURL(disc.JWKSURI); err != nil {
			return err
		}
		jwksURL = disc.JWKSURI
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := v.getJSON(ctx, jwksURL, &set); err != nil {
		return err
	}
	keys, all := map[string]crypto.PublicKey{}, []crypto.PublicKey{}
	for _, raw := range set.Keys {
		kid, k, err := parseJWK(raw)
		if err != nil {
			continue // a key of a type we do not use (or an encryption key) does not spoil the others
		}
		if kid != "" {
			keys[kid] = k
		}
		all = append(all, k)
	}
	if len(all) == 0 {
		return errors.New("oidc: the issuer's JWKS holds no usable signing key")
	}
	v.keys, v.all = keys, all
	return nil
}

func (v *Verifier) getJSON(ctx context.Context, u string, dst any) error {
	req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
	if err != nil {
		return err
	}
	resp, err := v.cfg.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("oidc: fetch %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("oidc: fetch %s: %s", u, resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(dst); err != nil {
		return fmt.Errorf("oidc: %s: %w", u, err)
	}
	return nil
}

// parseJWK reads a public signing key (RSA, EC P-256, OKP Ed25519) from a JWK (RFC 7517, 7518, 8037).
func parseJWK(raw json.RawMessage) (string, crypto.PublicKey, error) {
	var j struct {
		Kty, Kid, Use, Crv, N, E, X, Y string
	}
	if err := json.Unmarshal(raw, &j); err != nil {
		return "", nil, err
	}
	if j.Use != "" && j.Use != "sig" {
		return "", nil, errors.New("not a signing key")
	}
	b := func(s string) []byte { d, _ := base64.RawURLEncoding.DecodeString(s); return d }
	switch j.Kty {
	case "RSA":
		n, e := b(j.N), b(j.E)
		if len(n) == 0 || len(e) == 0 || len(e) > 4 {
			return "", nil, errors.New("bad RSA key")
		}
		return j.Kid, &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}, nil
	case "EC":
		if j.Crv != "P-256" {
			return "", nil, errors.New("unsupported curve")
		}
		x, y := b(j.X), b(j.Y)
		if len(x) != 32 || len(y) != 32 {
			return "", nil, errors.New("bad EC key")
		}
		k, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
		if err != nil {
			return "", nil, err
		}
		return j.Kid, k, nil
	case "OKP":
		if x := b(j.X); j.Crv == "Ed25519" && len(x) == ed25519.PublicKeySize {
			return j.Kid, ed25519.PublicKey(x), nil
		}
	}
	return "", nil, errors.New("unsupported key type")
}
