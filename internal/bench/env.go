// Package bench measures Cairn the way DESIGN.md's performance budget is stated: durable appends per second and
// their latency through the ledger and over HTTP, CPU per event, proof and checkpoint latency, bytes on disk and
// the query index's lag. `cairn bench` and the Go benchmarks drive it.
//
// It only ever works in directories it is given (temporary ones by default) and never touches a real data
// directory.
package bench

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/seal"
	"github.com/cairn-ai/cairn/internal/store/local"
)

// System is the id of the system every benchmark appends to.
const System = "credit-scoring"

// definition registers System.
const definition = `{"id":"credit-scoring","name":"Credit scoring","version":"4","intended_purpose":"creditworthiness assessment of natural persons","provider":"Example Bank AG","annex_iii":"5(b)"}`

// Env is a fresh installation in a directory: an embedded store with fsync on, a keyring under a random KEK,
// a signing key and a ledger with System registered.
type Env struct {
	Dir    string
	Store  *local.Store
	Keys   *seal.Keyring
	Sign   ed25519.PrivateKey
	Ledger *ledger.Ledger
	Log    *ledger.Log
}

// EnvOptions tune an Env.
type EnvOptions struct {
	NoSync             bool          // skip fsync (CPU-only measurements; unsafe)
	CheckpointInterval time.Duration // default: the ledger's (50 ms)
	MaxBatch           int           // default: the ledger's
	MaxQueue           int           // default: large enough that no benchmark is pushed back
	// FieldPolicy, when set, is the system's field_policy (JSON), applied to every event's payload.
	FieldPolicy string
	// Vault is the token vault, for a FieldPolicy with vault rules.
	Vault ledger.Vault
}

// NewEnv creates an installation in dir (which should be empty).
func NewEnv(ctx context.Context, dir string, o EnvOptions) (*Env, error) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := local.Open(filepath.Join(dir, "data"), local.Options{NoSync: o.NoSync, Logger: quiet})
	if err != nil {
		return nil, err
	}
	key := make([]byte, 32)
	rand.Read(key)
	kek, err := seal.NewKEK(key)
	if err != nil {
		return nil, err
	}
	keys, err := seal.OpenKeyring(filepath.Join(dir, "data", "keys", "periods"), kek)
	if err != nil {
		return nil, err
	}
	_, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	if o.MaxQueue == 0 {
		o.MaxQueue = 1 << 22
	}
	cfg := ledger.Config{Origin: "bench.cairn.local", CheckpointInterval: o.CheckpointInterval, MaxBatch: o.MaxBatch,
		MaxQueue: o.MaxQueue, Vault: o.Vault, Logger: quiet}
	l, err := ledger.Open(ctx, cfg, st, keys, sk)
	if err != nil {
		st.Close()
		return nil, err
	}
	def := definition
	if o.FieldPolicy != "" {
		def = def[:len(def)-1] + `,"field_policy":` + o.FieldPolicy + `}`
	}
	if _, _, err := l.Register(ctx, []byte(def), "bench-admin"); err != nil {
		l.Close()
		return nil, fmt.Errorf("register %s: %w", System, err)
	}
	lg, err := l.Log(System)
	if err != nil {
		l.Close()
		return nil, err
	}
	return &Env{Dir: dir, Store: st, Keys: keys, Sign: sk, Ledger: l, Log: lg}, nil
}

// DataDir is the installation's data directory.
func (e *Env) DataDir() string { return filepath.Join(e.Dir, "data") }

// LogDir is the directory of System's log in the embedded store.
func (e *Env) LogDir() string { return filepath.Join(e.Dir, "data", "logs", System) }

// Close stops the ledger (committing what it holds) and closes the store.
func (e *Env) Close() error { return e.Ledger.Close() }
