package pseudo

import (
	"bytes"
	"errors"
	"unicode/utf8"
)

// scanner reads canonical JSON (the output of canon.Append: valid, no whitespace, no duplicate names). It checks
// structure as it goes but does not re-validate what canon already guarantees (number syntax, UTF-8).
type scanner struct {
	b []byte
	i int
}

// ErrNotCanonical means Apply was given bytes that are not canonical JSON; canonicalize with canon.Append first.
var ErrNotCanonical = errors.New("payload is not canonical json")

func (s *scanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// rawString returns the string token at the cursor, quotes included.
func (s *scanner) rawString() ([]byte, error) {
	if s.peek() != '"' {
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

// skip passes over one value and returns its bytes.
func (s *scanner) skip() ([]byte, error) {
	start, depth := s.i, 0
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '"':
			if _, err := s.rawString(); err != nil {
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

// unescape decodes a canonical string token (quotes included). Canonical strings escape only '"', '\\' and control
// characters, so the short escapes and \u00XX are all it needs to handle. The result may alias r.
func unescape(r []byte) ([]byte, error) {
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

// members calls fn with each member of the object at the cursor: raw is the name token (quotes included, canonical
// escaping) and name its decoded form; the cursor is then at the member's value, which fn must consume. Both slices
// are only valid during the call.
func (s *scanner) members(fn func(raw, name []byte) error) error {
	if s.peek() != '{' {
		return ErrNotCanonical
	}
	s.i++
	if s.peek() == '}' {
		s.i++
		return nil
	}
	for {
		raw, err := s.rawString()
		if err != nil || s.peek() != ':' {
			return ErrNotCanonical
		}
		s.i++
		name, err := unescape(raw)
		if err != nil {
			return err
		}
		if err := fn(raw, name); err != nil {
			return err
		}
		switch s.peek() {
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

// elements calls fn for each element of the array at the cursor; fn must consume the element.
func (s *scanner) elements(fn func(i int) error) error {
	if s.peek() != '[' {
		return ErrNotCanonical
	}
	s.i++
	if s.peek() == ']' {
		s.i++
		return nil
	}
	for i := 0; ; i++ {
		if err := fn(i); err != nil {
			return err
		}
		switch s.peek() {
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

// kindName names the JSON kind of the value starting with c, for error messages (never the value itself).
func kindName(c byte) string {
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
