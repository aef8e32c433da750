package pseudo

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"time"

	"github.com/cairn-ai/cairn/internal/canon"
)

// Keys supplies pseudonymisation domain keys. The caller backs it with its keyring; DomainKey must return the same
// 32 bytes for a domain for as long as pseudonyms in that domain should link, and be safe for concurrent use.
// Apply asks for each domain it needs once per call; a Policy keeps the HMAC state derived from the last key it was
// given per domain (in memory only, for reuse) and rebuilds it when the key returned changes.
type Keys interface {
	DomainKey(domain string) ([]byte, error)
}

// KeySize is the length of a domain key.
const KeySize = 32

// VaultKeys is Keys for a policy with "vault" rules: Vault receives, for each value a vault rule pseudonymised, the
// domain, the pseudonym written and the canonical JSON of the original value (a slice the callee must copy to keep).
// The caller must store what it receives durably in the token vault before the event it came from is acknowledged.
type VaultKeys interface {
	Keys
	Vault(domain, pseudonym string, value []byte) error
}

// VaultEntry is one value for the token vault: the pseudonym a vault rule wrote into a payload, its domain, and the
// canonical JSON of the original value.
type VaultEntry struct {
	Domain    string
	Pseudonym string
	Value     []byte
}

// ErrVaultRequired is returned by Apply for a policy with a "vault" rule when keys does not implement VaultKeys:
// without a token vault such a policy cannot be applied, so the caller must refuse the event.
var ErrVaultRequired = errors.New("vault action needs the token vault")

// ErrRejected is wrapped by every *FieldError: the payload does not fit the policy and must not be stored. It is the
// client's fault (HTTP 422), not the server's.
var ErrRejected = errors.New("payload rejected by field policy")

// FieldError is a payload value Apply refused. Path is the policy path of the value ("input.items[].email"); Reason
// names the JSON kind found and the one expected. Neither ever contains a payload value.
type FieldError struct {
	Path   string
	Reason string
}

func (e *FieldError) Error() string {
	return "field policy: at " + strconv.Quote(e.Path) + ": " + e.Reason
}

func (e *FieldError) Unwrap() error { return ErrRejected }

// pseudonymLen is the number of base64url characters of the HMAC kept in a pseudonym: 22 characters, 132 bits.
const pseudonymLen = 22

// Apply appends to dst the payload rewritten by the policy and returns the extended buffer.
//
// payload must be a canonical JSON object (canon.Append's output); the result is then canonical too, ready to be
// sealed and digested. Each member or array element is treated by the rule at its path; containers without a rule
// are walked, and leaf values the policy does not name get the policy's default (a pseudonym default covers strings,
// numbers and booleans alike). Null is kept as null by pseudonym and generalize, named or default (it carries no
// value), but removed by drop.
//
// Apply rejects, with a *FieldError wrapping ErrRejected: a value to generalize that is not a number (bands) or an
// RFC 3339 / YYYY-MM-DD date string (to); an array where the policy declared no "[]"; an object or a scalar where the
// policy declared "[]"; and a scalar where the policy names members below it. Pseudonymising an object or an array
// is allowed: the pseudonym is of its canonical JSON. A policy with a vault rule needs keys to be VaultKeys, or fails
// with ErrVaultRequired. Key
// errors are wrapped with the domain's name. On error Apply returns dst unchanged (bytes beyond len(dst) may have
// been overwritten). Apply is safe for concurrent use.
func (p *Policy) Apply(dst, payload []byte, keys Keys) ([]byte, error) {
	var vk VaultKeys
	if p.hasVault {
		var ok bool
		if vk, ok = keys.(VaultKeys); !ok {
			return dst, ErrVaultRequired
		}
	}
	a := p.applier()
	defer p.release(a)
	a.keys, a.vault, a.s, a.out = keys, vk, canon.NewScanner(payload), dst
	if c := a.s.Peek(); c != '{' {
		return dst, fmt.Errorf("payload: got %s, want an object: %w", canon.KindName(c), ErrNotCanonical)
	}
	if err := a.object(p.root); err != nil {
		return dst, err
	}
	if a.s.Pos() != len(payload) {
		return dst, fmt.Errorf("payload: trailing bytes at offset %d: %w", a.s.Pos(), ErrNotCanonical)
	}
	return a.out, nil
}

