package api

import (
	"container/list"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/cairn-ai/cairn/internal/atomicfile"
)

// Roles of DESIGN.md's security model.
const (
	RoleIngest   = "ingest"
	RoleReviewer = "reviewer"
	RoleAuditor  = "auditor"
	RoleDPO      = "dpo"
	RoleAdmin    = "admin"
)

// Roles lists every role a token can carry.
var Roles = []string{RoleIngest, RoleReviewer, RoleAuditor, RoleDPO, RoleAdmin}

// Principal is an authenticated caller.
type Principal struct {
	Name    string   `json:"principal"`
	Roles   []string `json:"roles"`
	Systems []string `json:"systems,omitempty"` // empty: every system
	// Grants, when present, replace Roles and Systems for authorisation: each grant scopes its own roles (an
	// identity provider's groups each grant roles on their own systems).
	Grants []Grant `json:"-"`
}

// Can reports whether the principal holds role for system ("" for instance-wide actions). admin holds every role.
func (p *Principal) Can(role, system string) bool {
	if p == nil {
		return false
	}
	if p.Grants != nil {
		return slices.ContainsFunc(p.Grants, func(g Grant) bool { return grants(g.Roles, g.Systems, role, system) })
	}
	return grants(p.Roles, p.Systems, role, system)
}

// CanEverywhere reports whether the principal holds role on every system: what actions beyond any one system
// (token administration, erasure in a shared domain) need.
func (p *Principal) CanEverywhere(role string) bool {
	if p == nil {
		return false
	}
	if p.Grants != nil {
		return slices.ContainsFunc(p.Grants, func(g Grant) bool { return len(g.Systems) == 0 && grants(g.Roles, nil, role, "") })
	}
	return len(p.Systems) == 0 && grants(p.Roles, nil, role, "")
}

func grants(roles, systems []string, role, system string) bool {
	if !slices.Contains(roles, role) && !slices.Contains(roles, RoleAdmin) {
		return false
	}
	return system == "" || len(systems) == 0 || slices.Contains(systems, system)
}

// TokenFieldError says which field of a token request is wrong and why. Field is a JSON Pointer into the request.
type TokenFieldError struct {
	Field, Reason string
}

func (e *TokenFieldError) Error() string { return e.Field + ": " + e.Reason }

var systemName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// Validate checks a principal before a token is issued for it: a printable name, at least one known role, well-formed
// system names.
func (p *Principal) Validate() error {
	switch {
	case strings.TrimSpace(p.Name) == "":
		return &TokenFieldError{"/principal", "required"}
	case len(p.Name) > 128:
		return &TokenFieldError{"/principal", "longer than 128 bytes"}
	case strings.ContainsFunc(p.Name, func(r rune) bool { return !unicode.IsPrint(r) }):
		return &TokenFieldError{"/principal", "contains a control character"}
	case len(p.Roles) == 0:
		return &TokenFieldError{"/roles", "at least one role is required (" + strings.Join(Roles, ", ") + ")"}
	}
	for i, r := range p.Roles {
		if !slices.Contains(Roles, r) {
			return &TokenFieldError{"/roles/" + strconv.Itoa(i), "unknown role (want " + strings.Join(Roles, ", ") + ")"}
		}
		if slices.Index(p.Roles, r) != i {
			return &TokenFieldError{"/roles/" + strconv.Itoa(i), "repeated"}
		}
	}
	for i, s := range p.Systems {
		if !systemName.MatchString(s) {
			return &TokenFieldError{"/systems/" + strconv.Itoa(i), "not a system id"}
		}
	}
	return nil
}

// TokenInfo describes a token without its secret: what an administrator may see.
type TokenInfo struct {
	// ID names the token for listing and revocation; it is not a secret and does not authenticate.
	ID string `json:"id"`
	Principal
	Created time.Time  `json:"created,omitzero"`
	Expires *time.Time `json:"expires,omitempty"` // nil: never
	Revoked *time.Time `json:"revoked,omitempty"` // nil: not revoked
}

// Token states, as State reports them.
const (
	TokenActive  = "active"
	TokenExpired = "expired"
	TokenRevoked = "revoked"
)

