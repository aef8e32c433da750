// Package pseudo owns field policies: the rules, declared per AI system, that rewrite an event's payload before
// anything about it is written — keeping, dropping, pseudonymising or generalising each field — and the keyed
// digest of a raw input that lets a key holder later prove what the system saw.
//
// pseudo must never let a value the policy names leave in raw form: a field it must pseudonymise or generalise that
// arrives in an unexpected shape is rejected, never passed through. It never logs, and never puts a payload value
// (or a key) in an error: errors name policy paths and JSON kinds only.
package pseudo

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cairn-ai/cairn/internal/canon"
)

// Action is what a policy does with a value.
type Action uint8

// Actions, by their names in a policy.
const (
	Keep       Action = iota + 1 // "keep": the value as sent
	Drop                         // "drop": the member (or array element) is removed
	Pseudonym                    // "pseudonym": "pn:" + a keyed digest of the value's canonical JSON
	Generalize                   // "generalize": a number to its band, a date to its month or year
	Vault                        // "vault": a pseudonym whose original is kept in the token vault
)

var actionNames = [...]string{Keep: "keep", Drop: "drop", Pseudonym: "pseudonym", Generalize: "generalize", Vault: "vault"}

func (a Action) String() string {
	if int(a) < len(actionNames) && actionNames[a] != "" {
		return actionNames[a]
	}
	return "action(" + strconv.Itoa(int(a)) + ")"
}

// DefaultAction applies to leaf values the policy does not name when the policy has no "default".
//
// Keep is the default, not drop, deliberately. Drop would be the safer failure for an unknown field that turns out to
// be personal, but the payload is already sealed at rest under a per-event key (DESIGN.md, layer 3), so an unnamed
// field is never stored in clear; and silently dropping every field the policy author did not foresee would destroy
// the record the AI Act requires the log to keep (Art. 12: inputs and outputs sufficient to reconstruct a decision),
// with nobody noticing until an audit. A deployer that wants minimisation by default writes "default": "drop" and
// names what to keep; the choice is then explicit and versioned with the system definition.
const DefaultAction = Keep

// Policy is a parsed field policy: the "field_policy" member of a system definition. A Policy is immutable and safe
// for concurrent use.
//
// The policy format is a JSON object:
//
//	{"default":    "keep" | "drop" | "pseudonym",   // for unnamed leaf values; absent means keep
//	 "domain":     "customers",                     // pseudonymisation domain for rules that name none
//	 "rotate":     "never" | "year" | "month",      // pseudonym key period; absent means never
//	 "reidentify": {"approvals": 1 | 2},            // dpo principals needed to reverse a vaulted pseudonym
//	 "fields":     {PATH: RULE, ...}}
//
// "rotate" limits how long pseudonyms link: with "month", the same value gets a different pseudonym each calendar
// month (UTC) of capture, so events of different months cannot be joined on it without the vault. Systems that share
// a domain link only while they use the same rotation.
//
// A PATH is dot-separated member names from the payload root; "[]" after a name (repeatable, for nested arrays)
// means every element of that array: "input.items[].email". Names are matched exactly (case-sensitive); names
// containing '.', '[' or ']' cannot be addressed. A RULE is {"action": ACTION} with, for "pseudonym" and "vault", an
// optional "domain", and for "generalize" exactly one of "bands" (ascending numbers) or "to" ("month" or "year").
//
// A rule applies to the whole value at its path, containers included. A path that is a prefix of another (like
// "input" and "input.name", or "items" and "items[]") is accepted only when both rules are identical, since the outer
// one decides; containers between the root and a named path are walked, and their unnamed leaves get the default.
type Policy struct {
	// Version identifies the policy: "sha256:" and the first 12 hex digits of the SHA-256 of its canonical JSON.
	// Envelopes record it so an auditor can tell which policy shaped a payload.
	Version string

	def       Action
	defDom    int // index into domains of the default domain, or -1
	rotate    string
	approvals int
	domains   []string
	root      *node
	hasVault  bool
	pool      sync.Pool // of *applier
}

// rule is one field's treatment.
type rule struct {
	action Action
	domain int       // index into Policy.domains, for Pseudonym and Vault
	bands  []float64 // for Generalize by bands, ascending
	labels [][]byte  // canonical JSON strings: labels[i] is the band below bands[i], labels[len(bands)] the top one
	to     string    // for Generalize of dates: "month" or "year"
	path   string
}

func (r *rule) equal(o *rule) bool {
	if r.action != o.action || r.domain != o.domain || r.to != o.to || len(r.bands) != len(o.bands) {
		return false
	}
	for i := range r.bands {
		if r.bands[i] != o.bands[i] {
			return false
		}
	}
	return true
}

