// Package vault owns the token vault: the original values behind the pseudonyms a field policy marks "vault", kept
// apart from the log — in their own database, under their own key — so that a data protection officer can reverse a
// pseudonym for a stated purpose, and a data subject can be forgotten.
//
// Every value is encrypted before it reaches the database: AES-256-GCM under a key derived from the vault key for
// that one (domain, pseudonym), so the database file alone reveals nothing but how many entries it holds. Erasing a
// subject deletes its rows (with SQLite's secure_delete, so the pages are overwritten); the pseudonyms in the log stay
// and still link the subject's events, but nothing that remains can reverse them.
//
// The vault never logs, and never puts a value, a pseudonym or a key in an error.
package vault

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // database/sql driver "sqlite"

	"github.com/cairn-ai/cairn/internal/atomicfile"
	"github.com/cairn-ai/cairn/internal/pseudo"
)

// KeySize is the length of the vault key.
const KeySize = 32

// Entry is one vaulted value: the pseudonym a policy wrote into a payload, its domain, and the canonical JSON of the
// original value.
type Entry = pseudo.VaultEntry

// Vault is an open token vault. It is safe for concurrent use.
type Vault struct {
	db      *sql.DB
	encKey  []byte // derives one AES key per entry
	subjKey []byte // keys the subject digest that ties a value's pseudonyms together across key periods
	vacuum  bool   // PostgreSQL: VACUUM after an erasure

	putMu   sync.Mutex
	pending []*putReq // Puts waiting for the next group commit
	writing bool      // a leader is committing
}

// ErrNotFound means a reidentification request does not exist.
var ErrNotFound = errors.New("not found")

// LoadKey reads a vault key file (32 random bytes in base64, like the KEK's). With create, a missing file is made
// (mode 0600) and created reports so.
func LoadKey(path string, create bool) (key []byte, created bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && create {
		key = make([]byte, KeySize)
		rand.Read(key)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, false, fmt.Errorf("create vault key: %w", err)
		}
		if err := atomicfile.Write(path, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
			return nil, false, fmt.Errorf("create vault key: %w", err)
		}
		return key, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read vault key: %w", err)
	}
	key, err = base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) != KeySize {
		return nil, false, fmt.Errorf("vault key %s: want %d bytes in base64", path, KeySize)
	}
	return key, false, nil
}

// Open opens (creating if needed) the vault database at path under key.
//
// The database runs with a rollback journal, not a write-ahead log, and secure_delete: an erased value must not
// survive in a WAL file or a free page. synchronous=FULL makes every Put durable before it returns.
func Open(path string, key []byte) (*Vault, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("vault key must be %d bytes", KeySize)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open vault: %w", err)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?_txlock=immediate&_pragma=busy_timeout(10000)"+
		"&_pragma=journal_mode(DELETE)&_pragma=synchronous(FULL)&_pragma=secure_delete(ON)")
	if err != nil {
		return nil, fmt.Errorf("open vault: %w", err)
	}
	db.SetMaxOpenConns(1) // one writer; the vault is small and off the hot path for most events
	v, err := newVault(db, key, "BLOB")
	if err != nil {
		db.Close()
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		db.Close()
		return nil, fmt.Errorf("open vault: %w", err)
	}
	return v, nil
}

// OpenPostgres opens (creating its tables if needed) a vault in a PostgreSQL database, for nodes that share a
// PostgreSQL store: db comes from the pgx stdlib driver, connected with the vault's own credentials and its own
// schema as search_path, so the log store's role cannot read it. PostgreSQL keeps deleted rows until VACUUM reuses
// their space, so an erasure is followed by a VACUUM of the entries table (best effort: it needs the table's owner).
func OpenPostgres(db *sql.DB, key []byte) (*Vault, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("vault key must be %d bytes", KeySize)
	}
	v, err := newVault(db, key, "BYTEA")
	if err != nil {
		return nil, err
	}
	v.vacuum = true
	return v, nil
}

