package event

import (
	"strconv"
	"time"

	"github.com/cairn-ai/cairn/internal/canon"
)

// cscan walks canonical JSON (canon.Append's output) with canon.Scanner, adding what event validation needs.
type cscan struct{ canon.Scanner }

func newScan(b []byte) *cscan { return &cscan{canon.NewScanner(b)} }

// unquote decodes a string token to a string.
func unquote(r []byte) (string, error) {
	b, err := canon.Unescape(r)
	return string(b), err
}

// kindError is a value of the wrong JSON kind at a field.
type kindError struct{ field, reason string }

func (e *kindError) Error() string { return e.field + ": " + e.reason }

func isNumber(c byte) bool { return c == '-' || (c >= '0' && c <= '9') }

// str reads a string value at field.
func (s *cscan) str(field string) (string, error) {
	if s.Peek() != '"' {
		return "", &kindError{field, "got " + canon.KindName(s.Peek()) + ", want a string"}
	}
	r, err := s.RawString()
	if err != nil {
		return "", err
	}
	return unquote(r)
}

// scanInput decodes a canonical client event. Members arrive in canonical (sorted) order.
func scanInput(c []byte, in *input) error {
	s := newScan(c)
	return s.Members(func(_, name []byte) error {
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
			if s.Peek() != '{' {
				return &kindError{"/attrs", "must be an object"}
			}
			in.Attrs, err = s.Skip()
		case "payload":
			if s.Peek() != '{' {
				return &kindError{"/payload", "must be an object"}
			}
			in.Payload, err = s.Skip()
		case "refs":
			if s.Peek() != '[' {
				return &kindError{"/refs", "got " + canon.KindName(s.Peek()) + ", want an array of ids"}
			}
			err = s.Elements(func(i int) error {
				r, err := s.str("/refs/" + strconv.Itoa(i))
				in.Refs = append(in.Refs, r)
				return err
			})
		case "model":
			if s.Peek() != '{' {
				return &kindError{"/model", "got " + canon.KindName(s.Peek()) + ", want an object"}
			}
			m := &Model{}
			in.Model = m
			err = s.Members(func(_, n []byte) error {
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
	s := newScan(attrs)
	return s.Members(func(_, k []byte) error {
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
	case KindString, KindTimestamp, KindDigest:
		if s.Peek() != '"' {
			return &kindError{field(), "must be a string"}
		}
		r, err := s.RawString()
		if err != nil {
			return err
		}
		v, err := canon.Unescape(r)
		if err != nil {
			return err
		}
		if a.Kind == KindTimestamp {
			if _, err := time.Parse(time.RFC3339Nano, string(v)); err != nil {
				return &kindError{field(), "not an RFC 3339 timestamp"}
			}
		}
		if a.Kind == KindDigest {
			if _, err := ParseSHA256(string(v)); err != nil {
				return &kindError{field(), "must be sha256:<64 hex>"}
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
		if !isNumber(s.Peek()) {
			return &kindError{field(), "must be a number"}
		}
		v, err := s.Skip()
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
		if c := s.Peek(); c != 't' && c != 'f' {
			return &kindError{field(), "must be true or false"}
		}
		_, err := s.Skip()
		return err
	case KindStrings:
		if s.Peek() != '[' {
			return &kindError{field(), "must be an array of strings"}
		}
		return s.Elements(func(int) error {
			if s.Peek() != '"' {
				return &kindError{field(), "must be an array of strings"}
			}
			_, err := s.RawString()
			return err
		})
	case KindNumberMap, KindStringMap:
		want, reason := byte('"'), "must be an object of strings"
		if a.Kind == KindNumberMap {
			reason = "must be an object of numbers"
		}
		if s.Peek() != '{' {
			return &kindError{field(), reason}
		}
		return s.Members(func(_, _ []byte) error {
			c := s.Peek()
			if (a.Kind == KindNumberMap && !isNumber(c)) || (a.Kind == KindStringMap && c != want) {
				return &kindError{field(), reason}
			}
			_, err := s.Skip()
			return err
		})
	case KindObject:
		if s.Peek() != '{' {
			return &kindError{field(), "must be an object"}
		}
		_, err := s.Skip()
		return err
	}
	return nil
}

// hasMember reports whether the canonical object obj has a top-level member name.
func hasMember(obj []byte, name string) bool {
	s := newScan(obj)
	found := false
	s.Members(func(_, n []byte) error {
		found = found || string(n) == name
		_, err := s.Skip()
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
	s := newScan(obj)
	var out []byte
	found := false
	s.Members(func(_, n []byte) error {
		v, err := s.Skip()
		if err == nil && !found && string(n) == name {
			out, found = v, true
		}
		return err
	})
	return out, found
}