// State is whether the token authenticates at time now: active, expired or revoked.
func (ti *TokenInfo) State(now time.Time) string {
	switch {
	case ti.Revoked != nil:
		return TokenRevoked
	case ti.Expires != nil && !now.Before(*ti.Expires):
		return TokenExpired
	}
	return TokenActive
}

type tokenRecord struct {
	TokenInfo
	Hash string `json:"sha256"` // hex SHA-256 of the token; tokens themselves are never stored
	// Logged is how much of this token's history the _admin log holds: "" nothing, "created", or "revoked".
	// Changes made to the file by `cairn token` (not through the API) are recorded by the server, which fills it.
	Logged string `json:"logged,omitempty"`
	// By names who made the last change through the file, for the _admin record ("cli:USER").
	By string `json:"by,omitempty"`
}

// Token history states, as tokenRecord.Logged holds them.
const (
	loggedCreated = "created"
	loggedRevoked = "revoked"
)

// TokenChange is a change to the token table that the _admin log does not hold yet.
type TokenChange struct {
	Action string // "token_created" or "token_revoked"
	Info   TokenInfo
	By     string // who made it through the token file; "" when unknown
}

// Unlogged lists the changes to the token table not yet recorded in _admin, oldest token first.
func (t *Tokens) Unlogged() []TokenChange {
	t.reload()
	t.mu.RLock()
	defer t.mu.RUnlock()
	var out []TokenChange
	for _, r := range t.recs {
		if r.Logged == "" {
			out = append(out, TokenChange{"token_created", r.TokenInfo, r.By})
		}
		if r.Revoked != nil && r.Logged != loggedRevoked {
			out = append(out, TokenChange{"token_revoked", r.TokenInfo, r.By})
		}
	}
	return out
}

// MarkLogged records that _admin now holds the change c.
func (t *Tokens) MarkLogged(c TokenChange) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.fresh(); err != nil {
		return err
	}
	i := slices.IndexFunc(t.recs, func(r tokenRecord) bool { return r.ID == c.Info.ID })
	if i < 0 {
		return ErrUnknownToken
	}
	want := loggedCreated
	if c.Action == "token_revoked" {
		want = loggedRevoked
	}
	if t.recs[i].Logged == want || t.recs[i].Logged == loggedRevoked {
		return nil
	}
	recs := slices.Clone(t.recs)
	recs[i].Logged = want
	return t.write(recs)
}

// SetBy makes the next changes through this table be attributed to by in _admin ("cli:USER").
func (t *Tokens) SetBy(by string) { t.by = by }

// Errors of token administration.
var (
	// ErrUnknownToken: no token has that id.
	ErrUnknownToken = errors.New("no token has that id")
	// ErrLastAdmin: revoking the token would leave no active admin token; create another admin token first.
	ErrLastAdmin = errors.New("this is the last active admin token; create another admin token before revoking it")
)

// Tokens is the bearer-token table, stored hashed in a file. Every Authenticate checks whether the file changed, so
// a token revoked by `cairn token revoke` on a running server stops working at once.
type Tokens struct {
	path string
	mu   sync.RWMutex
	recs []tokenRecord
	fi   fs.FileInfo // of the file when read, to notice a change made by another process
	by   string      // see SetBy
	// unlogged counts records with a change _admin does not hold yet.
	unlogged int
}

func countUnlogged(recs []tokenRecord) int {
	n := 0
	for _, r := range recs {
		if r.Logged == "" || r.Revoked != nil && r.Logged != loggedRevoked {
			n++
		}
	}
	return n
}

// HasUnlogged reports whether the table holds a change that _admin does not (cheap: no file access beyond the
// change check every call makes).
func (t *Tokens) HasUnlogged() bool {
	t.reload()
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.unlogged > 0
}

// LoadTokens reads the token file (a missing file is an empty table).
func LoadTokens(path string) (*Tokens, error) {
	t := &Tokens{path: path}
	if err := t.read(); err != nil {
		return nil, err
	}
	return t, nil
}

