package event

import (
	"errors"
	"strconv"
	"time"

	"github.com/go-json-experiment/json"
)

// cscan reads canonical JSON (the output of canon.Append: valid, no whitespace, no duplicate names), so it can
// walk values without re-validating them. It is the single-pass alternative to decoding the same bytes again.
type cscan struct {
	b []byte
	i int
}

var errScan = errors.New("not canonical JSON")

func (s *cscan) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// rawString returns a string token including its quotes.
func (s *cscan) rawString() ([]byte, error) {
	if s.peek() != '"' {
		return nil, errScan
	}
	for j := s.i + 1; j < len(s.b); j++ {
		switch s.b[j] {
		case '\\':
			j++
		case '"':
			r := s.b[s.i : j+1]
			s.i = j + 1
			return r, nil
		}
	}
	return nil, errScan
}

// unquote decodes a string token; canonical strings escape only '"', '\\' and control characters.
func unquote(r []byte) (string, error) {
	for _, c := range r[1 : len(r)-1] {
		if c == '\\' {
			var out string
			err := json.Unmarshal(r, &out)
			return out, err
		}
	}
	return string(r[1 : len(r)-1]), nil
}

// unquoteBytes is unquote without a copy when the string has no escapes.
func unquoteBytes(r []byte) ([]byte, error) {
	for _, c := range r[1 : len(r)-1] {
		if c == '\\' {
			s, err := unquote(r)
			return []byte(s), err
		}
	}
	return r[1 : len(r)-1], nil
}

// skip passes over one value and returns its bytes.
func (s *cscan) skip() ([]byte, error) {
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
	return nil, errScan
}

// members calls fn with each member name of the object at the cursor, the cursor then at the member's value;
// fn must consume the value. name is only valid during the call (it may alias the input).
func (s *cscan) members(fn func(name []byte) error) error {
	if s.peek() != '{' {
		return errScan
	}
	s.i++
	if s.peek() == '}' {
		s.i++
		return nil
	}
	for {
		r, err := s.rawString()
		if err != nil || s.peek() != ':' {
			return errScan
		}
		s.i++
		name, err := unquoteBytes(r)
		if err != nil {
			return err
		}
		if err := fn(name); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			return nil
		default:
			return errScan
		}
	}
}

// elements calls fn for each element of the array at the cursor; fn must consume the element.
func (s *cscan) elements(fn func(i int) error) error {
	if s.peek() != '[' {
		return errScan
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
			return errScan
		}
	}
}

// kindError is a value of the wrong JSON kind at a field.
type kindError struct{ field, reason string }

func (e *kindError) Error() string { return e.field + ": " + e.reason }

