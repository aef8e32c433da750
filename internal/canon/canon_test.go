package canon

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/go-json-experiment/json/jsontext"
)

// goldenCase is one NAME.json input from testdata/*.txtar with either the
// canonical output (NAME.want) or the exact error text (NAME.err).
type goldenCase struct {
	name      string
	in        []byte
	want, err string
	isErr     bool
}

func loadGolden(t testing.TB) []goldenCase {
	t.Helper()
	files, err := filepath.Glob("testdata/*.txtar")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	var cases []goldenCase
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		files := parseTxtar(data)
		byName := map[string][]byte{}
		for _, f := range files {
			if _, dup := byName[f.Name]; dup {
				t.Fatalf("%s: duplicate file %s", file, f.Name)
			}
			byName[f.Name] = f.Data
		}
		for _, f := range files {
			base, ok := strings.CutSuffix(f.Name, ".json")
			if !ok {
				continue
			}
			c := goldenCase{name: filepath.Base(file) + "/" + base, in: f.Data}
			if w, ok := byName[base+".want"]; ok {
				c.want = strings.TrimSuffix(string(w), "\n")
			} else if e, ok := byName[base+".err"]; ok {
				c.err, c.isErr = strings.TrimSuffix(string(e), "\n"), true
			} else {
				t.Fatalf("%s: %s.json has neither .want nor .err", file, base)
			}
			cases = append(cases, c)
		}
	}
	return cases
}

type txtarFile struct {
	Name string
	Data []byte
}

// parseTxtar parses the txtar format (golang.org/x/tools/txtar): a comment,
// then files each introduced by a line "-- NAME --". It is reimplemented here
// to keep the test free of extra module dependencies.
func parseTxtar(data []byte) []txtarFile {
	var files []txtarFile
	var cur *txtarFile
	for len(data) > 0 {
		line, rest, _ := bytes.Cut(data, []byte("\n"))
		if name, ok := bytes.CutPrefix(line, []byte("-- ")); ok && bytes.HasSuffix(name, []byte(" --")) {
			files = append(files, txtarFile{Name: string(bytes.TrimSpace(name[:len(name)-3]))})
			cur = &files[len(files)-1]
		} else if cur != nil {
			cur.Data = append(cur.Data, data[:len(data)-len(rest)]...)
		}
		data = rest
	}
	return files
}

