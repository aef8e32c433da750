// Package signature makes and checks the detached signatures a signatory puts on a generated document: an Ed25519
// signature over the document's digest, either raw or in OpenSSH's SSHSIG format (what `ssh-keygen -Y sign`
// writes), so that a key the signatory already holds in ~/.ssh will do.
//
// The signed message is the document digest as text ("sha256:<64 hex>"), never the document itself: the digest
// is what the log records, so a signature recorded with a document can be checked from the log alone. SSH
// signatures use the namespace "cairn-document". The package never stores or logs a private key.
package signature

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"hash"
	"strings"
)

// Formats of a detached signature.
const (
	// FormatSSH is an armored SSHSIG ("-----BEGIN SSH SIGNATURE-----") with an ssh-ed25519 key; the signer key is
	// given as an authorized_keys line ("ssh-ed25519 AAAA… comment").
	FormatSSH = "ssh"
	// FormatEd25519 is a raw Ed25519 signature in standard base64; the signer key is the 32-byte public key in
	// standard base64, or a PEM "PUBLIC KEY" block.
	FormatEd25519 = "ed25519"
)

// Namespace is the SSHSIG namespace of document signatures (ssh-keygen -Y sign -n cairn-document).
const Namespace = "cairn-document"

// ErrBad: the signature does not verify (altered document, altered signature, or another key).
var ErrBad = errors.New("signature does not verify")

// Verify checks a detached signature over digest with the signer key and returns the key's fingerprint
// ("SHA256:…", as ssh-keygen prints it).
func Verify(format, sig, key, digest string) (string, error) {
	pub, err := ParsePublicKey(key)
	if err != nil {
		return "", err
	}
	fp := Fingerprint(pub)
	msg := []byte(digest)
	switch format {
	case FormatEd25519:
		s, err := base64.StdEncoding.Strict().DecodeString(strings.TrimSpace(sig))
		if err != nil || len(s) != ed25519.SignatureSize {
			return fp, errors.New("ed25519 signature: want 64 bytes in standard base64")
		}
		if !ed25519.Verify(pub, msg, s) {
			return fp, ErrBad
		}
		return fp, nil
	case FormatSSH:
		return fp, verifySSH(sig, pub, msg)
	}
	return fp, fmt.Errorf("signature format %q: want %s or %s", format, FormatSSH, FormatEd25519)
}

// ParsePublicKey reads an Ed25519 public key: an authorized_keys line, a PEM PUBLIC KEY block or 32 bytes in
// standard base64.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	s = strings.TrimSpace(s)
	switch {
	case strings.HasPrefix(s, "ssh-ed25519 "):
		f := strings.Fields(s)
		blob, err := base64.StdEncoding.DecodeString(f[1])
		if err != nil {
			return nil, errors.New("ssh key: bad base64")
		}
		return parseSSHKeyBlob(blob)
	case strings.HasPrefix(s, "-----BEGIN"):
		b, _ := pem.Decode([]byte(s))
		if b == nil || b.Type != "PUBLIC KEY" {
			return nil, errors.New("pem key: want a PUBLIC KEY block")
		}
		k, err := x509.ParsePKIXPublicKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("pem key: %w", err)
		}
		pub, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, errors.New("pem key: not an Ed25519 key")
		}
		return pub, nil
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, errors.New("signer key: want an ssh-ed25519 line, a PEM public key or 32 bytes of base64")
	}
	return ed25519.PublicKey(b), nil
}

// Fingerprint is the OpenSSH SHA256 fingerprint of an Ed25519 key.
func Fingerprint(pub ed25519.PublicKey) string {
	h := sha256.Sum256(sshKeyBlob(pub))
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(h[:])
}

// AuthorizedKey renders an Ed25519 public key as an authorized_keys line.
func AuthorizedKey(pub ed25519.PublicKey) string {
	return "ssh-ed25519 " + base64.StdEncoding.EncodeToString(sshKeyBlob(pub))
}

// SignSSH signs digest in the SSHSIG format with namespace cairn-document, as `ssh-keygen -Y sign` would.
func SignSSH(priv ed25519.PrivateKey, digest string) string {
	pub := priv.Public().(ed25519.PublicKey)
	h := sha512.Sum512([]byte(digest))
	sig := ed25519.Sign(priv, signedData(Namespace, "sha512", h[:]))
	var b []byte
	b = append(b, "SSHSIG"...)
	b = binary.BigEndian.AppendUint32(b, 1)
	b = appendString(b, sshKeyBlob(pub))
	b = appendString(b, []byte(Namespace))
	b = appendString(b, nil)
	b = appendString(b, []byte("sha512"))
	b = appendString(b, appendString(appendString(nil, []byte("ssh-ed25519")), sig))
	return armor(b)
}

// SignEd25519 returns a raw Ed25519 signature over digest in standard base64.
func SignEd25519(priv ed25519.PrivateKey, digest string) string {
	return base64.StdEncoding.EncodeToString(ed25519.Sign(priv, []byte(digest)))
}

func armor(b []byte) string {
	enc := base64.StdEncoding.EncodeToString(b)
	var sb strings.Builder
	sb.WriteString("-----BEGIN SSH SIGNATURE-----\n")
	for len(enc) > 70 {
		sb.WriteString(enc[:70] + "\n")
		enc = enc[70:]
	}
	sb.WriteString(enc + "\n-----END SSH SIGNATURE-----\n")
	return sb.String()
}