func kindName(c byte) string {
	switch c {
	case '"':
		return "string"
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

func isNumber(c byte) bool { return c == '-' || (c >= '0' && c <= '9') }

// str reads a string value at field.
func (s *cscan) str(field string) (string, error) {
	if s.peek() != '"' {
		return "", &kindError{field, "got a JSON " + kindName(s.peek()) + ", want a string"}
	}
	r, err := s.rawString()
	if err != nil {
		return "", err
	}
	return unquote(r)
}

// scanInput decodes a canonical client event. Members arrive in canonical (sorted) order.
func scanInput(c []byte, in *input) error {
	s := &cscan{b: c}
	return s.members(func(name []byte) error {
		var err error
		switch string(name) {
		case "id":
			in.ID, err = s.str("/id")
		case "type":
			in.Type, err = s.str("/type")
		case "time":
			in.Time, err = s.str("/time")
		case "deployment":
			in.Deployment, err = s.str("/deployment")
		case "attrs":
			if s.peek() != '{' {
				return &kindError{"/attrs", "must be an object"}
			}
			in.Attrs, err = s.skip()
		case "payload":
			if s.peek() != '{' {
				return &kindError{"/payload", "must be an object"}
			}
			in.Payload, err = s.skip()
		case "refs":
			if s.peek() != '[' {
				return &kindError{"/refs", "got a JSON " + kindName(s.peek()) + ", want an array of ids"}
			}
			err = s.elements(func(i int) error {
				r, err := s.str("/refs/" + strconv.Itoa(i))
				in.Refs = append(in.Refs, r)
				return err
			})
		case "model":
			if s.peek() != '{' {
				return &kindError{"/model", "got a JSON " + kindName(s.peek()) + ", want an object"}
			}
			m := &Model{}
			in.Model = m
			err = s.members(func(n []byte) error {
				var err error
				switch string(n) {
				case "name":
					m.Name, err = s.str("/model/name")
				case "version":
					m.Version, err = s.str("/model/version")
				case "digest":
					m.Digest, err = s.str("/model/digest")
				default:
					return &kindError{"/model/" + string(n), "unknown field"}
				}
				return err
			})
		default:
			return &kindError{"/" + string(name), "unknown field"}
		}
		return err
	})
}

// checkAttrs validates attribute kinds against spec, recording which are present.
func checkAttrs(attrs []byte, spec *Spec, typ string, present map[string]bool) error {
	s := &cscan{b: attrs}
	return s.members(func(k []byte) error {
		a, ok := spec.Attrs[string(k)]
		if !ok {
			return &kindError{"/attrs/" + string(k), "not an attribute of " + typ + " (attributes are stored in clear; personal data belongs in the payload)"}
		}
		if a.Required {
			present[string(k)] = true
		}
		return s.attr(k, a)
	})
}

func (s *cscan) attr(name []byte, a Attr) error {
	field := func() string { return "/attrs/" + string(name) }
	switch a.Kind {
	case KindString, KindTimestamp:
		if s.peek() != '"' {
			return &kindError{field(), "must be a string"}
		}
		r, err := s.rawString()
		if err != nil {
			return err
		}
		v, err := unquoteBytes(r)
		if err != nil {
			return err
		}
		if a.Kind == KindTimestamp {
			if _, err := time.Parse(time.RFC3339Nano, string(v)); err != nil {
				return &kindError{field(), "not an RFC 3339 timestamp"}
			}
		}
		if len(a.Enum) > 0 {
			for _, e := range a.Enum {
				if string(v) == e {
					return nil
				}
			}
			return &kindError{field(), "must be one of " + joinComma(a.Enum)}
		}
	case KindNumber, KindNonNegative:
		if !isNumber(s.peek()) {
			return &kindError{field(), "must be a number"}
		}
		v, err := s.skip()
		if err != nil {
			return err
		}
		f, err := strconv.ParseFloat(string(v), 64)
		if err != nil {
			return err
		}
		if a.Kind == KindNonNegative && f < 0 {
			return &kindError{field(), "must not be negative"}
		}
	case KindBool:
		if c := s.peek(); c != 't' && c != 'f' {
			return &kindError{field(), "must be true or false"}
		}
		_, err := s.skip()
		return err
	case KindStrings:
		if s.peek() != '[' {
			return &kindError{field(), "must be an array of strings"}
		}
		return s.elements(func(int) error {
			if s.peek() != '"' {
				return &kindError{field(), "must be an array of strings"}
			}
			_, err := s.rawString()
			return err
		})
	case KindNumberMap, KindStringMap:
		want, reason := byte('"'), "must be an object of strings"
		if a.Kind == KindNumberMap {
			reason = "must be an object of numbers"
		}
		if s.peek() != '{' {
			return &kindError{field(), reason}
		}
		return s.members(func([]byte) error {
			c := s.peek()
			if (a.Kind == KindNumberMap && !isNumber(c)) || (a.Kind == KindStringMap && c != want) {
				return &kindError{field(), reason}
			}
			_, err := s.skip()
			return err
		})
	case KindObject:
		if s.peek() != '{' {
			return &kindError{field(), "must be an object"}
		}
		_, err := s.skip()
		return err
	}
	return nil
}

// hasMember reports whether the canonical object obj has a top-level member name.
func hasMember(obj []byte, name string) bool {
	s := &cscan{b: obj}
	found := false
	s.members(func(n []byte) error {
		found = found || string(n) == name
		_, err := s.skip()
		return err
	})
	return found
}

func joinComma(ss []string) string {
	out := ""
	for i, s := range ss {
		if i > 0 {
			out += ", "
		}
		out += s
	}
	return out
}

// Member returns the canonical value of a top-level member of a canonical JSON object.
func Member(obj []byte, name string) ([]byte, bool) {
	s := &cscan{b: obj}
	var out []byte
	found := false
	s.members(func(n []byte) error {
		v, err := s.skip()
		if err == nil && !found && string(n) == name {
			out, found = v, true
		}
		return err
	})
	return out, found
}