func TestGolden(t *testing.T) {
	for _, c := range loadGolden(t) {
		t.Run(c.name, func(t *testing.T) {
			got, err := Append(nil, c.in)
			if c.isErr {
				var e *Error
				if !errors.As(err, &e) {
					t.Fatalf("Append(%q) = %q, %v; want *Error %q", c.in, got, err, c.err)
				}
				if e.Error() != c.err {
					t.Fatalf("Append(%q) error:\n got %s\nwant %s", c.in, e, c.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Append(%q): %v", c.in, err)
			}
			if string(got) != c.want {
				t.Fatalf("Append(%q):\n got %s\nwant %s", c.in, got, c.want)
			}
			again, err := Append(nil, got)
			if err != nil || !bytes.Equal(again, got) {
				t.Fatalf("not idempotent: Append(%q) = %q, %v", got, again, err)
			}
		})
	}
}

// TestAppendNumberRFC checks the IEEE 754 examples of RFC 8785 Appendix B.
func TestAppendNumberRFC(t *testing.T) {
	for _, tt := range []struct {
		bits uint64
		want string
	}{
		{0x0000000000000000, "0"},
		{0x8000000000000000, "0"},
		{0x0000000000000001, "5e-324"},
		{0x8000000000000001, "-5e-324"},
		{0x7fefffffffffffff, "1.7976931348623157e+308"},
		{0xffefffffffffffff, "-1.7976931348623157e+308"},
		{0x4340000000000000, "9007199254740992"},
		{0xc340000000000000, "-9007199254740992"},
		{0x4430000000000000, "295147905179352830000"},
		{0x44b52d02c7e14af5, "9.999999999999997e+22"},
		{0x44b52d02c7e14af6, "1e+23"},
		{0x44b52d02c7e14af7, "1.0000000000000001e+23"},
		{0x444b1ae4d6e2ef4e, "999999999999999700000"},
		{0x444b1ae4d6e2ef4f, "999999999999999900000"},
		{0x444b1ae4d6e2ef50, "1e+21"},
		{0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"},
		{0x3eb0c6f7a0b5ed8d, "0.000001"},
		{0x41b3de4355555553, "333333333.3333332"},
		{0x41b3de4355555554, "333333333.33333325"},
		{0x41b3de4355555555, "333333333.3333333"},
		{0x41b3de4355555556, "333333333.3333334"},
		{0x41b3de4355555557, "333333333.33333343"},
		{0xbecbf647612f3696, "-0.0000033333333333333333"},
		{0x43143ff3c1cb0959, "1424953923781206.2"},
	} {
		f := math.Float64frombits(tt.bits)
		got, err := AppendNumber([]byte("x"), f)
		if err != nil || string(got) != "x"+tt.want {
			t.Errorf("AppendNumber(%016x) = %q, %v; want %q", tt.bits, got, err, "x"+tt.want)
		}
	}
	for _, f := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		if got, err := AppendNumber([]byte("x"), f); err == nil || string(got) != "x" {
			t.Errorf("AppendNumber(%v) = %q, %v; want unchanged dst and error", f, got, err)
		}
	}
}

// TestAppendNumberOracle compares AppendNumber with jsontext on random bit
// patterns and on numbers near the fixed/exponential boundaries.
func TestAppendNumberOracle(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var fs []float64
	for range 100000 {
		fs = append(fs, math.Float64frombits(r.Uint64()))
	}
	for _, b := range []float64{1e21, 1e-6, 1e-7, 1e20} {
		f := b
		for range 5 {
			fs = append(fs, f, -f)
			f = math.Nextafter(f, 0)
		}
		f = b
		for range 5 {
			fs = append(fs, f, -f)
			f = math.Nextafter(f, math.Inf(1))
		}
	}
	var buf []byte
	for _, f := range fs {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			continue
		}
		got, err := AppendNumber(buf[:0], f)
		if err != nil {
			t.Fatal(err)
		}
		want := jsontext.Value(strconv.FormatFloat(f, 'g', -1, 64))
		if err := want.Canonicalize(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("AppendNumber(%016x) = %s; jsontext says %s", math.Float64bits(f), got, want)
		}
		buf = got
	}
}

func TestAppendString(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"", `""`},
		{"plain", `"plain"`},
		{"\"\\/", `"\"\\/"`},
		{"\b\t\n\f\r", `"\b\t\n\f\r"`},
		{"\x00\x01\x0b\x1f\x7f", `"\u0000\u0001\u000b\u001f` + "\x7f\""},
		{"€😀\u2028\ufffd", "\"€😀\u2028\ufffd\""},
		{"<script>&", `"<script>&"`},
	} {
		if got := AppendString([]byte("x"), tt.in); string(got) != "x"+tt.want {
			t.Errorf("AppendString(%q) = %s; want x%s", tt.in, got, tt.want)
		}
		// Whatever AppendString writes, Append must accept and reproduce.
		if got, err := Append(nil, []byte(tt.want)); err != nil || string(got) != tt.want {
			t.Errorf("Append(%s) = %s, %v", tt.want, got, err)
		}
	}
}