// applier is the state of one Apply call: a cursor over the input, the output, and one MAC per domain of the policy.
// Appliers are pooled per Policy so that a domain's HMAC state is built once and reused while the keyring returns the
// same key for it; a key that changes (rotation) is noticed on the next call and the state rebuilt.
type applier struct {
	p     *Policy
	keys  Keys
	vault VaultKeys
	s     canon.Scanner
	out   []byte
	macs  []domainMAC // indexed like Policy.domains
	sum   [sha256.Size]byte
	b64   [23]byte
}

type domainMAC struct {
	key     []byte // the key h was built with, to notice rotation
	h       hash.Hash
	checked bool // the key was fetched during this call
}

func (p *Policy) applier() *applier {
	if a, ok := p.pool.Get().(*applier); ok {
		return a
	}
	return &applier{p: p, macs: make([]domainMAC, len(p.domains))}
}

func (p *Policy) release(a *applier) {
	a.keys, a.vault, a.s, a.out = nil, nil, canon.Scanner{}, nil
	for i := range a.macs {
		a.macs[i].checked = false
	}
	p.pool.Put(a)
}

// dropped reports whether the value at n (nil: unnamed), starting with c, is removed with its member name or slot.
func (a *applier) dropped(n *node, c byte) bool {
	if n == nil {
		return a.p.def == Drop && c != '{' && c != '['
	}
	return n.rule != nil && n.rule.action == Drop
}

// object walks the object at the cursor whose position is n (nil: not named by the policy).
func (a *applier) object(n *node) error {
	a.out = append(a.out, '{')
	first := true
	err := a.s.Members(func(raw, name []byte) error {
		var child *node
		if n != nil {
			child = n.children[string(name)]
		}
		if a.dropped(child, a.s.Peek()) {
			_, err := a.s.Skip()
			return err
		}
		if !first {
			a.out = append(a.out, ',')
		}
		first = false
		a.out = append(a.out, raw...)
		a.out = append(a.out, ':')
		return a.value(child)
	})
	a.out = append(a.out, '}')
	return err
}

// array walks the array at the cursor whose elements are at e (nil: not named by the policy).
func (a *applier) array(e *node) error {
	a.out = append(a.out, '[')
	first := true
	err := a.s.Elements(func(int) error {
		if a.dropped(e, a.s.Peek()) {
			_, err := a.s.Skip()
			return err
		}
		if !first {
			a.out = append(a.out, ',')
		}
		first = false
		return a.value(e)
	})
	a.out = append(a.out, ']')
	return err
}

// value writes the value at the cursor, whose position is n (nil: not named by the policy).
func (a *applier) value(n *node) error {
	c := a.s.Peek()
	switch {
	case n == nil:
		switch c {
		case '{':
			return a.object(nil)
		case '[':
			return a.array(nil)
		}
		if a.p.def == Pseudonym && c != 'n' {
			return a.pseudonym(a.p.defDom)
		}
		return a.copy()
	case n.rule != nil:
		return a.apply(n.rule)
	}
	// A position the policy walks through: it names members below it, or elements ([]), or both.
	switch c {
	case '{':
		if n.children == nil {
			return &FieldError{n.path, "got an object, want an array (the policy declares " + n.path + "[])"}
		}
		return a.object(n)
	case '[':
		if n.elem == nil {
			return &FieldError{n.path, "got an array, but the policy declares no " + n.path + "[]"}
		}
		return a.array(n.elem)
	case 'n':
		return a.copy()
	}
	want := "an object"
	if n.children == nil {
		want = "an array"
	}
	return &FieldError{n.path, "got " + canon.KindName(c) + ", want " + want + " (the policy names values inside it)"}
}

func (a *applier) copy() error {
	v, err := a.s.Skip()
	a.out = append(a.out, v...)
	return err
}

// apply writes the value at the cursor treated by r.
func (a *applier) apply(r *rule) error {
	c := a.s.Peek()
	switch r.action {
	case Keep:
		return a.copy()
	case Drop: // only reached for a top-level misuse; dropped() removes members and elements
		_, err := a.s.Skip()
		return err
	}
	if c == 'n' {
		return a.copy()
	}
	switch r.action {
	case Pseudonym:
		return a.pseudonym(r.domain)
	case Vault:
		start := len(a.out)
		v, err := a.s.Skip()
		if err != nil {
			return err
		}
		if err := a.writePseudonym(r.domain, v); err != nil {
			return err
		}
		pn := a.out[start+1 : len(a.out)-1]
		return a.vault.Vault(a.p.domains[r.domain], string(pn), v)
	case Generalize:
		if r.labels != nil {
			return a.band(r)
		}
		return a.date(r)
	}
	return ErrVaultRequired
}