func newVault(db *sql.DB, key []byte, blob string) (*Vault, error) {
	enc, err := hkdf.Key(sha256.New, key, nil, "cairn/v1/vault/entries", 32)
	if err != nil {
		return nil, err
	}
	subj, err := hkdf.Key(sha256.New, key, nil, "cairn/v1/vault/subjects", 32)
	if err != nil {
		return nil, err
	}
	v := &Vault{db: db, encKey: enc, subjKey: subj}
	for _, stmt := range schema {
		_, err := db.Exec(strings.ReplaceAll(stmt, "BLOB", blob))
		if err != nil {
			// Two nodes creating the tables at once: one loses the race; the tables are there when it retries.
			_, err = db.Exec(strings.ReplaceAll(stmt, "BLOB", blob))
		}
		if err != nil {
			return nil, fmt.Errorf("vault schema: %w", err)
		}
	}
	// The key check: a vault opened with another key would hand out garbage or nothing; say so at once. The first
	// opener writes it; every later one (another node too) compares.
	check := v.mac(v.encKey, "key-check")
	if _, err := db.Exec(`INSERT INTO meta (name, value) VALUES ('key_check', $1) ON CONFLICT DO NOTHING`, check); err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	var stored []byte
	if err := db.QueryRow(`SELECT value FROM meta WHERE name = 'key_check'`).Scan(&stored); err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	if !hmac.Equal(stored, check) {
		return nil, errors.New("vault: the vault key does not open this vault")
	}
	return v, nil
}

var schema = []string{
	`CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS entries (
		domain TEXT NOT NULL, pseudonym TEXT NOT NULL, subject BLOB NOT NULL, sealed BLOB NOT NULL,
		created INTEGER NOT NULL, PRIMARY KEY (domain, pseudonym))`,
	`CREATE INDEX IF NOT EXISTS entries_subject ON entries (subject)`,
	`CREATE TABLE IF NOT EXISTS requests (
		id TEXT PRIMARY KEY, system TEXT NOT NULL, requester TEXT NOT NULL, purpose TEXT NOT NULL,
		pseudonyms TEXT NOT NULL, approvals INTEGER NOT NULL, approver TEXT, state TEXT NOT NULL,
		created INTEGER NOT NULL, decided INTEGER)`,
}

// Close closes the database.
func (v *Vault) Close() error { return v.db.Close() }

func (v *Vault) mac(key []byte, parts ...string) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write([]byte(p))
		m.Write([]byte{0})
	}
	return m.Sum(nil)
}

func (v *Vault) aead(domain, pseudonym string) cipher.AEAD {
	b, _ := aes.NewCipher(v.mac(v.encKey, "entry", domain, pseudonym))
	g, _ := cipher.NewGCM(b)
	return g
}

// subject is the keyed digest that every pseudonym of one value in one domain shares, whatever the key period.
func (v *Vault) subject(domain string, value []byte) []byte {
	return v.mac(v.subjKey, "subject", domain, string(value))
}

// Put stores entries durably, in one transaction. An entry already present is left as it is (its value is, by
// construction of pseudonyms, the same).
//
// The key for each entry is derived from the vault key and the (domain, pseudonym) alone, and an entry is written
// once, so a fixed nonce never encrypts two different plaintexts under one key.
func (v *Vault) Put(ctx context.Context, entries []Entry) error {
	if len(entries) == 0 {
		return nil
	}
	// Encryption runs here, in the caller's goroutine; only the inserts are serialised, and concurrent Puts share
	// one transaction (group commit): a durable SQLite commit costs two fsyncs, whatever it holds.
	rows := make([]row, len(entries))
	now := time.Now().Unix()
	var nonce [12]byte
	for i, e := range entries {
		rows[i] = row{e.Domain, e.Pseudonym, v.subject(e.Domain, e.Value),
			v.aead(e.Domain, e.Pseudonym).Seal(nil, nonce[:], e.Value, []byte(e.Domain+"\x00"+e.Pseudonym)), now}
	}
	req := &putReq{rows: rows, done: make(chan error, 1)}
	v.putMu.Lock()
	v.pending = append(v.pending, req)
	leader := len(v.pending) == 1 && !v.writing
	if leader {
		v.writing = true
	}
	v.putMu.Unlock()
	if leader {
		v.commitPending(ctx)
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		// The request may still be committed; its entries are harmless (each maps a pseudonym to its original).
		return ctx.Err()
	}
}