func TestReject(t *testing.T) {
	deep := strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1)
	deepObj := `{"a":` + strings.Repeat(`{"b":`, MaxDepth) + `1` + strings.Repeat("}", MaxDepth+1)
	for _, tt := range []struct {
		in     string
		path   string
		reason string
		offset int64
	}{
		{"\"\xff\"", "", reasonInvalidUTF, 1},
		{"{\"a\":[\"ok\",\"x\xc0\xafy\"]}", "/a/1", reasonInvalidUTF, 13},                       // overlong '/'
		{"{\"a\":\"\xed\xa0\x80\"}", "/a", reasonInvalidUTF, 6},                                 // UTF-8 encoded surrogate
		{"{\"a\":\"\xf4\x90\x80\x80\"}", "/a", reasonInvalidUTF, 6},                             // above U+10FFFF
		{"{\"a\":\"\xe2\x82\"}", "/a", reasonInvalidUTF, 6},                                     // truncated sequence
		{"{\"k\xff\":1}", "", reasonInvalidUTF, 3},                                              // in a name
		{"\xef\xbb\xbf{}", "", "invalid character byte 0xef looking for beginning of value", 0}, // BOM
		{`"abc`, "", "unterminated string", 0},
		{`"abc\`, "", "unterminated string", 4},
		{`{"a":"\ud800`, "/a", "invalid utf-16 surrogate in string", 6},
		{`{"a":"\ud800\`, "/a", "invalid utf-16 surrogate in string", 6},
		{`[-]`, "/0", "invalid character ']' in number", 2},
		{`[-0.0e+]`, "/0", "invalid character ']' in exponent of number", 7},
		{`[1,2,{"x":[0,{"y":"\u0000","Y":1}]}]`, "/2/x/1/Y", reasonCaseFold + `"Y" and "y"`, 27},
		{`{"a~b":{"c/d":[9007199254740993]}}`, "/a~0b/c~1d/0", reasonBigInt, 15},
		{deep, strings.Repeat("/0", MaxDepth), reasonDepth, MaxDepth},
		{deepObj, "/a" + strings.Repeat("/b", MaxDepth-1), reasonDepth, 5 * MaxDepth},
	} {
		got, err := Append([]byte("prefix"), []byte(tt.in))
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("Append(%q) = %q, %v; want *Error", tt.in, got, err)
			continue
		}
		if e.Path != tt.path || e.Reason != tt.reason || e.Offset != tt.offset {
			t.Errorf("Append(%q) error = {Path:%q Reason:%q Offset:%d}; want {%q %q %d}",
				tt.in, e.Path, e.Reason, e.Offset, tt.path, tt.reason, tt.offset)
		}
		if string(got) != "prefix" {
			t.Errorf("Append(%q) returned dst %q; want it unchanged", tt.in, got)
		}
	}
}

func TestMaxDepthAccepted(t *testing.T) {
	in := strings.Repeat(`{"a":[`, MaxDepth/2) + "0" + strings.Repeat("]}", MaxDepth/2)
	got, err := Append(nil, []byte(in))
	if err != nil || string(got) != in {
		t.Fatalf("Append(depth %d) = %v", MaxDepth, err)
	}
}

func TestErrorString(t *testing.T) {
	for _, tt := range []struct {
		err  Error
		want string
	}{
		{Error{Path: "/a/b", Reason: `duplicate member name "x"`, Offset: 9}, `at /a/b: duplicate member name "x"`},
		{Error{Reason: "unexpected end of input", Offset: 3}, `at offset 3: unexpected end of input`},
	} {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q; want %q", got, tt.want)
		}
	}
}

// TestLargeObject exercises the hashed duplicate check and sorting of objects
// with more than smallObject members.
func TestLargeObject(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	const n = 500
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("k%03d\U0001F600", i)
		if i%7 == 0 {
			names[i] = fmt.Sprintf("k%03d\uFB33", i)
		}
	}
	build := func(names []string) []byte {
		var b bytes.Buffer
		b.WriteByte('{')
		for i, name := range names {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%q:%d", name, i)
		}
		b.WriteByte('}')
		return b.Bytes()
	}
	shuffled := slices.Clone(names)
	r.Shuffle(n, func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	in := build(shuffled)
	got, err := Append(nil, in)
	if err != nil {
		t.Fatal(err)
	}
	want := jsontext.Value(slices.Clone(in))
	if err := want.Canonicalize(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("large object mismatch:\n got %s\nwant %s", got, want)
	}

	dup := append(slices.Clone(shuffled), strings.ToUpper(shuffled[100]), shuffled[10])
	_, err = Append(nil, build(dup))
	var e *Error
	if !errors.As(err, &e) || e.Path != "/"+strings.ToUpper(shuffled[100]) || !strings.HasPrefix(e.Reason, reasonCaseFold) {
		t.Fatalf("want case-variant error on %q, got %v", strings.ToUpper(shuffled[100]), err)
	}
	same := make([]string, 2000)
	for i := range same {
		same[i] = "x"
	}
	_, err = Append(nil, build(same))
	if !errors.As(err, &e) || e.Path != "/x" || e.Offset != int64(len(`{"x":0,`)) {
		t.Fatalf("want duplicate error at second member, got %v", err)
	}
}

func TestCompareUTF16(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	alphabet := []rune{'a', 'b', 0x7f, 0x80, 0x7ff, 0x800, 0xd7ff, 0xe000, 0xfb33, 0xffff, 0x10000, 0x1f600, 0x10ffff}
	gen := func() string {
		rs := make([]rune, r.IntN(4))
		for i := range rs {
			rs[i] = alphabet[r.IntN(len(alphabet))]
		}
		return string(rs)
	}
	for range 20000 {
		a, b := gen(), gen()
		want := slices.Compare(utf16.Encode([]rune(a)), utf16.Encode([]rune(b)))
		if got := compareUTF16([]byte(a), []byte(b)); got != want {
			t.Fatalf("compareUTF16(%q, %q) = %d; want %d", a, b, got, want)
		}
	}
}

func TestAppendKeepsPrefix(t *testing.T) {
	dst := make([]byte, 0, 4)
	dst = append(dst, "ab"...)
	got, err := Append(dst, []byte(`{"b":1,"a":[2]}`))
	if err != nil || string(got) != `ab{"a":[2],"b":1}` {
		t.Fatalf("Append = %q, %v", got, err)
	}
}

func TestAppendAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool is randomized under the race detector")
	}
	src := []byte(benchEvent)
	dst := make([]byte, 0, 2*len(src))
	Append(dst, src) // warm the pool
	if n := testing.AllocsPerRun(100, func() { Append(dst[:0], src) }); n > 0 {
		t.Errorf("Append allocates %v times per call; want 0", n)
	}
}