// read replaces the table with the file's content. The caller holds t.mu for writing, or owns t.
func (t *Tokens) read() error {
	fi, err := os.Stat(t.path)
	if errors.Is(err, fs.ErrNotExist) {
		t.recs, t.fi = nil, nil
		return nil
	}
	if err != nil {
		return err
	}
	b, err := os.ReadFile(t.path)
	if err != nil {
		return err
	}
	var recs []tokenRecord
	if err := json.Unmarshal(b, &recs); err != nil {
		return fmt.Errorf("token file %s is damaged", t.path)
	}
	for i := range recs {
		if recs[i].ID == "" {
			// Tokens created before ids existed get one derived from their hash, stable across reads.
			h := sha256.Sum256([]byte(recs[i].Hash))
			recs[i].ID = "tok_" + strings.ToLower(base32.StdEncoding.EncodeToString(h[:]))[:8]
		}
	}
	t.recs, t.fi, t.unlogged = recs, fi, countUnlogged(recs)
	return nil
}

// changed reports whether the file differs from the one last read (replaced, resized or touched).
func (t *Tokens) changed() bool {
	fi, err := os.Stat(t.path)
	if err != nil {
		return t.fi != nil
	}
	return t.fi == nil || !os.SameFile(fi, t.fi) || !fi.ModTime().Equal(t.fi.ModTime()) || fi.Size() != t.fi.Size()
}

// reload rereads the token file if it changed since it was read. On a read error the table is emptied rather
// than kept: a damaged file must not leave revoked tokens working.
func (t *Tokens) reload() {
	t.mu.RLock()
	ch := t.changed()
	t.mu.RUnlock()
	if !ch {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.changed() {
		if err := t.read(); err != nil {
			t.recs, t.fi = nil, nil
		}
	}
}

// Len is the number of tokens, revoked and expired ones included.
func (t *Tokens) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.recs)
}

// Create makes a new token for p that does not expire, stores its hash and returns the token (shown once).
func (t *Tokens) Create(p Principal) (string, error) {
	tok, _, err := t.Issue(p, 0)
	return tok, err
}

// Issue validates p, makes a new token for it, valid for ttl (0: no expiry), stores its hash and returns the token
// (shown once) and its description.
func (t *Tokens) Issue(p Principal, ttl time.Duration) (string, TokenInfo, error) {
	if err := p.Validate(); err != nil {
		return "", TokenInfo{}, err
	}
	if ttl < 0 {
		return "", TokenInfo{}, &TokenFieldError{"/expires_in", "must be positive"}
	}
	tok := "cairn_" + strings.ToLower(rand.Text())
	h := sha256.Sum256([]byte(tok))
	now := time.Now().UTC().Truncate(time.Second)
	ti := TokenInfo{Principal: p, Created: now}
	if ttl > 0 {
		exp := now.Add(ttl)
		ti.Expires = &exp
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.fresh(); err != nil {
		return "", TokenInfo{}, err
	}
	for ti.ID == "" || slices.ContainsFunc(t.recs, func(r tokenRecord) bool { return r.ID == ti.ID }) {
		ti.ID = "tok_" + strings.ToLower(rand.Text()[:8])
	}
	recs := append(slices.Clip(t.recs), tokenRecord{TokenInfo: ti, Hash: hex.EncodeToString(h[:]), By: t.by})
	if err := t.write(recs); err != nil {
		return "", TokenInfo{}, err
	}
	return tok, ti, nil
}

// List describes every token, in creation order. Hashes are not part of it.
func (t *Tokens) List() []TokenInfo {
	t.reload()
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]TokenInfo, len(t.recs))
	for i, r := range t.recs {
		out[i] = r.TokenInfo
	}
	return out
}

// Lookup describes the token token, whatever its state, so that a token found in the wrong place can be revoked.
func (t *Tokens) Lookup(token string) (TokenInfo, bool) {
	t.reload()
	h := sha256.Sum256([]byte(token))
	want := hex.EncodeToString(h[:])
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, r := range t.recs {
		if subtle.ConstantTimeCompare([]byte(r.Hash), []byte(want)) == 1 {
			return r.TokenInfo, true
		}
	}
	return TokenInfo{}, false
}