func verifySSH(armored string, pub ed25519.PublicKey, msg []byte) error {
	s := strings.TrimSpace(armored)
	body, ok := strings.CutPrefix(s, "-----BEGIN SSH SIGNATURE-----")
	if !ok {
		return errors.New("ssh signature: not armored")
	}
	body, ok = strings.CutSuffix(body, "-----END SSH SIGNATURE-----")
	if !ok {
		return errors.New("ssh signature: not armored")
	}
	blob, err := base64.StdEncoding.Strict().DecodeString(strings.Join(strings.Fields(body), ""))
	if err != nil {
		return errors.New("ssh signature: bad base64")
	}
	r := reader{b: blob}
	magic := r.raw(6)
	ver := r.u32()
	keyBlob, ns, _, alg, sigBlob := r.str(), r.str(), r.str(), r.str(), r.str()
	if r.err != nil || len(r.b) != 0 || string(magic) != "SSHSIG" || ver != 1 {
		return errors.New("ssh signature: malformed")
	}
	if !bytes.Equal(keyBlob, sshKeyBlob(pub)) {
		return fmt.Errorf("%w: made with another key than the signer's", ErrBad)
	}
	if string(ns) != Namespace {
		return fmt.Errorf("ssh signature: namespace %q, want %q", ns, Namespace)
	}
	var h hash.Hash
	switch string(alg) {
	case "sha512":
		h = sha512.New()
	case "sha256":
		h = sha256.New()
	default:
		return errors.New("ssh signature: unknown hash algorithm")
	}
	h.Write(msg)
	sr := reader{b: sigBlob}
	typ, sig := sr.str(), sr.str()
	if sr.err != nil || len(sr.b) != 0 || string(typ) != "ssh-ed25519" || len(sig) != ed25519.SignatureSize {
		return errors.New("ssh signature: not an ssh-ed25519 signature")
	}
	if !ed25519.Verify(pub, signedData(string(ns), string(alg), h.Sum(nil)), sig) {
		return ErrBad
	}
	return nil
}

// signedData is what an SSHSIG signature covers (PROTOCOL.sshsig).
func signedData(ns, alg string, h []byte) []byte {
	b := []byte("SSHSIG")
	b = appendString(b, []byte(ns))
	b = appendString(b, nil)
	b = appendString(b, []byte(alg))
	return appendString(b, h)
}

func sshKeyBlob(pub ed25519.PublicKey) []byte {
	return appendString(appendString(nil, []byte("ssh-ed25519")), pub)
}

func parseSSHKeyBlob(blob []byte) (ed25519.PublicKey, error) {
	r := reader{b: blob}
	typ, k := r.str(), r.str()
	if r.err != nil || len(r.b) != 0 || string(typ) != "ssh-ed25519" || len(k) != ed25519.PublicKeySize {
		return nil, errors.New("ssh key: want an ssh-ed25519 key")
	}
	return ed25519.PublicKey(k), nil
}

func appendString(b, s []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// reader reads SSH wire encodings; the first failure sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) raw(n int) []byte {
	if r.err != nil || len(r.b) < n {
		r.err = errors.New("short")
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u32() uint32 {
	b := r.raw(4)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint32(b)
}

func (r *reader) str() []byte {
	n := r.u32()
	if r.err != nil || uint64(n) > uint64(len(r.b)) {
		r.err = errors.New("short")
		return nil
	}
	return r.raw(int(n))
}

// ParsePrivateKey reads an Ed25519 private key: an unencrypted OpenSSH private key (ssh-keygen -t ed25519 -N "")
// or a PKCS #8 PEM block (openssl genpkey -algorithm ed25519). Encrypted keys are refused: sign with
// `ssh-keygen -Y sign` and hand over the signature instead.
func ParsePrivateKey(b []byte) (ed25519.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("private key: not PEM")
	}
	switch blk.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("private key: %w", err)
		}
		if pk, ok := k.(ed25519.PrivateKey); ok {
			return pk, nil
		}
		return nil, errors.New("private key: not Ed25519")
	case "OPENSSH PRIVATE KEY":
		return parseOpenSSH(blk.Bytes)
	}
	return nil, fmt.Errorf("private key: unsupported PEM type %q", blk.Type)
}

func parseOpenSSH(b []byte) (ed25519.PrivateKey, error) {
	const magic = "openssh-key-v1\x00"
	if !bytes.HasPrefix(b, []byte(magic)) {
		return nil, errors.New("private key: not an OpenSSH key")
	}
	r := reader{b: b[len(magic):]}
	cipher, kdf, _ := r.str(), r.str(), r.str()
	n := r.u32()
	r.str() // public key
	priv := r.str()
	if r.err != nil || n != 1 {
		return nil, errors.New("private key: malformed OpenSSH key")
	}
	if string(cipher) != "none" || string(kdf) != "none" {
		return nil, errors.New("private key: encrypted; sign with `ssh-keygen -Y sign -n cairn-document` and pass --signature")
	}
	pr := reader{b: priv}
	c1, c2 := pr.u32(), pr.u32()
	typ, pub, sk := pr.str(), pr.str(), pr.str()
	if pr.err != nil || c1 != c2 {
		return nil, errors.New("private key: malformed OpenSSH key")
	}
	if string(typ) != "ssh-ed25519" || len(pub) != ed25519.PublicKeySize || len(sk) != ed25519.PrivateKeySize {
		return nil, errors.New("private key: not an ssh-ed25519 key")
	}
	return ed25519.PrivateKey(bytes.Clone(sk)), nil
}
