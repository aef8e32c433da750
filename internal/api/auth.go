package api

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

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

// Principal is an authenticated caller.
type Principal struct {
	Name    string   `json:"principal"`
	Roles   []string `json:"roles"`
	Systems []string `json:"systems,omitempty"` // empty: every system
}

// Can reports whether the principal holds role for system ("" for instance-wide actions). admin holds every role.
func (p *Principal) Can(role, system string) bool {
	if p == nil {
		return false
	}
	if !slices.Contains(p.Roles, role) && !slices.Contains(p.Roles, RoleAdmin) {
		return false
	}
	return system == "" || len(p.Systems) == 0 || slices.Contains(p.Systems, system)
}

type tokenRecord struct {
	Principal
	Hash string `json:"sha256"` // hex SHA-256 of the token; tokens themselves are never stored
}

// Tokens is the bearer-token table, stored hashed in a file.
type Tokens struct {
	path  string
	mu    sync.RWMutex
	recs  []tokenRecord
	mtime time.Time // of the file when read, so tokens created by `cairn token create` are picked up
}

// LoadTokens reads the token file (a missing file is an empty table).
func LoadTokens(path string) (*Tokens, error) {
	t := &Tokens{path: path}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return t, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &t.recs); err != nil {
		return nil, fmt.Errorf("token file %s is damaged", path)
	}
	if fi, err := os.Stat(path); err == nil {
		t.mtime = fi.ModTime()
	}
	return t, nil
}

// reload rereads the token file if it changed since it was read.
func (t *Tokens) reload() {
	fi, err := os.Stat(t.path)
	if err != nil {
		return
	}
	t.mu.RLock()
	same := fi.ModTime().Equal(t.mtime)
	t.mu.RUnlock()
	if same {
		return
	}
	n, err := LoadTokens(t.path)
	if err != nil {
		return
	}
	t.mu.Lock()
	t.recs, t.mtime = n.recs, n.mtime
	t.mu.Unlock()
}

// Len is the number of tokens.
func (t *Tokens) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.recs)
}

// Create makes a new token for p, stores its hash and returns the token (shown once).
func (t *Tokens) Create(p Principal) (string, error) {
	tok := "cairn_" + strings.ToLower(rand.Text())
	h := sha256.Sum256([]byte(tok))
	t.mu.Lock()
	defer t.mu.Unlock()
	t.recs = append(t.recs, tokenRecord{Principal: p, Hash: hex.EncodeToString(h[:])})
	b, _ := json.MarshalIndent(t.recs, "", "  ")
	if err := atomicfile.Write(t.path, b, 0o600); err != nil {
		t.recs = t.recs[:len(t.recs)-1]
		return "", err
	}
	return tok, nil
}

// Authenticate returns the principal of a bearer token, or nil.
func (t *Tokens) Authenticate(token string) *Principal {
	if token == "" {
		return nil
	}
	h := sha256.Sum256([]byte(token))
	want := hex.EncodeToString(h[:])
	if p := t.lookup(want); p != nil {
		return p
	}
	t.reload()
	return t.lookup(want)
}

func (t *Tokens) lookup(want string) *Principal {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var found *Principal
	for i := range t.recs {
		if subtle.ConstantTimeCompare([]byte(t.recs[i].Hash), []byte(want)) == 1 {
			p := t.recs[i].Principal
			found = &p
		}
	}
	return found
}