// pseudonym writes "pn:" + base64url(HMAC-SHA256(domain key, canonical JSON of the value)), cut to pseudonymLen.
func (a *applier) pseudonym(domain int) error {
	v, err := a.s.Skip()
	if err != nil {
		return err
	}
	return a.writePseudonym(domain, v)
}

// writePseudonym writes the pseudonym of the canonical value v as a JSON string.
func (a *applier) writePseudonym(domain int, v []byte) error {
	m, err := a.mac(domain)
	if err != nil {
		return err
	}
	m.Reset()
	m.Write(v)
	// 17 bytes encode to 23 characters whose first 22 are those of the whole digest's encoding.
	base64.RawURLEncoding.Encode(a.b64[:], m.Sum(a.sum[:0])[:17])
	a.out = append(a.out, `"pn:`...)
	a.out = append(a.out, a.b64[:pseudonymLen]...)
	a.out = append(a.out, '"')
	return nil
}

func (a *applier) mac(domain int) (hash.Hash, error) {
	m := &a.macs[domain]
	if m.checked {
		return m.h, nil
	}
	name := a.p.domains[domain]
	if a.keys == nil {
		return nil, fmt.Errorf("pseudonymisation domain %q: no keys", name)
	}
	k, err := a.keys.DomainKey(name)
	if err != nil {
		return nil, fmt.Errorf("pseudonymisation domain %q: %w", name, err)
	}
	if len(k) != KeySize {
		return nil, fmt.Errorf("pseudonymisation domain %q: key is %d bytes, want %d", name, len(k), KeySize)
	}
	if m.h == nil || !hmac.Equal(m.key, k) {
		m.key = append(m.key[:0], k...)
		m.h = hmac.New(sha256.New, m.key)
	}
	m.checked = true
	return m.h, nil
}

// band writes the band label of the number at the cursor.
func (a *applier) band(r *rule) error {
	c := a.s.Peek()
	if !isNumber(c) {
		return &FieldError{r.path, "got " + canon.KindName(c) + ", want a number to generalize"}
	}
	v, err := a.s.Skip()
	if err != nil {
		return err
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil {
		return &FieldError{r.path, "not a number"}
	}
	// The first bound above f; f is in the band below it.
	lo, hi := 0, len(r.bands)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if r.bands[mid] <= f {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	a.out = append(a.out, r.labels[lo]...)
	return nil
}

// date writes the month ("YYYY-MM") or year ("YYYY") of the date string at the cursor, as written: an RFC 3339 time
// keeps its own offset's calendar date, it is not converted to UTC.
func (a *applier) date(r *rule) error {
	c := a.s.Peek()
	if c != '"' {
		return &FieldError{r.path, "got " + canon.KindName(c) + ", want a date string to generalize"}
	}
	raw, err := a.s.RawString()
	if err != nil {
		return err
	}
	v := raw[1 : len(raw)-1] // dates have nothing to escape; a string that has is not a date
	if !isDate(v) {
		return &FieldError{r.path, "got a string that is not an RFC 3339 time or a YYYY-MM-DD date"}
	}
	n := 7
	if r.to == "year" {
		n = 4
	}
	a.out = append(a.out, '"')
	a.out = append(a.out, v[:n]...)
	a.out = append(a.out, '"')
	return nil
}

func isDate(v []byte) bool {
	if len(v) == 10 {
		_, err := time.Parse(time.DateOnly, string(v))
		return err == nil
	}
	if len(v) < 20 || (v[10] != 'T' && v[10] != 't') {
		return false
	}
	_, err := time.Parse(time.RFC3339Nano, string(v))
	return err == nil
}

// ErrNotCanonical means Apply was given bytes that are not canonical JSON; canonicalise with canon.Append first.
var ErrNotCanonical = canon.ErrNotCanonical

func ptr[T any](v T) *T { return &v }
