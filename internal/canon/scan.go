package canon

import (
	"bytes"
	"errors"
	"unicode/utf8"
)

// Scanner walks canonical JSON (the output of Append: valid, no whitespace, no duplicate names) without
// validating it again: it checks structure as it goes, not what Append already guarantees (number syntax, UTF-8).
// Packages that read canonical bytes (event validation, field policies) use it instead of decoding them twice.
type Scanner struct {
	b []byte
	i int
}

// NewScanner returns a scanner at the start of b.
func NewScanner(b []byte) Scanner { return Scanner{b: b} }

// Pos is the cursor's offset in the input.
func (s *Scanner) Pos() int { return s.i }

// ErrNotCanonical means bytes given as canonical JSON are not; canonicalise them with Append first.
var ErrNotCanonical = errors.New("not canonical json")

// Peek returns the byte at the cursor, or 0 at the end.
func (s *Scanner) Peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// RawString returns the string token at the cursor, quotes included, and moves past it.
func (s *Scanner) RawString() ([]byte, error) {
	if s.Peek() != '"' {
		return nil, ErrNotCanonical
	}
	for j := s.i + 1; ; {
		k := bytes.IndexByte(s.b[j:], '"')
		if k < 0 {
			return nil, ErrNotCanonical
		}
		j += k
		// The quote ends the string unless an odd number of backslashes escapes it.
		bs := 0
		for bs < j-s.i-1 && s.b[j-1-bs] == '\\' {
			bs++
		}
		if bs%2 == 0 {
			r := s.b[s.i : j+1]
			s.i = j + 1
			return r, nil
		}
		j++
	}
}

// Skip passes over one value and returns its bytes.
func (s *Scanner) Skip() ([]byte, error) {
	start, depth := s.i, 0
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '"':
			if _, err := s.RawString(); err != nil {
				return nil, err
			}
			if depth == 0 {
				return s.b[start:s.i], nil
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return s.b[start:s.i], nil
			}
			if depth--; depth == 0 {
				s.i++
				return s.b[start:s.i], nil
			}
		case ',', ':':
			if depth == 0 {
				return s.b[start:s.i], nil
			}
		}
		s.i++
	}
	if depth == 0 && s.i > start {
		return s.b[start:s.i], nil
	}
	return nil, ErrNotCanonical
}

// Unescape decodes a canonical string token (quotes included). Canonical strings escape only '"', '\\' and control
// characters, so the short escapes and \u00XX are all it needs to handle. The result may alias r.
func Unescape(r []byte) ([]byte, error) {
	body := r[1 : len(r)-1]
	k := 0
	for k < len(body) && body[k] != '\\' {
		k++
	}
	if k == len(body) {
		return body, nil
	}
	out := make([]byte, 0, len(body))
	out = append(out, body[:k]...)
	for ; k < len(body); k++ {
		c := body[k]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		if k+1 >= len(body) {
			return nil, ErrNotCanonical
		}
		k++
		switch body[k] {
		case '"', '\\', '/':
			out = append(out, body[k])
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			if k+4 >= len(body) {
				return nil, ErrNotCanonical
			}
			var v rune
			for _, h := range body[k+1 : k+5] {
				v <<= 4
				switch {
				case '0' <= h && h <= '9':
					v |= rune(h - '0')
				case 'a' <= h && h <= 'f':
					v |= rune(h - 'a' + 10)
				case 'A' <= h && h <= 'F':
					v |= rune(h - 'A' + 10)
				default:
					return nil, ErrNotCanonical
				}
			}
			if v >= 0xd800 && v < 0xe000 {
				return nil, ErrNotCanonical // canonical JSON never escapes beyond control characters
			}
			out = utf8.AppendRune(out, v)
			k += 4
		default:
			return nil, ErrNotCanonical
		}
	}
	return out, nil
}

// Members calls fn with each member of the object at the cursor: raw is the name token (quotes included, canonical
// escaping) and name its decoded form; the cursor is then at the member's value, which fn must consume. Both slices
// are only valid during the call.
func (s *Scanner) Members(fn func(raw, name []byte) error) error {
	if s.Peek() != '{' {
		return ErrNotCanonical
	}
	s.i++
	if s.Peek() == '}' {
		s.i++
		return nil
	}
	for {
		raw, err := s.RawString()
		if err != nil || s.Peek() != ':' {
			return ErrNotCanonical
		}
		s.i++
		name, err := Unescape(raw)
		if err != nil {
			return err
		}
		if err := fn(raw, name); err != nil {
			return err
		}
		switch s.Peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			return nil
		default:
			return ErrNotCanonical
		}
	}
}

// Elements calls fn for each element of the array at the cursor; fn must consume the element.
func (s *Scanner) Elements(fn func(i int) error) error {
	if s.Peek() != '[' {
		return ErrNotCanonical
	}
	s.i++
	if s.Peek() == ']' {
		s.i++
		return nil
	}
	for i := 0; ; i++ {
		if err := fn(i); err != nil {
			return err
		}
		switch s.Peek() {
		case ',':
			s.i++
		case ']':
			s.i++
			return nil
		default:
			return ErrNotCanonical
		}
	}
}

// KindName names the JSON kind of the value starting with c, for error messages (never the value itself).
func KindName(c byte) string {
	switch c {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return "a number"
	}
	return "no value"
}