type row struct {
	domain, pseudonym string
	subject, sealed   []byte
	created           int64
}

type putReq struct {
	rows []row
	done chan error
}

// commitPending writes every queued request in one transaction. One goroutine at a time runs it (the first Put to
// find the queue idle); if more requests queued meanwhile, it hands the next round to a new goroutine rather than
// keep its own caller waiting under sustained load.
func (v *Vault) commitPending(ctx context.Context) {
	v.putMu.Lock()
	batch := v.pending
	v.pending = nil
	v.putMu.Unlock()
	err := v.insert(context.WithoutCancel(ctx), batch)
	for _, r := range batch {
		r.done <- err
	}
	v.putMu.Lock()
	defer v.putMu.Unlock()
	if len(v.pending) > 0 {
		go v.commitPending(context.WithoutCancel(ctx))
		return
	}
	v.writing = false
}

func (v *Vault) insert(ctx context.Context, batch []*putReq) error {
	tx, err := v.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("vault put: %w", err)
	}
	defer tx.Rollback()
	st, err := tx.PrepareContext(ctx, `INSERT INTO entries (domain, pseudonym, subject, sealed, created)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`)
	if err != nil {
		return fmt.Errorf("vault put: %w", err)
	}
	for _, r := range batch {
		for _, e := range r.rows {
			if _, err := st.ExecContext(ctx, e.domain, e.pseudonym, e.subject, e.sealed, e.created); err != nil {
				return fmt.Errorf("vault put: %w", err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("vault put: %w", err)
	}
	return nil
}

// Lookup returns the original values (canonical JSON) of the pseudonyms found in one of domains, keyed by pseudonym.
// Pseudonyms not in the vault — never vaulted, or erased — are absent from the map.
func (v *Vault) Lookup(ctx context.Context, domains, pseudonyms []string) (map[string][]byte, error) {
	out := map[string][]byte{}
	var nonce [12]byte
	for _, pn := range pseudonyms {
		for _, d := range domains {
			var sealed []byte
			err := v.db.QueryRowContext(ctx, `SELECT sealed FROM entries WHERE domain = $1 AND pseudonym = $2`, d, pn).Scan(&sealed)
			if errors.Is(err, sql.ErrNoRows) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("vault lookup: %w", err)
			}
			pt, err := v.aead(d, pn).Open(nil, nonce[:], sealed, []byte(d+"\x00"+pn))
			if err != nil {
				return nil, errors.New("vault lookup: an entry does not decrypt: the vault was altered")
			}
			out[pn] = pt
			break
		}
	}
	return out, nil
}

// Erase forgets subjects: every entry of domain whose value is one of values (canonical JSON), and every entry that
// shares a subject with one of pseudonyms — so all the pseudonyms a value had across key periods go at once. It
// reports how many entries it deleted.
func (v *Vault) Erase(ctx context.Context, domain string, pseudonyms []string, values [][]byte) (int, error) {
	subjects := map[string]bool{}
	for _, val := range values {
		subjects[string(v.subject(domain, val))] = true
	}
	for _, pn := range pseudonyms {
		var s []byte
		err := v.db.QueryRowContext(ctx, `SELECT subject FROM entries WHERE domain = $1 AND pseudonym = $2`, domain, pn).Scan(&s)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("vault erase: %w", err)
		}
		subjects[string(s)] = true
	}
	tx, err := v.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("vault erase: %w", err)
	}
	defer tx.Rollback()
	n := 0
	for s := range subjects {
		r, err := tx.ExecContext(ctx, `DELETE FROM entries WHERE domain = $1 AND subject = $2`, domain, []byte(s))
		if err != nil {
			return 0, fmt.Errorf("vault erase: %w", err)
		}
		k, _ := r.RowsAffected()
		n += int(k)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("vault erase: %w", err)
	}
	if v.vacuum && n > 0 {
		v.db.ExecContext(ctx, `VACUUM entries`) // best effort; see OpenPostgres
	}
	return n, nil
}

