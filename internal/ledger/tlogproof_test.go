package ledger_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/cairn-ai/cairn/internal/ledger"
)

// tlogProofFor builds the tlog proof of entry idx against the log's published checkpoint.
func tlogProofFor(t *testing.T, lg *ledger.Log, idx uint64) []byte {
	t.Helper()
	cp, n := lg.Checkpoint()
	e, err := lg.Entry(context.Background(), idx)
	if err != nil {
		t.Fatal(err)
	}
	path, err := lg.InclusionProof(idx, n)
	if err != nil {
		t.Fatal(err)
	}
	return (&ledger.TlogProof{Extra: e.AppendLeaf(nil), Index: idx, Proof: path, Checkpoint: cp}).Marshal()
}

func TestTlogProof(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, _, err := e.l.Register(ctx, []byte(`{"id":"s","name":"n","intended_purpose":"p","provider":"q"}`), "admin"); err != nil {
		t.Fatal(err)
	}
	lg, _ := e.l.Log("s")
	raw := `{"type":"inference","model":{"name":"m","version":"1"},"payload":{"output":1}}`
	for range 6 {
		if _, err := lg.Append(ctx, e.prepare(lg, raw, raw, raw)); err != nil {
			t.Fatal(err)
		}
	}
	waitCheckpoint(t, lg, lg.Store().Size())
	vkey := e.l.VerifierKey("s")
	for _, idx := range []uint64{0, 1, 7, 18} {
		b := tlogProofFor(t, lg, idx)
		if !bytes.HasPrefix(b, []byte("c2sp.org/tlog-proof@v1\nextra ")) {
			t.Fatalf("proof %d:\n%s", idx, b)
		}
		p, c, err := ledger.VerifyTlogProof(b, vkey, nil)
		if err != nil || p.Index != idx || c.Size != 19 {
			t.Fatalf("verify proof of %d: %v (%+v)", idx, err, c)
		}
		// Independently of x/mod's tlog: transparency-dev/merkle's RFC 6962 verifier agrees.
		path := make([][]byte, len(p.Proof))
		for i := range p.Proof {
			path[i] = p.Proof[i][:]
		}
		lh := rfc6962.DefaultHasher.HashLeaf(p.Extra)
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, idx, c.Size, lh, path, c.Root[:]); err != nil {
			t.Errorf("merkle/proof rejects the proof of %d: %v", idx, err)
		}
		// Round trip: parse and marshal give the same bytes.
		if again := p.Marshal(); !bytes.Equal(again, b) {
			t.Errorf("re-marshalled proof differs")
		}
	}
	good := tlogProofFor(t, lg, 7)
	other := tlogProofFor(t, lg, 8)
	otherLeaf, _ := ledger.ParseTlogProof(other)
	flip := func(s []byte, at int) []byte { c := bytes.Clone(s); c[at] ^= 0x01; return c }
	hashLine := bytes.Index(good, []byte("\nindex 7\n")) + len("\nindex 7\n")
	for name, tc := range map[string]struct {
		b    []byte
		vkey string
		leaf []byte
	}{
		"another leaf":         {good, vkey, otherLeaf.Extra},
		"another index":        {bytes.Replace(good, []byte("index 7\n"), []byte("index 6\n"), 1), vkey, nil},
		"a flipped proof hash": {flip(good, hashLine+3), vkey, nil},
		"another log's key":    {good, newEnv(t).l.VerifierKey("s"), nil},
		"a leading zero":       {bytes.Replace(good, []byte("index 7\n"), []byte("index 07\n"), 1), vkey, nil},
		"no checkpoint":        {good[:bytes.Index(good, []byte("\n\n"))], vkey, nil},
		"another header":       {bytes.Replace(good, []byte("@v1"), []byte("@v2"), 1), vkey, nil},
	} {
		if _, _, err := ledger.VerifyTlogProof(tc.b, tc.vkey, tc.leaf); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// The specification's own example parses (its signatures are elided, so it cannot verify).
	spec := "c2sp.org/tlog-proof@v1\nextra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6\nindex 73894\ngSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=\nB95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=\n\nexample.com/fancylog\n109482\nsFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=\n\n— example.com/fancylog hI2DJw==\n"
	p, err := ledger.ParseTlogProof([]byte(spec))
	if err != nil || p.Index != 73894 || len(p.Proof) != 2 || !strings.HasPrefix(string(p.Checkpoint), "example.com/fancylog\n") {
		t.Errorf("spec example: %+v, %v", p, err)
	}
}

func FuzzParseTlogProof(f *testing.F) {
	f.Add([]byte("c2sp.org/tlog-proof@v1\nindex 0\n\nlog\n1\nAAAA\n\n— log AAAA\n"))
	f.Add([]byte("c2sp.org/tlog-proof@v1\nextra AA==\nindex 5\ngSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=\n\nx\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ledger.ParseTlogProof(b)
		if err != nil {
			return
		}
		q, err := ledger.ParseTlogProof(p.Marshal())
		if err != nil || q.Index != p.Index || len(q.Proof) != len(p.Proof) || !bytes.Equal(q.Extra, p.Extra) {
			t.Fatalf("round trip of %q: %+v %v", b, q, err)
		}
	})
}
