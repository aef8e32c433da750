package canon

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/go-json-experiment/json/jsontext"
)

// FuzzAppend checks Append against jsontext's RFC 8785 implementation. Append
// is stricter, so the oracle is consulted in both directions:
//   - when Append accepts, jsontext must accept and produce identical bytes,
//     and Append must reproduce its own output exactly (idempotence);
//   - when Append rejects input jsontext accepts, the reason must be one of
//     the deliberate strictness rules, never a syntax error.
func FuzzAppend(f *testing.F) {
	for _, c := range loadGolden(f) {
		f.Add(c.in)
	}
	for _, s := range []string{
		`{"a":1,"A":2}`, `[9007199254740993]`, `1e400`, `"\ud800"`, `{"\u212a":1,"k":2}`,
		`{"\uffff":1,"𐀀":2,"":3}`, `[0.1,1e-7,-0,5e-324,1e21]`, `{"a":{"b":{"c":[[[[]]]]}}}`,
		`{"ſ":1,"s":2,"ǅ":3,"ǆ":4,"Σ":5,"ς":6,"σ":7}`, `[0.000001,0.0000012,123456789012345.6,1.0,100000000000000000000]`,
		`{"a\u0000":1,"a":2,"a\u001f":3,"a\"":4,"a\\":5,"a\/":6}`,
		benchEvent,
	} {
		f.Add([]byte(s))
	}
	var big []byte
	for i := range 40 {
		big = fmt.Appendf(big, `,"%c%c":%d`, 'z'-i%26, 0x1F600+i, i)
	}
	big[0] = '{'
	f.Add(append(big, '}'))
	f.Fuzz(func(t *testing.T, src []byte) {
		got, err := Append(nil, src)
		oracle := jsontext.Value(bytes.Clone(src))
		oracleErr := oracle.Canonicalize()
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Append(%q) error %v is not *Error", src, err)
			}
			if e.Offset < 0 || e.Offset > int64(len(src)) || (e.Path != "" && e.Path[0] != '/') {
				t.Fatalf("Append(%q): malformed error %+v", src, e)
			}
			if oracleErr == nil && !strict(e.Reason) {
				t.Fatalf("Append(%q) = %v; jsontext accepts it as %q", src, err, oracle)
			}
			return
		}
		if oracleErr != nil {
			t.Fatalf("Append(%q) = %q; jsontext rejects: %v", src, got, oracleErr)
		}
		if !bytes.Equal(got, oracle) {
			t.Fatalf("Append(%q):\n got %q\nwant %q (jsontext)", src, got, oracle)
		}
		again, err := Append(nil, got)
		if err != nil || !bytes.Equal(again, got) {
			t.Fatalf("not idempotent: Append(%q) = %q, %v", got, again, err)
		}
	})
}

// strict reports whether reason is a deliberate rejection of valid JSON.
func strict(reason string) bool {
	for _, r := range []string{reasonDuplicate, reasonCaseFold, reasonBigInt, reasonOverflow, reasonDepth} {
		if strings.HasPrefix(reason, r) {
			return true
		}
	}
	return false
}
