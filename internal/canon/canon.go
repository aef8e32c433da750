// Package canon owns strict JSON input and RFC 8785 (JSON Canonicalization
// Scheme, JCS) output for Cairn.
//
// Every record Cairn stores is hashed over the bytes produced by [Append], so
// those bytes are part of the log's format: for a given input they must be
// the same on every machine, in every process and in every future version of
// this package. Changing what Append outputs or accepts is a format change.
//
// canon must never accept input whose canonical form would silently differ in
// meaning from what was sent. It therefore rejects, besides malformed JSON:
// invalid UTF-8 and lone surrogate escapes, duplicate member names, member
// names that differ only in case, numbers that overflow float64, integer
// literals beyond ±2^53 that canonicalization would change (such as 2^53+1),
// and nesting deeper than [MaxDepth]. Rejections are [*Error] values naming the
// offending member by JSON Pointer.
//
// canon must never depend on anything but its input bytes (no reflection, map
// order, locale or global settings) and never decodes JSON into Go values.
package canon

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// MaxDepth is the deepest nesting of arrays and objects that [Append] accepts.
// The top-level value is at depth 0 and each enclosing '[' or '{' adds one, so
// 64 nested arrays are accepted and 65 are rejected.
const MaxDepth = 64

// maxSafeInt is 2^53, the largest magnitude below which every integer is
// exactly representable as a float64.
const maxSafeInt = "9007199254740992"

// maxCanonicalIntDigits is the most digits a canonical number can have
// without switching to exponential notation (|f| < 1e21).
const maxCanonicalIntDigits = 21

// Error describes why [Append] rejected its input.
//
// Path is the RFC 6901 JSON Pointer of the value or member at fault: for
// example "/payload/Name" for a member name that collides with "name", or
// "/n/1" for a number in an array. Syntax errors between members or elements
// name the enclosing container, and Path is "" for the top-level value.
// Reason is a short lowercase description, and Offset the byte offset in the
// input at which the problem was detected.
type Error struct {
	Path   string
	Reason string
	Offset int64
}

// Error returns "at PATH: REASON", or "at offset N: REASON" when Path is
// empty. A Path with non-printable characters is quoted.
func (e *Error) Error() string {
	switch {
	case e.Path == "":
		return "at offset " + strconv.FormatInt(e.Offset, 10) + ": " + e.Reason
	case strings.ContainsFunc(e.Path, func(r rune) bool { return !unicode.IsPrint(r) }):
		return "at " + strconv.Quote(e.Path) + ": " + e.Reason
	}
	return "at " + e.Path + ": " + e.Reason
}

// prepend adds seg as the leading reference token of e.Path.
func (e *Error) prepend(seg string) {
	if strings.ContainsAny(seg, "~/") {
		seg = strings.NewReplacer("~", "~0", "/", "~1").Replace(seg)
	}
	e.Path = "/" + seg + e.Path
}

// Reasons for which Append rejects syntactically valid JSON. They are
// constants so tests can tell strictness from syntax errors.
const (
	reasonDuplicate  = "duplicate member name "
	reasonCaseFold   = "member names differ only in case: "
	reasonBigInt     = "integer literal beyond 2^53 would lose precision"
	reasonOverflow   = "number overflows float64"
	reasonDepth      = "nesting exceeds maximum depth of 64"
	reasonInvalidUTF = "invalid utf-8 in string"
)

// Append appends the canonical (RFC 8785) form of the single JSON value in src
// to dst and returns the extended buffer.
//
// src must hold exactly one JSON value, optionally surrounded by JSON
// whitespace. Append is strict: besides malformed JSON it rejects invalid
// UTF-8 (including lone surrogate escapes such as "\ud800"), duplicate member
// names, member names within one object that are equal under
// [strings.EqualFold], numbers that overflow float64 (1e400), integer literals
// (no fraction, no exponent) whose magnitude exceeds 2^53 and which are not
// already in canonical form, and nesting deeper than [MaxDepth]. The
// exception keeps Append idempotent: 1e20 canonicalizes to
// 100000000000000000000, which must itself be accepted, while
// 9007199254740993, which would become 9007199254740992, is rejected.
//
// Object members are ordered by name compared as UTF-16 code units, strings
// are re-escaped as by [AppendString] and numbers are re-formatted as by
// [AppendNumber]; accepted integer literals are copied as written except that
// -0 becomes 0. Append(Append(x)) produces the same bytes as Append(x).
//
// On error Append returns dst unchanged (bytes beyond len(dst) may have been
// overwritten) and an error of type [*Error]. dst and src must not overlap.
// Append is safe for concurrent use.
func Append(dst, src []byte) ([]byte, error) {
	s := statePool.Get().(*state)
	s.src = src
	out, err := s.top(dst)
	s.release()
	if err != nil {
		return dst, err
	}
	return out, nil
}