// node is a position in the policy's path tree. A value at a node with a rule gets the rule; a value at a node
// without one is an object (walked through children) or an array (walked through elem).
type node struct {
	children map[string]*node
	elem     *node
	rule     *rule
	path     string // the policy path of this position, for errors: "input.items[]"
}

// PolicyError is a field policy Parse rejected. Path is the JSON Pointer of the policy member at fault (for example
// "/fields/input.iban/domain"); Reason says what is wrong.
type PolicyError struct {
	Path   string
	Reason string
}

func (e *PolicyError) Error() string {
	if e.Path == "" {
		return "field policy: " + e.Reason
	}
	return "field policy at " + strconv.Quote(e.Path) + ": " + e.Reason
}

func pointer(segs ...string) string {
	var b strings.Builder
	for _, s := range segs {
		b.WriteByte('/')
		b.WriteString(strings.NewReplacer("~", "~0", "/", "~1").Replace(s))
	}
	return b.String()
}

// maxBands bounds a generalize rule's band list; a policy is configuration, not data.
const maxBands = 1000

// Parse parses a field policy. It accepts any strict JSON (canon.Append's rules) and computes Version over the
// canonical form, so the same policy written differently has the same version. Errors are *PolicyError or, for
// malformed JSON, *canon.Error; both name the policy path at fault.
func Parse(policyJSON []byte) (*Policy, error) {
	c, err := canon.Append(nil, policyJSON)
	if err != nil {
		return nil, fmt.Errorf("field policy: %w", err)
	}
	sum := sha256.Sum256(c)
	p := &Policy{Version: "sha256:" + hex.EncodeToString(sum[:6]), def: DefaultAction, defDom: -1, root: &node{},
		rotate: RotateNever, approvals: 1}
	s := ptr(canon.NewScanner(c))
	if s.Peek() != '{' {
		return nil, &PolicyError{"", "got " + canon.KindName(s.Peek()) + ", want an object"}
	}
	var fields []byte
	err = s.Members(func(_, name []byte) error {
		switch string(name) {
		case "default":
			v, err := str(s, "/default")
			if err != nil {
				return err
			}
			switch a := parseAction(v); a {
			case Keep, Drop, Pseudonym:
				p.def = a
			default:
				return &PolicyError{"/default", "must be keep, drop or pseudonym"}
			}
		case "domain":
			v, err := str(s, "/domain")
			if err != nil {
				return err
			}
			if err := checkDomain(v); err != nil {
				return &PolicyError{"/domain", err.Error()}
			}
			p.defDom = p.domain(v)
		case "fields":
			if s.Peek() != '{' {
				return &PolicyError{"/fields", "got " + canon.KindName(s.Peek()) + ", want an object"}
			}
			fields, _ = s.Skip()
		case "rotate":
			v, err := str(s, "/rotate")
			if err != nil {
				return err
			}
			if v != RotateNever && v != RotateYear && v != RotateMonth {
				return &PolicyError{"/rotate", "must be never, year or month"}
			}
			p.rotate = v
		case "reidentify":
			if s.Peek() != '{' {
				return &PolicyError{"/reidentify", "got " + canon.KindName(s.Peek()) + ", want an object"}
			}
			return s.Members(func(_, name []byte) error {
				if string(name) != "approvals" {
					return &PolicyError{pointer("reidentify", string(name)), "unknown member (want approvals)"}
				}
				v, err := s.Skip()
				if err != nil {
					return err
				}
				switch string(v) {
				case "1", "2":
					p.approvals = int(v[0] - '0')
				default:
					return &PolicyError{"/reidentify/approvals", "must be 1 or 2"}
				}
				return nil
			})
		default:
			return &PolicyError{pointer(string(name)), "unknown member (want default, domain, rotate, reidentify, fields)"}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if p.def == Pseudonym && p.defDom < 0 {
		return nil, &PolicyError{"/default", "pseudonym needs a domain"}
	}
	if fields != nil {
		fs := ptr(canon.NewScanner(fields))
		err := fs.Members(func(_, name []byte) error {
			path := string(name)
			r, err := p.parseRule(fs, path)
			if err != nil {
				return err
			}
			return p.add(path, r)
		})
		if err != nil {
			return nil, err
		}
	}
	if err := checkPrefixes(p.root, nil); err != nil {
		return nil, err
	}
	return p, nil
}

// Pseudonym key rotation periods, the values of a policy's "rotate".
const (
	RotateNever = "never"
	RotateYear  = "year"
	RotateMonth = "month"
)

// NeedsVault reports whether a rule uses the vault action.
func (p *Policy) NeedsVault() bool { return p.hasVault }

// Domains lists the pseudonymisation domains the policy uses, each once, so the caller can check its keyring has
// them before the policy is put in force.
func (p *Policy) Domains() []string { return append([]string(nil), p.domains...) }

// Approvals is how many distinct dpo principals must agree before a vaulted pseudonym of this system is reversed:
// 1 (the requester) or 2 (the requester and a second one).
func (p *Policy) Approvals() int { return p.approvals }

// KeyPeriod names the pseudonymisation key period that a value captured at t falls in under the policy's rotation:
// "" (never rotates), "2026" or "2026-11" (UTC).
func (p *Policy) KeyPeriod(t time.Time) string {
	switch p.rotate {
	case RotateYear:
		return t.UTC().Format("2006")
	case RotateMonth:
		return t.UTC().Format("2006-01")
	}
	return ""
}

func (p *Policy) domain(d string) int {
	for i, x := range p.domains {
		if x == d {
			return i
		}
	}
	p.domains = append(p.domains, d)
	return len(p.domains) - 1
}

// checkDomain accepts short names of letters, digits, '.', '_' and '-'; domains name keys, so they stay simple.
func checkDomain(d string) error {
	if d == "" || len(d) > 64 {
		return errors.New("a domain is 1 to 64 characters")
	}
	for i := 0; i < len(d); i++ {
		c := d[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return errors.New("a domain has only letters, digits, '.', '_' and '-'")
		}
	}
	return nil
}

func parseAction(v string) Action {
	for a, n := range actionNames {
		if n != "" && n == v {
			return Action(a)
		}
	}
	return 0
}

// str reads a string value from a canonical policy.
func str(s *canon.Scanner, ptr string) (string, error) {
	if s.Peek() != '"' {
		return "", &PolicyError{ptr, "got " + canon.KindName(s.Peek()) + ", want a string"}
	}
	r, err := s.RawString()
	if err != nil {
		return "", err
	}
	v, err := canon.Unescape(r)
	return string(v), err
}

func (p *Policy) parseRule(s *canon.Scanner, path string) (*rule, error) {
	at := func(m string) string {
		if m == "" {
			return pointer("fields", path)
		}
		return pointer("fields", path, m)
	}
	if s.Peek() != '{' {
		return nil, &PolicyError{at(""), "got " + canon.KindName(s.Peek()) + ", want an object with an action"}
	}
	r := &rule{domain: -1, path: path}
	var hasDomain, hasBands bool
	err := s.Members(func(_, name []byte) error {
		m := string(name)
		switch m {
		case "action":
			v, err := str(s, at(m))
			if err != nil {
				return err
			}
			if r.action = parseAction(v); r.action == 0 {
				return &PolicyError{at(m), "unknown action (want keep, drop, pseudonym, generalize or vault)"}
			}
		case "domain":
			v, err := str(s, at(m))
			if err != nil {
				return err
			}
			if err := checkDomain(v); err != nil {
				return &PolicyError{at(m), err.Error()}
			}
			hasDomain, r.domain = true, p.domain(v)
		case "to":
			v, err := str(s, at(m))
			if err != nil {
				return err
			}
			if v != "month" && v != "year" {
				return &PolicyError{at(m), "must be month or year"}
			}
			r.to = v
		case "bands":
			hasBands = true
			if s.Peek() != '[' {
				return &PolicyError{at(m), "got " + canon.KindName(s.Peek()) + ", want an array of numbers"}
			}
			return s.Elements(func(i int) error {
				ptr := at(m) + "/" + strconv.Itoa(i)
				v, err := s.Skip()
				if err != nil {
					return err
				}
				if !isNumber(v[0]) {
					return &PolicyError{ptr, "got " + canon.KindName(v[0]) + ", want a number"}
				}
				f, err := strconv.ParseFloat(string(v), 64)
				if err != nil {
					return &PolicyError{ptr, "not a number"}
				}
				if n := len(r.bands); n > 0 && f <= r.bands[n-1] {
					return &PolicyError{ptr, "bands must be strictly ascending"}
				}
				if len(r.bands) == maxBands {
					return &PolicyError{at(m), "more than " + strconv.Itoa(maxBands) + " bands"}
				}
				r.bands = append(r.bands, f)
				return nil
			})
		default:
			return &PolicyError{at(m), "unknown member (want action, domain, bands, to)"}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	switch r.action {
	case 0:
		return nil, &PolicyError{at(""), "missing action"}
	case Generalize:
		switch {
		case hasBands && r.to != "":
			return nil, &PolicyError{at(""), "generalize takes bands or to, not both"}
		case hasBands && len(r.bands) == 0:
			return nil, &PolicyError{at("bands"), "needs at least one bound"}
		case !hasBands && r.to == "":
			return nil, &PolicyError{at(""), "generalize needs bands (for numbers) or to (for dates)"}
		}
		r.labels = bandLabels(r.bands)
	default:
		if hasBands || r.to != "" {
			return nil, &PolicyError{at(""), "bands and to belong to generalize only"}
		}
	}
	switch r.action {
	case Pseudonym, Vault:
		if !hasDomain {
			if p.defDom < 0 {
				return nil, &PolicyError{at(""), r.action.String() + " needs a domain (here or at /domain)"}
			}
			r.domain = p.defDom
		}
		p.hasVault = p.hasVault || r.action == Vault
	default:
		if hasDomain {
			return nil, &PolicyError{at("domain"), "domain belongs to pseudonym and vault only"}
		}
	}
	return r, nil
}

// bandLabels renders the half-open intervals around bounds as canonical JSON strings: "(-inf,b0)", "[b0,b1)", …,
// "[bn,+inf)".
func bandLabels(bounds []float64) [][]byte {
	if len(bounds) == 0 {
		return nil
	}
	num := func(f float64) string {
		b, _ := canon.AppendNumber(nil, f) // bounds are finite: they came from canonical JSON
		return string(b)
	}
	labels := make([][]byte, len(bounds)+1)
	labels[0] = canon.AppendString(nil, "(-inf,"+num(bounds[0])+")")
	for i := 1; i < len(bounds); i++ {
		labels[i] = canon.AppendString(nil, "["+num(bounds[i-1])+","+num(bounds[i])+")")
	}
	labels[len(bounds)] = canon.AppendString(nil, "["+num(bounds[len(bounds)-1])+",+inf)")
	return labels
}

// add places r at path in the tree, checking the path's syntax.
func (p *Policy) add(path string, r *rule) error {
	ptr := pointer("fields", path)
	if path == "" {
		return &PolicyError{ptr, "empty path"}
	}
	segs := strings.Split(path, ".")
	if len(segs) > canon.MaxDepth {
		return &PolicyError{ptr, "path deeper than " + strconv.Itoa(canon.MaxDepth)}
	}
	n := p.root
	var walked strings.Builder
	for i, seg := range segs {
		name := seg
		arrays := 0
		for strings.HasSuffix(name, "[]") {
			name = name[:len(name)-2]
			arrays++
		}
		switch {
		case name == "":
			return &PolicyError{ptr, "segment " + strconv.Itoa(i+1) + " has no member name"}
		case strings.ContainsAny(name, "[]"):
			return &PolicyError{ptr, "segment " + strconv.Itoa(i+1) + ": '[' and ']' only as a trailing []"}
		}
		if i > 0 {
			walked.WriteByte('.')
		}
		walked.WriteString(name)
		if n.children == nil {
			n.children = map[string]*node{}
		}
		c := n.children[name]
		if c == nil {
			c = &node{path: walked.String()}
			n.children[name] = c
		}
		n = c
		for range arrays {
			walked.WriteString("[]")
			if n.elem == nil {
				n.elem = &node{path: walked.String()}
			}
			n = n.elem
		}
	}
	if n.rule != nil {
		return &PolicyError{ptr, "duplicates the path " + strconv.Quote(n.rule.path)}
	}
	n.rule = r
	return nil
}

// checkPrefixes rejects a rule below another rule unless the two are identical (the outer one decides the whole
// value, so a different inner rule would be silently ignored).
func checkPrefixes(n *node, outer *rule) error {
	if n.rule != nil {
		if outer != nil && !outer.equal(n.rule) {
			return &PolicyError{pointer("fields", n.rule.path), "conflicts with " + strconv.Quote(outer.path) +
				", which already decides this value"}
		}
		if outer == nil {
			outer = n.rule
		}
	}
	// Visit children in sorted order so the error reported is deterministic.
	names := make([]string, 0, len(n.children))
	for k := range n.children {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		if err := checkPrefixes(n.children[k], outer); err != nil {
			return err
		}
	}
	if n.elem != nil {
		return checkPrefixes(n.elem, outer)
	}
	return nil
}

func isNumber(c byte) bool { return c == '-' || ('0' <= c && c <= '9') }

// InputDigest returns the keyed digest of a canonical JSON value, "hmac-sha256:" and 64 hex digits: HMAC-SHA256 under
// key. A key holder can later show that a given raw input is the one the system saw by recomputing it; without the
// key the digest reveals nothing usable about the input, even for guessable inputs. key should be 32 random bytes
// from the keyring, distinct from every pseudonymisation domain key; canonicalValue must be canon.Append's output,
// or the same input written differently digests differently.
func InputDigest(key, canonicalValue []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write(canonicalValue)
	var sum [sha256.Size]byte
	return "hmac-sha256:" + hex.EncodeToString(m.Sum(sum[:0]))
}