// Count reports how many entries the vault holds.
func (v *Vault) Count(ctx context.Context) (int, error) {
	var n int
	err := v.db.QueryRowContext(ctx, `SELECT count(*) FROM entries`).Scan(&n)
	return n, err
}

// Request states.
const (
	Pending  = "pending"  // waiting for a second dpo's approval
	Approved = "approved" // approved; the requester may collect the values once
	Released = "released" // the values were handed to the requester
)

// Request is a re-identification request that needs a second approval.
type Request struct {
	ID         string    `json:"id"`
	System     string    `json:"system"`
	Requester  string    `json:"requester"`
	Purpose    string    `json:"purpose"`
	Pseudonyms []string  `json:"pseudonyms"`
	Approvals  int       `json:"approvals"`
	Approver   string    `json:"approver,omitempty"`
	State      string    `json:"state"`
	Created    time.Time `json:"created"`
}

// CreateRequest records a pending request and returns it with its new id.
func (v *Vault) CreateRequest(ctx context.Context, r Request) (Request, error) {
	var id [16]byte
	rand.Read(id[:])
	r.ID, r.State, r.Created = "rq-"+hex.EncodeToString(id[:]), Pending, time.Now().UTC().Truncate(time.Second)
	pns, _ := json.Marshal(r.Pseudonyms)
	_, err := v.db.ExecContext(ctx, `INSERT INTO requests (id, system, requester, purpose, pseudonyms, approvals, state, created)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, r.ID, r.System, r.Requester, r.Purpose, string(pns), r.Approvals, r.State, r.Created.Unix())
	if err != nil {
		return Request{}, fmt.Errorf("vault request: %w", err)
	}
	return r, nil
}

// GetRequest returns a request by id, or ErrNotFound.
func (v *Vault) GetRequest(ctx context.Context, id string) (Request, error) {
	var r Request
	var pns string
	var approver sql.NullString
	var created int64
	err := v.db.QueryRowContext(ctx, `SELECT id, system, requester, purpose, pseudonyms, approvals, approver, state, created
		FROM requests WHERE id = $1`, id).Scan(&r.ID, &r.System, &r.Requester, &r.Purpose, &pns, &r.Approvals, &approver, &r.State, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return Request{}, ErrNotFound
	}
	if err != nil {
		return Request{}, fmt.Errorf("vault request: %w", err)
	}
	r.Approver, r.Created = approver.String, time.Unix(created, 0).UTC()
	if err := json.Unmarshal([]byte(pns), &r.Pseudonyms); err != nil {
		return Request{}, fmt.Errorf("vault request %s: %w", id, err)
	}
	return r, nil
}

// Transition moves a request from state from to state to, setting approver when given; it reports false when the
// request was not in state from (someone else moved it first).
func (v *Vault) Transition(ctx context.Context, id, from, to, approver string) (bool, error) {
	q := `UPDATE requests SET state = $1, decided = $2 WHERE id = $3 AND state = $4`
	args := []any{to, time.Now().Unix(), id, from}
	if approver != "" {
		q = `UPDATE requests SET state = $1, decided = $2, approver = $5 WHERE id = $3 AND state = $4`
		args = append(args, approver)
	}
	r, err := v.db.ExecContext(ctx, q, args...)
	if err != nil {
		return false, fmt.Errorf("vault request: %w", err)
	}
	n, _ := r.RowsAffected()
	return n == 1, nil
}