func (s *state) top(dst []byte) ([]byte, *Error) {
	i := skipWS(s.src, 0)
	dst, i, err := s.value(dst, i, 0)
	if err != nil {
		return dst, err
	}
	if i = skipWS(s.src, i); i < len(s.src) {
		return dst, s.errUnexpected(i, "after top-level value")
	}
	return dst, nil
}

// member records one parsed object member.
type member struct {
	name, nameEnd int // decoded name: s.src[name:nameEnd], or s.names if flagInBuf
	start, end    int // canonical `"name":value` bytes in the output buffer
	off           int // offset of the name's opening quote in src
	flags         uint8
}

// String flags reported by state.str; flagInBuf is set by state.object.
const (
	flagEscaped  uint8 = 1 << iota // the source string contained a backslash escape
	flagNonASCII                   // the string contains a character above U+007F
	flagHigh                       // the string contains a character at or above U+E000
	flagInBuf                      // member name is stored decoded in state.names
)

// entry is the compact per-member record that name checks and sorting of
// large objects work on.
type entry struct {
	key  uint64 // the name's first 8 bytes in UTF-16 order, see loadKey
	fold uint64 // equal for names equal under case folding, see foldKey
	idx  int    // index of the member
}

// state is the per-call scratch space. It is pooled so that a steady stream of
// calls allocates nothing once the buffers have grown to fit.
type state struct {
	src     []byte
	members []member // stack of members of all currently open objects
	names   []byte   // decoded names that contained escapes (stack, like members)
	ents    []entry  // entries of the object being finished
	tmp     []byte   // reordering scratch, used by one object at a time
	fold    []byte   // case-folded non-ASCII name being hashed
}

var statePool = sync.Pool{New: func() any { return new(state) }}

// hashSeed randomizes name hashes so that colliding names cannot be
// precomputed. Hashes only ever filter candidate pairs; they never affect
// output or which error is reported.
var hashSeed = rand.Uint64() | 1

// Limits above which pooled buffers are dropped rather than kept.
const (
	maxPooledBytes   = 1 << 20
	maxPooledMembers = 1 << 14
)

func (s *state) release() {
	s.src = nil
	if cap(s.members) > maxPooledMembers || cap(s.ents) > maxPooledMembers {
		s.members, s.ents = nil, nil
	}
	if cap(s.tmp) > maxPooledBytes || cap(s.names) > maxPooledBytes || cap(s.fold) > maxPooledBytes {
		s.tmp, s.names, s.fold = nil, nil, nil
	}
	s.members, s.names = s.members[:0], s.names[:0]
	statePool.Put(s)
}

func (s *state) errAt(i int, reason string) *Error {
	return &Error{Reason: reason, Offset: int64(i)}
}

func (s *state) errUnexpected(i int, context string) *Error {
	if i >= len(s.src) {
		return s.errAt(i, "unexpected end of input")
	}
	c := s.src[i]
	var what string
	if c < utf8.RuneSelf {
		what = strconv.QuoteRuneToASCII(rune(c))
	} else {
		what = fmt.Sprintf("byte 0x%02x", c)
	}
	return s.errAt(i, "invalid character "+what+" "+context)
}

