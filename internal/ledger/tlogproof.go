package ledger

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/tlog"
)

// A tlog proof (c2sp.org/tlog-proof@v1) is an offline-verifiable proof that an entry is in a log: its index, the
// RFC 6962 inclusion path, and the signed checkpoint the path leads to. Cairn puts the entry's leaf — the
// content-free canonical JSON the tree hashes — in the proof's "extra" line, so the proof is self-contained: a
// verifier recomputes the record hash from it. Extra data is not authenticated by the format, and need not be:
// a leaf that is not the logged one does not hash to the proven record.

const tlogProofHeader = "c2sp.org/tlog-proof@v1"

// TlogProof is a parsed tlog proof.
type TlogProof struct {
	Extra      []byte // Cairn: the entry's leaf
	Index      uint64
	Proof      tlog.RecordProof
	Checkpoint []byte // the signed note, verbatim
}

// Marshal renders a proof in the c2sp.org/tlog-proof@v1 text format.
func (p *TlogProof) Marshal() []byte {
	var b bytes.Buffer
	b.WriteString(tlogProofHeader + "\n")
	if p.Extra != nil {
		b.WriteString("extra " + base64.StdEncoding.EncodeToString(p.Extra) + "\n")
	}
	b.WriteString("index " + strconv.FormatUint(p.Index, 10) + "\n")
	for _, h := range p.Proof {
		b.WriteString(base64.StdEncoding.EncodeToString(h[:]) + "\n")
	}
	b.WriteString("\n")
	b.Write(p.Checkpoint)
	return b.Bytes()
}

// ErrTlogProof is wrapped by every malformed-proof error.
var ErrTlogProof = errors.New("malformed tlog proof")

// ParseTlogProof parses the c2sp.org/tlog-proof@v1 text format strictly.
func ParseTlogProof(b []byte) (*TlogProof, error) {
	bad := func(why string) (*TlogProof, error) { return nil, fmt.Errorf("%w: %s", ErrTlogProof, why) }
	head, cp, ok := bytes.Cut(b, []byte("\n\n"))
	if !ok {
		return bad("no empty line before the checkpoint")
	}
	lines := strings.Split(string(head), "\n")
	if lines[0] != tlogProofHeader {
		return bad("first line is not " + tlogProofHeader)
	}
	p := &TlogProof{Checkpoint: cp}
	lines = lines[1:]
	if len(lines) > 0 && strings.HasPrefix(lines[0], "extra ") {
		x, err := base64.StdEncoding.Strict().DecodeString(strings.TrimPrefix(lines[0], "extra "))
		if err != nil {
			return bad("extra is not base64")
		}
		p.Extra, lines = x, lines[1:]
	}
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "index ") {
		return bad("no index line")
	}
	idx := strings.TrimPrefix(lines[0], "index ")
	n, err := strconv.ParseUint(idx, 10, 64)
	if err != nil || strconv.FormatUint(n, 10) != idx {
		return bad("index is not a decimal without leading zeroes")
	}
	p.Index = n
	for _, l := range lines[1:] {
		h, err := base64.StdEncoding.Strict().DecodeString(l)
		if err != nil || len(h) != tlog.HashSize {
			return bad("a proof line is not a base64 SHA-256 hash")
		}
		p.Proof = append(p.Proof, tlog.Hash(h))
	}
	if len(p.Proof) > 63 {
		return bad("proof longer than any tree allows")
	}
	return p, nil
}

// VerifyTlogProof checks a tlog proof against a log's verifier key: the checkpoint's signature and origin, and that
// the record hash of leaf is at the proof's index in the checkpointed tree. leaf nil uses the proof's extra data.
// It returns the checkpoint.
func VerifyTlogProof(b []byte, vkey string, leaf []byte) (*TlogProof, Checkpoint, error) {
	p, err := ParseTlogProof(b)
	if err != nil {
		return nil, Checkpoint{}, err
	}
	c, err := OpenCheckpoint(p.Checkpoint, vkey)
	if err != nil {
		return p, Checkpoint{}, err
	}
	if leaf == nil {
		leaf = p.Extra
	}
	if leaf == nil {
		return p, c, errors.New("no leaf to check: the proof has no extra data and none was given")
	}
	if p.Index >= c.Size {
		return p, c, fmt.Errorf("index %d is beyond the checkpoint's %d entries", p.Index, c.Size)
	}
	if err := tlog.CheckRecord(p.Proof, int64(c.Size), c.Root, int64(p.Index), tlog.RecordHash(leaf)); err != nil {
		return p, c, fmt.Errorf("inclusion proof: %w", err)
	}
	return p, c, nil
}
