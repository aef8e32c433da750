// Package seal owns the encryption of personal payloads: one fresh AES-256-GCM data key per event, wrapped by a
// period key per (system, retention class, month), wrapped in turn by the key-encryption key (KEK).
//
// Destroying a period key makes every payload of its month and class unreadable (crypto-shredding) while the
// log still verifies, because envelopes commit to ciphertext, not plaintext. It never writes plaintext or an
// unwrapped key to disk, and never puts key material in an error.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
)

// DataKeySize is the size of a per-event data key (AES-256).
const DataKeySize = 32

// Overhead is how many bytes sealing adds to a payload: format byte, wrapped data key, GCM tag.
const Overhead = 1 + wrappedLen + 16

const (
	formatV1   = 1
	nonceSize  = 12
	wrappedLen = nonceSize + DataKeySize + 16
)

// ErrOpen means a sealed payload could not be opened: wrong key, altered bytes or a destroyed period key.
var ErrOpen = errors.New("sealed payload cannot be opened")

// Commitment is what an envelope records about a sealed payload.
type Commitment struct {
	Digest    [32]byte // SHA-256 of the ciphertext
	Size      int      // bytes of ciphertext
	KeyCommit [32]byte // KeyCommitment of the data key
}

// KeyCommitment commits to a data key without revealing it, so a disclosed key can be checked against the log.
func KeyCommitment(dataKey []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte("cairn/v1/data-key-commitment\x00"))
	h.Write(dataKey)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// Seal encrypts plaintext for one event under a fresh data key, wraps that key under pk and appends the sealed
// form to dst: version (1 byte), wrapped data key (60 bytes), ciphertext. eventID binds both layers to the
// event, so a payload moved to another event does not open.
func Seal(dst []byte, pk *PeriodKey, eventID, plaintext []byte) ([]byte, Commitment, error) {
	var dk [DataKeySize]byte
	rand.Read(dk[:])
	defer clear(dk[:])
	dst = append(dst, formatV1)
	var err error
	if dst, err = pk.wrap(dst, eventID, dk[:]); err != nil {
		return nil, Commitment{}, err
	}
	aead, err := newGCM(dk[:])
	if err != nil {
		return nil, Commitment{}, err
	}
	start := len(dst)
	// Each data key encrypts exactly one message, so a fixed nonce is safe.
	var nonce [nonceSize]byte
	dst = aead.Seal(dst, nonce[:], plaintext, eventID)
	c := Commitment{Digest: sha256.Sum256(dst[start:]), Size: len(dst) - start, KeyCommit: KeyCommitment(dk[:])}
	return dst, c, nil
}

// Split separates a sealed payload into its wrapped data key and its ciphertext.
func Split(sealed []byte) (wrapped, ciphertext []byte, err error) {
	if len(sealed) < 1+wrappedLen+16 || sealed[0] != formatV1 {
		return nil, nil, fmt.Errorf("sealed payload: bad format")
	}
	return sealed[1 : 1+wrappedLen], sealed[1+wrappedLen:], nil
}

// Check reports whether a sealed payload matches its commitment (ciphertext digest and size). It needs no key.
func Check(sealed []byte, c Commitment) error {
	_, ct, err := Split(sealed)
	if err != nil {
		return err
	}
	if len(ct) != c.Size {
		return fmt.Errorf("ciphertext is %d bytes, the envelope commits to %d", len(ct), c.Size)
	}
	if sha256.Sum256(ct) != c.Digest {
		return errors.New("ciphertext digest does not match the envelope")
	}
	return nil
}

// Open decrypts a sealed payload with its period key and checks the data key against keyCommit.
func Open(pk *PeriodKey, eventID, sealed []byte, keyCommit [32]byte) ([]byte, error) {
	dk, ct, err := Disclose(pk, eventID, sealed, keyCommit)
	if err != nil {
		return nil, err
	}
	defer clear(dk)
	return OpenDisclosed(dk, eventID, ct, keyCommit)
}

// Rewrap re-wraps a sealed payload's data key from one period key to another (a move to a hold key, or a
// re-keyed month), leaving the ciphertext, and so every commitment, untouched.
func Rewrap(from, to *PeriodKey, eventID, sealed []byte) ([]byte, error) {
	wrapped, ct, err := Split(sealed)
	if err != nil {
		return nil, err
	}
	dk, err := from.unwrap(eventID, wrapped)
	if err != nil {
		return nil, ErrOpen
	}
	defer clear(dk)
	out := append(make([]byte, 0, len(sealed)), formatV1)
	if out, err = to.wrap(out, eventID, dk); err != nil {
		return nil, err
	}
	return append(out, ct...), nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// wrapWith encrypts key under aead with a random nonce: nonce || ciphertext.
func wrapWith(dst []byte, aead cipher.AEAD, aad, key []byte) []byte {
	var nonce [nonceSize]byte
	rand.Read(nonce[:])
	dst = append(dst, nonce[:]...)
	return aead.Seal(dst, nonce[:], key, aad)
}

func unwrapWith(aead cipher.AEAD, aad, wrapped []byte) ([]byte, error) {
	if len(wrapped) < nonceSize+16 {
		return nil, ErrOpen
	}
	return aead.Open(nil, wrapped[:nonceSize], wrapped[nonceSize:], aad)
}

// Disclose unwraps the data key of one sealed payload with its period key and returns it with the ciphertext,
// after checking the key against keyCommit: what an auditor needs to open this one payload, and nothing that
// opens any other.
func Disclose(pk *PeriodKey, eventID, sealed []byte, keyCommit [32]byte) (dataKey, ciphertext []byte, err error) {
	wrapped, ct, err := Split(sealed)
	if err != nil {
		return nil, nil, err
	}
	dk, err := pk.unwrap(eventID, wrapped)
	if err != nil || KeyCommitment(dk) != keyCommit {
		return nil, nil, ErrOpen
	}
	return dk, ct, nil
}

// OpenDisclosed decrypts a ciphertext with a disclosed data key, checking the key against keyCommit first.
func OpenDisclosed(dataKey, eventID, ciphertext []byte, keyCommit [32]byte) ([]byte, error) {
	if len(dataKey) != DataKeySize || KeyCommitment(dataKey) != keyCommit {
		return nil, ErrOpen
	}
	aead, err := newGCM(dataKey)
	if err != nil {
		return nil, err
	}
	var nonce [nonceSize]byte
	pt, err := aead.Open(nil, nonce[:], ciphertext, eventID)
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}