// Revoke revokes the token with id; it authenticates nobody from then on. Revoking a revoked token changes nothing.
// It refuses (ErrLastAdmin) to revoke the last active admin token, so that someone can still administer the server.
func (t *Tokens) Revoke(id string) (TokenInfo, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.fresh(); err != nil {
		return TokenInfo{}, err
	}
	i := slices.IndexFunc(t.recs, func(r tokenRecord) bool { return r.ID == id })
	if i < 0 {
		return TokenInfo{}, ErrUnknownToken
	}
	if t.recs[i].Revoked != nil {
		return t.recs[i].TokenInfo, nil
	}
	now := time.Now().UTC()
	if t.recs[i].State(now) == TokenActive && slices.Contains(t.recs[i].Roles, RoleAdmin) {
		admins := 0
		for _, r := range t.recs {
			if r.State(now) == TokenActive && slices.Contains(r.Roles, RoleAdmin) {
				admins++
			}
		}
		if admins <= 1 {
			return TokenInfo{}, ErrLastAdmin
		}
	}
	recs := slices.Clone(t.recs)
	rt := now.Truncate(time.Second)
	recs[i].Revoked, recs[i].By = &rt, t.by
	if err := t.write(recs); err != nil {
		return TokenInfo{}, err
	}
	return recs[i].TokenInfo, nil
}

// fresh rereads the file if another process changed it, so a change is made to the latest table. The caller holds
// t.mu for writing.
func (t *Tokens) fresh() error {
	if !t.changed() {
		return nil
	}
	return t.read()
}

// write stores recs and makes them the table. The caller holds t.mu for writing.
func (t *Tokens) write(recs []tokenRecord) error {
	b, err := json.MarshalIndent(recs, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(t.path, append(b, '\n'), 0o600); err != nil {
		return err
	}
	t.recs, t.unlogged = recs, countUnlogged(recs)
	t.fi, _ = os.Stat(t.path)
	return nil
}

// Authenticate returns the principal of a bearer token, or nil for an unknown, revoked or expired token. It
// rereads the token file first if it changed, so nothing revoked is served from memory.
func (t *Tokens) Authenticate(token string) *Principal {
	if token == "" {
		return nil
	}
	t.reload()
	h := sha256.Sum256([]byte(token))
	want := hex.EncodeToString(h[:])
	now := time.Now()
	t.mu.RLock()
	defer t.mu.RUnlock()
	var found *Principal
	for i := range t.recs {
		// A token authenticates only once its creation is recorded in _admin (Server records changes made through
		// the file before it authenticates anyone).
		if subtle.ConstantTimeCompare([]byte(t.recs[i].Hash), []byte(want)) == 1 && t.recs[i].State(now) == TokenActive &&
			t.recs[i].Logged != "" {
			p := t.recs[i].Principal
			p.Roles, p.Systems = slices.Clone(p.Roles), slices.Clone(p.Systems)
			found = &p
		}
	}
	return found
}

// failLimiter limits failed authentications per client address with a token bucket: burst failures at once, then
// burst per minute. It tracks at most max addresses, forgetting the least recently failing one first.
type failLimiter struct {
	burst float64
	rate  float64 // failures allowed per second, once the burst is spent
	max   int
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*failBucket
	lru     list.List // of *failBucket, most recent failure at the front
}

type failBucket struct {
	addr   string
	tokens float64
	last   time.Time
	elem   *list.Element
}

func newFailLimiter(burst, max int) *failLimiter {
	return &failLimiter{burst: float64(burst), rate: float64(burst) / 60, max: max, now: time.Now, buckets: map[string]*failBucket{}}
}

// fail records a failed authentication from addr. It returns 0 while addr is within its allowance, otherwise how
// long until it may fail again.
func (l *failLimiter) fail(addr string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b := l.buckets[addr]
	if b == nil {
		if len(l.buckets) >= l.max {
			old := l.lru.Back().Value.(*failBucket)
			l.lru.Remove(old.elem)
			delete(l.buckets, old.addr)
		}
		b = &failBucket{addr: addr, tokens: l.burst, last: now}
		b.elem = l.lru.PushFront(b)
		l.buckets[addr] = b
	} else {
		b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
		b.last = now
		l.lru.MoveToFront(b.elem)
	}
	if b.tokens >= 1 {
		b.tokens--
		return 0
	}
	return time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
}

// clientAddr is the address failures are counted against: the peer's IP, and for IPv6 its /64, which one
// client usually holds whole. Forwarding headers are not trusted. loopback reports a client on this host.
func clientAddr(remote string) (addr string, loopback bool) {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host, false
	}
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String(), ip.IsLoopback()
	}
	return ip.String(), ip.IsLoopback()
}
