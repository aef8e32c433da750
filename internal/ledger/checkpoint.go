package ledger

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/cairn-ai/cairn/internal/atomicfile"
)

// LoadSigningKey reads an Ed25519 checkpoint signing key (a base64 seed). With create, a missing file is made.
func LoadSigningKey(path string, create bool) (ed25519.PrivateKey, bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && create {
		seed := make([]byte, ed25519.SeedSize)
		rand.Read(seed)
		if err := atomicfile.Write(path, []byte(base64.StdEncoding.EncodeToString(seed)+"\n"), 0o600); err != nil {
			return nil, false, fmt.Errorf("create signing key: %w", err)
		}
		return ed25519.NewKeyFromSeed(seed), true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read signing key: %w", err)
	}
	seed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, false, fmt.Errorf("signing key %s: want a 32-byte Ed25519 seed in base64", path)
	}
	return ed25519.NewKeyFromSeed(seed), false, nil
}

// noteSigner signs checkpoints as a C2SP signed-note Ed25519 signer whose key name is the log's origin.
type noteSigner struct {
	name string
	hash uint32
	key  ed25519.PrivateKey
}

func newNoteSigner(origin string, key ed25519.PrivateKey) *noteSigner {
	return &noteSigner{name: origin, hash: keyHash(origin, key.Public().(ed25519.PublicKey)), key: key}
}

func keyHash(name string, pub ed25519.PublicKey) uint32 {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte("\n"))
	h.Write([]byte{0x01}) // Ed25519 algorithm byte
	h.Write(pub)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

func (s *noteSigner) Name() string                    { return s.name }
func (s *noteSigner) KeyHash() uint32                 { return s.hash }
func (s *noteSigner) Sign(msg []byte) ([]byte, error) { return ed25519.Sign(s.key, msg), nil }

// VerifierKey returns the signed-note verifier key of a log origin ("name+hash+base64(0x01||pub)").
func VerifierKey(origin string, pub ed25519.PublicKey) (string, error) {
	return note.NewEd25519VerifierKey(origin, pub)
}

// Checkpoint is a parsed tlog-checkpoint body.
type Checkpoint struct {
	Origin string
	Size   uint64
	Root   tlog.Hash
}

// Marshal renders the checkpoint body (c2sp.org/tlog-checkpoint).
func (c Checkpoint) Marshal() []byte {
	return []byte(c.Origin + "\n" + strconv.FormatUint(c.Size, 10) + "\n" + base64.StdEncoding.EncodeToString(c.Root[:]) + "\n")
}

// ParseCheckpoint parses a checkpoint body; extension lines are allowed and ignored.
func ParseCheckpoint(text string) (Checkpoint, error) {
	lines := strings.SplitN(text, "\n", 4)
	if len(lines) < 4 {
		return Checkpoint{}, errors.New("checkpoint: too few lines")
	}
	n, err := strconv.ParseUint(lines[1], 10, 64)
	if err != nil || strconv.FormatUint(n, 10) != lines[1] {
		return Checkpoint{}, errors.New("checkpoint: bad tree size")
	}
	h, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(h) != tlog.HashSize {
		return Checkpoint{}, errors.New("checkpoint: bad root hash")
	}
	c := Checkpoint{Origin: lines[0], Size: n}
	copy(c.Root[:], h)
	if c.Origin == "" {
		return Checkpoint{}, errors.New("checkpoint: empty origin")
	}
	return c, nil
}

// OpenCheckpoint verifies a signed checkpoint note with a verifier key and checks that its origin is the key's
// name. It returns the parsed checkpoint.
func OpenCheckpoint(signed []byte, vkey string) (Checkpoint, error) {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("verifier key: %w", err)
	}
	n, err := note.Open(signed, note.VerifierList(v))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint signature: %w", err)
	}
	c, err := ParseCheckpoint(n.Text)
	if err != nil {
		return Checkpoint{}, err
	}
	if c.Origin != v.Name() {
		return Checkpoint{}, fmt.Errorf("checkpoint origin %q is not the key's name %q", c.Origin, v.Name())
	}
	return c, nil
}

// Cosign adds to a signed checkpoint, after verifying it with vkey, a signature by newKey under the same origin:
// the handover checkpoint of a signing-key rotation, by which the retiring key vouches for its successor.
func Cosign(signed []byte, vkey string, newKey ed25519.PrivateKey) ([]byte, Checkpoint, error) {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, Checkpoint{}, fmt.Errorf("verifier key: %w", err)
	}
	n, err := note.Open(signed, note.VerifierList(v))
	if err != nil {
		return nil, Checkpoint{}, fmt.Errorf("checkpoint signature: %w", err)
	}
	c, err := ParseCheckpoint(n.Text)
	if err != nil {
		return nil, Checkpoint{}, err
	}
	out, err := note.Sign(n, newNoteSigner(c.Origin, newKey))
	return out, c, err
}
