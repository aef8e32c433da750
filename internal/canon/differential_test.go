package canon

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
)

// docGen generates random valid JSON that stresses member names: case
// variants (including non-ASCII folds such as K/K and s/ſ), characters on
// both sides of the UTF-16/UTF-8 ordering difference, escapes, common
// prefixes, and objects on both sides of smallObject. It records, in the
// order Append finishes objects (post-order), the path of the first member
// of each object that collides with an earlier one under strings.EqualFold.
type docGen struct {
	r    *rand.Rand
	dups []string
}

var nameRunes = []rune("aAkKsSſßéÉσΣς€\uffff\ue000😀𐀀\"\\\n/~0_ \u212a")

func (g *docGen) name() string {
	if g.r.IntN(4) == 0 { // long names with a shared prefix
		return "shared_prefix_" + string(nameRunes[g.r.IntN(len(nameRunes))])
	}
	rs := make([]rune, 1+g.r.IntN(3))
	for i := range rs {
		rs[i] = nameRunes[g.r.IntN(len(nameRunes))]
	}
	return string(rs)
}

// quote writes s as a JSON string, escaping randomly where allowed.
func (g *docGen) quote(b []byte, s string) []byte {
	b = append(b, '"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\' || r < ' ' || g.r.IntN(5) == 0:
			if r > 0xffff {
				r1, r2 := utf16Surrogates(r)
				b = fmt.Appendf(b, `\u%04x\u%04X`, r1, r2)
			} else {
				b = fmt.Appendf(b, `\u%04x`, r)
			}
		default:
			b = utf8.AppendRune(b, r)
		}
	}
	return append(b, '"')
}

func utf16Surrogates(r rune) (rune, rune) {
	r -= 0x10000
	return 0xd800 + r>>10, 0xdc00 + r&0x3ff
}

func (g *docGen) number(b []byte) []byte {
	switch g.r.IntN(5) {
	case 0:
		return strconv.AppendInt(b, g.r.Int64N(1<<54)-1<<53, 10)
	case 1:
		return strconv.AppendInt(b, g.r.Int64N(2000)-1000, 10)
	case 2:
		return strconv.AppendFloat(b, g.r.NormFloat64()*math.Pow(10, float64(g.r.IntN(40)-20)), 'f', 1+g.r.IntN(19), 64)
	case 3:
		return strconv.AppendFloat(b, g.r.NormFloat64()*math.Pow(10, float64(g.r.IntN(600)-300)), 'e', g.r.IntN(20)-1, 64)
	default:
		return strconv.AppendFloat(b, math.Float64frombits(g.r.Uint64()&^(1<<62)), 'g', -1, 64)
	}
}

func (g *docGen) value(b []byte, path string, depth int) []byte {
	switch n := g.r.IntN(10); {
	case n < 3 && depth < 5:
		return g.object(b, path, depth+1)
	case n < 4 && depth < 5:
		b = append(b, '[')
		for i := range g.r.IntN(4) {
			if i > 0 {
				b = append(b, ',', ' ')
			}
			b = g.value(b, path+"/"+strconv.Itoa(i), depth+1)
		}
		return append(b, ']')
	case n < 6:
		return g.quote(b, g.name())
	case n < 9:
		return g.number(b)
	default:
		return append(b, []string{"true", "false", "null"}[g.r.IntN(3)]...)
	}
}

func (g *docGen) object(b []byte, path string, depth int) []byte {
	n := g.r.IntN(6)
	if depth <= 2 && g.r.IntN(3) == 0 {
		n = 10 + g.r.IntN(30)
	}
	b = append(b, '{', '\n')
	var names []string
	dup := ""
	for i := range n {
		name := g.name()
		for try := 0; try < 3 && g.r.IntN(8) != 0 && containsFold(names, name); try++ {
			name = g.name() // keep most objects valid
		}
		if dup == "" && containsFold(names, name) {
			dup = path + "/" + strings.NewReplacer("~", "~0", "/", "~1").Replace(name)
		}
		names = append(names, name)
		if i > 0 {
			b = append(b, ',')
		}
		b = g.quote(b, name)
		b = append(b, " : "...)
		b = g.value(b, path+"/"+strings.NewReplacer("~", "~0", "/", "~1").Replace(name), depth)
	}
	if dup != "" {
		g.dups = append(g.dups, dup)
	}
	return append(b, '}')
}

func containsFold(names []string, name string) bool {
	for _, n := range names {
		if strings.EqualFold(n, name) {
			return true
		}
	}
	return false
}

// TestDifferential checks Append on random documents against jsontext and
// against the generator's own record of case-folding collisions.
func TestDifferential(t *testing.T) {
	iters := 1000
	if testing.Short() {
		iters = 300
	}
	g := &docGen{r: rand.New(rand.NewPCG(7, 8))}
	accepted := 0
	for range iters {
		g.dups = g.dups[:0]
		src := g.object(nil, "", 1)
		got, err := Append(nil, src)
		if len(g.dups) > 0 {
			var e *Error
			if !errors.As(err, &e) || e.Path != g.dups[0] ||
				!strings.HasPrefix(e.Reason, reasonDuplicate) && !strings.HasPrefix(e.Reason, reasonCaseFold) {
				t.Fatalf("Append(%s) = %v; want name collision at %q", src, err, g.dups[0])
			}
			continue
		}
		if err != nil {
			t.Fatalf("Append(%s): %v", src, err)
		}
		want := jsontext.Value(bytes.Clone(src))
		if err := want.Canonicalize(); err != nil {
			t.Fatalf("jsontext rejects %s: %v", src, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("Append(%s):\n got %s\nwant %s", src, got, want)
		}
		accepted++
	}
	t.Logf("%d of %d documents accepted", accepted, iters)
	if accepted < iters/4 {
		t.Errorf("only %d of %d documents accepted; generator is too collision-prone", accepted, iters)
	}
}