func skipWS(src []byte, i int) int {
	for i < len(src) {
		switch src[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// value parses the value starting at src[i] (no leading whitespace), appends
// its canonical form to dst and returns the offset just past it. depth is the
// number of containers enclosing the value.
func (s *state) value(dst []byte, i, depth int) ([]byte, int, *Error) {
	src := s.src
	if i >= len(src) {
		return dst, i, s.errAt(i, "unexpected end of input")
	}
	switch c := src[i]; c {
	case '"':
		dst, i, _, err := s.str(dst, i)
		return dst, i, err
	case '{':
		return s.object(dst, i, depth+1)
	case '[':
		return s.array(dst, i, depth+1)
	case 't':
		return s.literal(dst, i, "true")
	case 'f':
		return s.literal(dst, i, "false")
	case 'n':
		return s.literal(dst, i, "null")
	default:
		if c == '-' || '0' <= c && c <= '9' {
			return s.number(dst, i)
		}
		return dst, i, s.errUnexpected(i, "looking for beginning of value")
	}
}

func (s *state) literal(dst []byte, i int, lit string) ([]byte, int, *Error) {
	if len(s.src)-i >= len(lit) && string(s.src[i:i+len(lit)]) == lit {
		return append(dst, lit...), i + len(lit), nil
	}
	return dst, i, s.errAt(i, "invalid literal, expected "+lit)
}

func (s *state) object(dst []byte, i, depth int) ([]byte, int, *Error) {
	src := s.src
	if depth > MaxDepth {
		return dst, i, s.errAt(i, reasonDepth)
	}
	dst = append(dst, '{')
	i = skipWS(src, i+1)
	if i < len(src) && src[i] == '}' {
		return append(dst, '}'), i + 1, nil
	}
	base, namesBase := len(s.members), len(s.names)
	objStart := len(dst)
	for {
		if i >= len(src) || src[i] != '"' {
			return dst, i, s.errUnexpected(i, "looking for beginning of object member name")
		}
		start, off := len(dst), i
		var flags uint8
		var err *Error
		if dst, i, flags, err = s.str(dst, i); err != nil {
			return dst, i, err
		}
		name, nameEnd := off+1, i-1
		if flags&flagEscaped != 0 {
			flags |= flagInBuf
			name = len(s.names)
			s.names = appendUnquoted(s.names, src[off+1:i-1])
			nameEnd = len(s.names)
		}
		i = skipWS(src, i)
		if i >= len(src) || src[i] != ':' {
			return dst, i, s.errUnexpected(i, "after object member name")
		}
		dst = append(dst, ':')
		i = skipWS(src, i+1)
		if dst, i, err = s.value(dst, i, depth); err != nil {
			err.prepend(string(s.name(&member{name: name, nameEnd: nameEnd, flags: flags})))
			return dst, i, err
		}
		// Fill the new element in place: building a member on the stack
		// and copying it costs a store-forwarding stall per member.
		s.members = append(s.members, member{})
		m := &s.members[len(s.members)-1]
		m.name, m.nameEnd, m.start, m.end, m.off, m.flags = name, nameEnd, start, len(dst), off, flags
		i = skipWS(src, i)
		if i < len(src) && src[i] == ',' {
			dst = append(dst, ',')
			i = skipWS(src, i+1)
			continue
		}
		if i < len(src) && src[i] == '}' {
			i++
			break
		}
		return dst, i, s.errUnexpected(i, "after object member value")
	}

	if ms := s.members[base:]; len(ms) > 1 {
		var err *Error
		if dst, err = s.finishObject(dst, objStart, ms); err != nil {
			return dst, i, err
		}
	}
	s.members, s.names = s.members[:base], s.names[:namesBase]
	return append(dst, '}'), i, nil
}

func (s *state) array(dst []byte, i, depth int) ([]byte, int, *Error) {
	src := s.src
	if depth > MaxDepth {
		return dst, i, s.errAt(i, reasonDepth)
	}
	dst = append(dst, '[')
	i = skipWS(src, i+1)
	if i < len(src) && src[i] == ']' {
		return append(dst, ']'), i + 1, nil
	}
	for n := 0; ; n++ {
		var err *Error
		if dst, i, err = s.value(dst, i, depth); err != nil {
			err.prepend(strconv.Itoa(n))
			return dst, i, err
		}
		i = skipWS(src, i)
		if i < len(src) && src[i] == ',' {
			dst = append(dst, ',')
			i = skipWS(src, i+1)
			continue
		}
		if i < len(src) && src[i] == ']' {
			return append(dst, ']'), i + 1, nil
		}
		return dst, i, s.errUnexpected(i, "after array element")
	}
}

// name returns the decoded name of m.
func (s *state) name(m *member) []byte {
	if m.flags&flagInBuf != 0 {
		return s.names[m.name:m.nameEnd]
	}
	return s.src[m.name:m.nameEnd]
}

// finishObject checks the names of the members ms of the object whose
// canonical members, separated by commas, are dst[objStart:], and reorders
// them per RFC 8785 section 3.2.3 if they are not already in order.
func (s *state) finishObject(dst []byte, objStart int, ms []member) ([]byte, *Error) {
	if len(ms) > smallObject {
		return s.finishLarge(dst, objStart, ms)
	}
	var keys, folds [smallObject]uint64
	for k := range ms {
		keys[k], folds[k] = s.keys(&ms[k], true)
	}
	n := len(ms)
	// Names equal under case folding have equal folds; check those pairs.
	for j := 1; j < n; j++ {
		for i := range j {
			if folds[i] == folds[j] && s.foldEqual(&ms[i], &ms[j]) {
				return dst, s.nameError(&ms[i], &ms[j])
			}
		}
	}
	// Insertion sort of member indices by name: n is small, and input that
	// is already in order, such as stored records being verified, costs
	// only n-1 comparisons. Names are now known to be distinct.
	var order [smallObject]uint8
	moved := 0
	for i := range n {
		order[i] = uint8(i)
	}
	for i := 1; i < n; i++ {
		e, ke := order[i], keys[i]
		j := i
		for ; j > 0; j-- {
			p := order[j-1]
			if kp := keys[p]; ke > kp || ke == kp && s.compareNames(&ms[e], &ms[p]) > 0 {
				break
			}
			order[j] = p
		}
		order[j] = e
		moved |= j ^ i
	}
	if moved == 0 {
		return dst, nil
	}
	return s.reorder(dst, objStart, ms, func(k int) int { return int(order[k]) }), nil
}

// finishLarge is finishObject for objects of more than smallObject members.
func (s *state) finishLarge(dst []byte, objStart int, ms []member) ([]byte, *Error) {
	es := slices.Grow(s.ents[:0], len(ms))[:len(ms)]
	s.ents = es
	for k := range ms {
		es[k].key, es[k].fold = s.keys(&ms[k], false)
		es[k].idx = k
	}
	if err := s.checkLarge(ms, es); err != nil {
		return dst, err
	}
	slices.SortFunc(es, func(a, b entry) int {
		if a.key != b.key {
			return cmp.Compare(a.key, b.key)
		}
		return s.compareNames(&ms[a.idx], &ms[b.idx])
	})
	for k := range es {
		if es[k].idx != k {
			return s.reorder(dst, objStart, ms, func(k int) int { return es[k].idx }), nil
		}
	}
	return dst, nil
}

// reorder rewrites the members in dst[objStart:] in the order given by
// ms[at(0)], ms[at(1)], ...
func (s *state) reorder(dst []byte, objStart int, ms []member, at func(int) int) []byte {
	s.tmp = append(s.tmp[:0], dst[objStart:]...)
	dst = dst[:objStart]
	for k := range ms {
		if k > 0 {
			dst = append(dst, ',')
		}
		m := &ms[at(k)]
		dst = append(dst, s.tmp[m.start-objStart:m.end-objStart]...)
	}
	return dst
}

// keys returns the sort key of m's name (see loadKey) and its fold filter:
// a foldKey if small, else a hash of the case-folded name.
func (s *state) keys(m *member, small bool) (key, fold uint64) {
	name := s.name(m)
	key = loadKey(name)
	switch {
	case m.flags&flagNonASCII != 0:
		fold = s.foldNonASCII(name, small)
		if m.flags&flagHigh != 0 {
			key = utf16Key(key)
		}
	case small:
		fold = foldKey(upperASCII(key), len(name))
	default:
		fold = hashFolded(name, true)
	}
	return key, fold
}

// compareNames compares the names of a and b in UTF-16 order.
func (s *state) compareNames(a, b *member) int {
	if (a.flags|b.flags)&flagHigh == 0 {
		return bytes.Compare(s.name(a), s.name(b)) // UTF-8 byte order is code point order
	}
	return compareUTF16(s.name(a), s.name(b))
}

// utf16Order maps UTF-8 bytes so that byte order becomes UTF-16 code unit
// order. The two orders differ only between characters above U+FFFF (lead
// bytes 0xF0-0xF4, surrogates 0xD800-0xDFFF in UTF-16) and those in
// U+E000-U+FFFF (lead bytes 0xEE-0xEF): UTF-16 puts the former first. The map
// swaps those lead byte ranges; continuation bytes (0x80-0xBF) and all other
// lead bytes are unchanged, and since strings with a common prefix have their
// first differing bytes at the same position within a character, comparing
// mapped bytes compares UTF-16 code units.
var utf16Order = func() (t [256]byte) {
	for i := range t {
		t[i] = byte(i)
	}
	for c := 0xF0; c <= 0xF4; c++ {
		t[c] = byte(c - 2) // 0xEE-0xF2
	}
	t[0xEE], t[0xEF] = 0xF3, 0xF4
	return t
}()

// compareUTF16 compares two valid UTF-8 strings as UTF-16 code unit sequences.
func compareUTF16(x, y []byte) int {
	n := min(len(x), len(y))
	for i := 0; i < n; i++ {
		if x[i] != y[i] {
			return cmp.Compare(utf16Order[x[i]], utf16Order[y[i]])
		}
	}
	return cmp.Compare(len(x), len(y))
}

// loadKey returns the first 8 bytes of name, zero padded, as a big-endian
// integer: if loadKey(x) < loadKey(y) then x < y bytewise.
func loadKey(name []byte) uint64 {
	switch n := len(name); {
	case n >= 8:
		return binary.BigEndian.Uint64(name)
	case n >= 4:
		// Two overlapping 4-byte loads; overlapping bytes land in the
		// same place in both.
		return uint64(binary.BigEndian.Uint32(name))<<32 |
			uint64(binary.BigEndian.Uint32(name[n-4:]))<<(8*(8-n))
	default:
		var k uint64
		for i, c := range name {
			k |= uint64(c) << (56 - 8*i)
		}
		return k
	}
}

// utf16Key maps the bytes of a loadKey result through utf16Order, so that
// keys of names order as the names do in UTF-16.
func utf16Key(k uint64) uint64 {
	var m uint64
	for i := 56; i >= 0; i -= 8 {
		m |= uint64(utf16Order[byte(k>>i)]) << i
	}
	return m
}

// upperASCII upper-cases the ASCII letters among the 8 bytes of v, all of
// which must be ASCII. The high bit of each byte of
// (v + 0x80-'a') &^ (v + 0x80-'z'-1) is set iff the byte is in 'a'..'z'.
func upperASCII(v uint64) uint64 {
	return v ^ ((v+lsb*(0x80-'a'))&^(v+lsb*(0x80-'z'-1))&msb)>>2
}

// foldKey combines the loadKey of a case-folded name and its length into a
// filter for equality under case folding in small objects.
func foldKey(k uint64, n int) uint64 {
	return k ^ uint64(n)*0x9e3779b97f4a7c15
}

// smallObject is the member count up to which names are checked pairwise.
const smallObject = 16

// checkLarge rejects objects in which two member names are equal under
// strings.EqualFold (which includes exact duplicates), reporting the member at
// which the collision first becomes apparent in source order, like the
// pairwise check in finishObject. It sorts es by fold.
func (s *state) checkLarge(ms []member, es []entry) *Error {
	slices.SortFunc(es, func(a, b entry) int {
		if c := cmp.Compare(a.fold, b.fold); c != 0 {
			return c
		}
		return cmp.Compare(a.idx, b.idx)
	})
	first, second := -1, -1
	for g := 0; g < len(es); {
		h := g + 1
		for h < len(es) && es[h].fold == es[g].fold {
			h++
		}
		// Within a group of equal hashes, find the earliest member that
		// collides with an earlier one. Groups are tiny unless names really
		// are equal, in which case the first comparison succeeds.
	group:
		for y := g + 1; y < h; y++ {
			if second >= 0 && es[y].idx >= second {
				break
			}
			for x := g; x < y; x++ {
				if s.foldEqual(&ms[es[x].idx], &ms[es[y].idx]) {
					first, second = es[x].idx, es[y].idx
					break group
				}
			}
		}
		g = h
	}
	if second >= 0 {
		return s.nameError(&ms[first], &ms[second])
	}
	return nil
}

func (s *state) foldEqual(a, b *member) bool {
	return bytes.EqualFold(s.name(a), s.name(b))
}

func (s *state) nameError(earlier, later *member) *Error {
	x, y := s.name(earlier), s.name(later)
	var err *Error
	if bytes.Equal(x, y) {
		err = s.errAt(later.off, reasonDuplicate+strconv.Quote(string(y)))
	} else {
		err = s.errAt(later.off, reasonCaseFold+strconv.Quote(string(y))+" and "+strconv.Quote(string(x)))
	}
	err.prepend(string(y))
	return err
}

// foldNonASCII returns the fold filter (foldKey if small, else the hash) of
// a name with non-ASCII characters. It replaces every rune by the smallest
// rune of its simple case folding orbit, which for ASCII letters is the
// upper-case letter, so names equal under strings.EqualFold have equal
// folded forms, which are equal to the upper-cased form of ASCII names.
func (s *state) foldNonASCII(name []byte, small bool) uint64 {
	f := s.fold[:0]
	for i := 0; i < len(name); {
		if c := name[i]; c < utf8.RuneSelf {
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			f = append(f, c)
			i++
			continue
		}
		r, size := utf8.DecodeRune(name[i:])
		f = utf8.AppendRune(f, foldRune(r))
		i += size
	}
	s.fold = f
	if small {
		return foldKey(loadKey(f), len(f))
	}
	return hashFolded(f, false)
}

// foldRune returns the smallest rune in r's simple case folding orbit.
func foldRune(r rune) rune {
	m := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		m = min(m, f)
	}
	return m
}

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// hashFolded hashes b 8 bytes at a time. If upper is set, b must be ASCII
// and its lower-case letters are hashed as upper case. Which bytes are loaded
// depends only on len(b), so upper-casing b first gives the same hash.
func hashFolded(b []byte, upper bool) uint64 {
	h := hashSeed ^ uint64(len(b))
	for {
		var v uint64
		switch n := len(b); {
		case n > 8:
			v, b = binary.LittleEndian.Uint64(b), b[8:]
		case n == 8:
			v, b = binary.LittleEndian.Uint64(b), nil
		case n >= 4:
			v, b = uint64(binary.LittleEndian.Uint32(b))|uint64(binary.LittleEndian.Uint32(b[n-4:]))<<32, nil
		case n > 0:
			v, b = uint64(b[0])|uint64(b[n/2])<<8|uint64(b[n-1])<<16, nil
		default:
			hi, lo := bits.Mul64(h, hashSeed)
			return hi ^ lo
		}
		if upper {
			v = upperASCII(v)
		}
		hi, lo := bits.Mul64(h^v, 0x9e3779b97f4a7c15)
		h = hi ^ lo
	}
}

// number parses the number at src[i] and appends its canonical form.
func (s *state) number(dst []byte, i int) ([]byte, int, *Error) {
	src := s.src
	start := i
	if src[i] == '-' {
		i++
	}
	digits := i
	switch {
	case i < len(src) && src[i] == '0':
		i++
	case i < len(src) && '1' <= src[i] && src[i] <= '9':
		for i++; i < len(src) && isDigit(src[i]); i++ {
		}
	default:
		return dst, i, s.errUnexpected(i, "in number")
	}
	intEnd := i
	fracEnd := i
	if i < len(src) && src[i] == '.' {
		i++
		if i >= len(src) || !isDigit(src[i]) {
			return dst, i, s.errUnexpected(i, "after decimal point in number")
		}
		for i++; i < len(src) && isDigit(src[i]); i++ {
		}
		fracEnd = i
	}
	if i < len(src) && (src[i] == 'e' || src[i] == 'E') {
		i++
		if i < len(src) && (src[i] == '+' || src[i] == '-') {
			i++
		}
		if i >= len(src) || !isDigit(src[i]) {
			return dst, i, s.errUnexpected(i, "in exponent of number")
		}
		for i++; i < len(src) && isDigit(src[i]); i++ {
		}
	}
	lit := src[start:i]

	if i == intEnd {
		// An integer literal. Within ±2^53 its ECMAScript form is the literal
		// itself (JSON forbids leading zeros), except for -0.
		n := intEnd - digits
		if n < len(maxSafeInt) || n == len(maxSafeInt) && string(src[digits:intEnd]) <= maxSafeInt {
			if n == 1 && src[digits] == '0' {
				return append(dst, '0'), i, nil
			}
			return append(dst, lit...), i, nil
		}
		// Beyond 2^53 only literals that are already the canonical form of
		// their float64 value are accepted: anything else (9007199254740993)
		// would silently change. Without this exception the canonical form
		// of 1e20, 100000000000000000000, could not be canonicalized again.
		if n <= maxCanonicalIntDigits {
			if f, ok := parseFloat(lit); ok {
				mark := len(dst)
				if dst = appendFloat(dst, f); string(dst[mark:]) == string(lit) {
					return dst, i, nil
				}
				dst = dst[:mark]
			}
		}
		return dst, i, s.errAt(start, reasonBigInt)
	}
	if fracEnd == i && canonicalDecimal(src[digits:intEnd], src[intEnd+1:fracEnd]) {
		return append(dst, lit...), i, nil
	}
	f, ok := parseFloat(lit)
	if !ok {
		return dst, i, s.errAt(start, reasonOverflow)
	}
	return appendFloat(dst, f), i, nil
}

// canonicalDecimal reports whether a number literal without exponent, with
// integer digits intPart and fraction digits frac (non-empty), is already in
// canonical form. That holds if it has at most 15 significant digits, no
// trailing zero and a magnitude of at least 1e-6: a decimal of at most 15
// significant digits is the unique such decimal that rounds to its float64
// (DBL_DIG is 15), so it is also the shortest one that round-trips, and
// ECMAScript formats it in fixed notation exactly as written.
func canonicalDecimal(intPart, frac []byte) bool {
	if frac[len(frac)-1] == '0' {
		return false
	}
	sig := len(intPart) + len(frac)
	if intPart[0] == '0' { // "0.000ddd"
		z := 0
		for z < len(frac) && frac[z] == '0' {
			z++
		}
		if z > 5 { // below 1e-6
			return false
		}
		sig = len(frac) - z
	}
	return sig <= 15
}

// parseFloat parses a validated JSON number. The only possible failure is
// overflow; underflow rounds to (signed) zero without error.
func parseFloat(lit []byte) (float64, bool) {
	// The string does not outlive the call: it only escapes into the
	// error, which is discarded.
	f, err := strconv.ParseFloat(unsafe.String(unsafe.SliceData(lit), len(lit)), 64)
	return f, err == nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// AppendNumber appends f formatted per RFC 8785 section 3.2.2.3, which is
// ECMAScript's Number.prototype.toString: the shortest decimal digits that
// round-trip to f, -0 written as 0, fixed notation when the decimal exponent
// is in [-6, 21) and exponential notation such as 1e+21 or 1.5e-7 otherwise.
// NaN and ±Inf have no JSON representation; for them AppendNumber returns dst
// unchanged and an error.
func AppendNumber(dst []byte, f float64) ([]byte, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return dst, fmt.Errorf("canon: %v is not a valid json number", f)
	}
	return appendFloat(dst, f), nil
}

// appendFloat implements AppendNumber for finite f.
func appendFloat(dst []byte, f float64) []byte {
	if f == 0 {
		return append(dst, '0') // also -0
	}
	if a := math.Abs(f); a < 1e-6 || a >= 1e21 {
		dst = strconv.AppendFloat(dst, f, 'e', -1, 64)
		// strconv writes at least two exponent digits; ECMAScript writes
		// the minimum: 1e-07 becomes 1e-7. Positive exponents are >= 21.
		if n := len(dst); dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
		return dst
	}
	return strconv.AppendFloat(dst, f, 'f', -1, 64)
}

// AppendString appends s to dst as an RFC 8785 JSON string: quoted, with '"',
// '\\' and the control characters below U+0020 escaped (\b, \t, \n, \f and \r
// in their short forms, the rest as \u00xx with lowercase hex) and every other
// character copied as raw UTF-8.
//
// s must be valid UTF-8; callers validate it. AppendString does not check,
// and invalid input produces output that Append would reject.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c == '"' || c == '\\' {
			dst = append(dst, s[start:i]...)
			dst = appendEscaped(dst, c)
			start = i + 1
		}
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

const hexDigits = "0123456789abcdef"

// appendEscaped appends the JCS escape sequence for c, which is '"', '\\' or a
// control character.
func appendEscaped(dst []byte, c byte) []byte {
	switch c {
	case '"', '\\':
		return append(dst, '\\', c)
	case '\b':
		return append(dst, '\\', 'b')
	case '\t':
		return append(dst, '\\', 't')
	case '\n':
		return append(dst, '\\', 'n')
	case '\f':
		return append(dst, '\\', 'f')
	case '\r':
		return append(dst, '\\', 'r')
	}
	return append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
}

// strPlain reports which ASCII bytes may appear unescaped in both JSON input
// and JCS output.
var strPlain = func() (t [utf8.RuneSelf]bool) {
	for c := ' '; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// special returns a word whose lowest set high bit marks the first byte of v
// (little-endian) that is not plain ASCII per strPlain, or 0 if all are plain.
// Higher set bits may be spurious; the lowest never is.
func special(v uint64) uint64 {
	q := v ^ (lsb * '"')
	b := v ^ (lsb * '\\')
	return ((v-lsb*0x20)&^v | (q-lsb)&^q | (b-lsb)&^b | v) & msb
}

// str parses the string whose opening quote is at src[i], appends its
// canonical form to dst and returns the offset just past the closing quote
// and flags describing the string's content.
func (s *state) str(dst []byte, i int) ([]byte, int, uint8, *Error) {
	src := s.src
	quote := i
	run := i // start of the bytes to copy as they are, quotes included
	var flags uint8
	i++
	for {
		// Skip plain ASCII, 8 bytes at a time where possible.
	scan:
		for {
			if len(src)-i >= 8 {
				if sp := special(binary.LittleEndian.Uint64(src[i:])); sp != 0 {
					i += bits.TrailingZeros64(sp) >> 3
					break scan
				}
				i += 8
				continue
			}
			if i < len(src) && src[i] < utf8.RuneSelf && strPlain[src[i]] {
				i++
				continue
			}
			break
		}
		if i >= len(src) {
			return dst, i, flags, s.errAt(quote, "unterminated string")
		}
		c := src[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRune(src[i:])
			if r == utf8.RuneError && size == 1 {
				return dst, i, flags, s.errAt(i, reasonInvalidUTF)
			}
			flags |= flagNonASCII
			if c >= 0xEE {
				flags |= flagHigh
			}
			i += size
			continue
		}
		if c == '"' {
			return append(dst, src[run:i+1]...), i + 1, flags, nil
		}
		dst = append(dst, src[run:i]...)
		if c != '\\' {
			return dst, i, flags, s.errAt(i, "invalid control character in string")
		}
		flags |= flagEscaped
		var r rune
		var err *Error
		if r, i, err = s.escape(i); err != nil {
			return dst, i, flags, err
		}
		run = i
		switch {
		case r < ' ' || r == '"' || r == '\\':
			dst = appendEscaped(dst, byte(r))
		case r < utf8.RuneSelf:
			dst = append(dst, byte(r))
		default:
			flags |= flagNonASCII
			if r >= 0xE000 {
				flags |= flagHigh
			}
			dst = utf8.AppendRune(dst, r)
		}
	}
}

// escape decodes the escape sequence at src[i] (a backslash), combining
// surrogate pairs, and returns the rune and the offset just past it.
func (s *state) escape(i int) (rune, int, *Error) {
	src := s.src
	if i+1 >= len(src) {
		return 0, i, s.errAt(i, "unterminated string")
	}
	switch src[i+1] {
	case '"', '\\', '/':
		return rune(src[i+1]), i + 2, nil
	case 'b':
		return '\b', i + 2, nil
	case 'f':
		return '\f', i + 2, nil
	case 'n':
		return '\n', i + 2, nil
	case 'r':
		return '\r', i + 2, nil
	case 't':
		return '\t', i + 2, nil
	case 'u':
		r, ok := hex4(src, i+2)
		if !ok {
			return 0, i, s.errAt(i, "invalid \\u escape in string")
		}
		if !utf16.IsSurrogate(r) {
			return r, i + 6, nil
		}
		if r < 0xdc00 && len(src)-i >= 12 && src[i+6] == '\\' && src[i+7] == 'u' {
			if r2, ok := hex4(src, i+8); ok && 0xdc00 <= r2 && r2 <= 0xdfff {
				return utf16.DecodeRune(r, r2), i + 12, nil
			}
		}
		return 0, i, s.errAt(i, "invalid utf-16 surrogate in string")
	}
	return 0, i, s.errAt(i, "invalid escape sequence in string")
}

func hex4(src []byte, i int) (rune, bool) {
	if len(src)-i < 4 {
		return 0, false
	}
	var r rune
	for _, c := range src[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// appendUnquoted appends the decoded content of a string body that str has
// already validated.
func appendUnquoted(dst, body []byte) []byte {
	for len(body) > 0 {
		k := bytes.IndexByte(body, '\\')
		if k < 0 {
			return append(dst, body...)
		}
		dst = append(dst, body[:k]...)
		body = body[k:]
		var r rune
		n := 2
		switch body[1] {
		case 'b':
			r = '\b'
		case 'f':
			r = '\f'
		case 'n':
			r = '\n'
		case 'r':
			r = '\r'
		case 't':
			r = '\t'
		case 'u':
			r, _ = hex4(body, 2)
			n = 6
			if utf16.IsSurrogate(r) {
				r2, _ := hex4(body, 8)
				r = utf16.DecodeRune(r, r2)
				n = 12
			}
		default: // '"', '\\', '/'
			r = rune(body[1])
		}
		dst = utf8.AppendRune(dst, r)
		body = body[n:]
	}
	return dst
}
