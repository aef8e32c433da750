// Package system owns the definition of an AI system as Cairn knows it: identity, intended purpose, provider
// facts, and the policies later capabilities read (field policy, retention, lifecycle rules, oversight,
// monitoring, gates). Definitions are versioned as system.registered / system.updated events in the system's
// own log; this package only parses, validates and canonicalises them.
//
// A definition describes the system, never a person it decides about: it must hold no data-subject data.
package system

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"go.yaml.in/yaml/v3"

	"github.com/cairn-ai/cairn/internal/canon"
	"github.com/cairn-ai/cairn/internal/lifecycle"
	"github.com/cairn-ai/cairn/internal/pseudo"
)

// Definition is an AI system's definition. Unknown members are rejected.
type Definition struct {
	// ID is the system's slug, which names its log: lowercase letters, digits, '-' and '_', up to 64.
	ID string `json:"id"`
	// Name is a human-readable name.
	Name string `json:"name"`
	// Version of the system (Annex IV 1(a)).
	Version string `json:"version,omitzero"`
	// IntendedPurpose states what the system is for (Art. 3(12), Annex IV 1(a)).
	IntendedPurpose string `json:"intended_purpose"`
	// Provider is the provider's name (Art. 3(3)).
	Provider string `json:"provider"`
	// Deployer is the deploying organisation, when it differs from the provider.
	Deployer string `json:"deployer,omitzero"`
	// AnnexIII is the Annex III category, e.g. "5(b)" for creditworthiness.
	AnnexIII string `json:"annex_iii,omitzero"`
	// EUDatabaseID is the registration id in the EU database (Art. 49, 71).
	EUDatabaseID string `json:"eu_database_id,omitzero"`
	// ProviderInfo holds facts for generated documents: address, notified body, standards, signatory.
	ProviderInfo jsontext.Value `json:"provider_info,omitzero"`
	// Policies read by later capabilities; validated by the capability that owns each.
	FieldPolicy jsontext.Value `json:"field_policy,omitzero"`
	Retention   jsontext.Value `json:"retention,omitzero"`
	Lifecycle   jsontext.Value `json:"lifecycle,omitzero"`
	Oversight   jsontext.Value `json:"oversight,omitzero"`
	Monitoring  jsontext.Value `json:"monitoring,omitzero"`
	Gates       jsontext.Value `json:"gates,omitzero"`
	// InputSchema is a JSON Schema of the inference payload; "x-personal": true marks the fields the field policy
	// must cover (gates check it).
	InputSchema jsontext.Value `json:"input_schema,omitzero"`
	// Capture configures automatic inference capture (docs/capture.md): {"failure_policy": "fail-closed" | "spool"}.
	Capture jsontext.Value `json:"capture,omitzero"`
}

// FailurePolicy returns the capture failure policy the definition sets, or "" when it sets none.
func (d *Definition) FailurePolicy() string {
	var c struct {
		FailurePolicy string `json:"failure_policy"`
	}
	json.Unmarshal(d.Capture, &c)
	return c.FailurePolicy
}

var slugRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// ValidID reports whether id can name a system.
func ValidID(id string) bool { return slugRE.MatchString(id) }

// FieldError names the member of a definition at fault.
type FieldError struct{ Field, Reason string }

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Parse parses and validates a JSON definition and returns it with its canonical form.
func Parse(b []byte) (*Definition, []byte, error) {
	c, err := canon.Append(nil, b)
	if err != nil {
		var ce *canon.Error
		if errors.As(err, &ce) {
			return nil, nil, &FieldError{Field: ce.Path, Reason: ce.Reason}
		}
		return nil, nil, &FieldError{Reason: err.Error()}
	}
	var d Definition
	if err := json.Unmarshal(c, &d, json.RejectUnknownMembers(true)); err != nil {
		var se *json.SemanticError
		if errors.As(err, &se) {
			return nil, nil, &FieldError{Field: string(se.JSONPointer), Reason: "unknown member or wrong type"}
		}
		return nil, nil, &FieldError{Reason: "definition must be a JSON object"}
	}
	for _, f := range []struct{ name, v string }{
		{"/id", d.ID}, {"/name", d.Name}, {"/intended_purpose", d.IntendedPurpose}, {"/provider", d.Provider},
	} {
		if f.v == "" {
			return nil, nil, &FieldError{Field: f.name, Reason: "missing"}
		}
	}
	if !ValidID(d.ID) || d.ID[0] == '_' {
		return nil, nil, &FieldError{Field: "/id", Reason: "must be a lowercase slug: a-z, 0-9, '-', '_', at most 64, not starting with '_'"}
	}
	if len(d.FieldPolicy) > 0 {
		_, err := pseudo.Parse(d.FieldPolicy)
		if err != nil {
			var pe *pseudo.PolicyError
			var ce *canon.Error
			switch {
			case errors.As(err, &pe):
				return nil, nil, &FieldError{Field: "/field_policy" + pe.Path, Reason: pe.Reason}
			case errors.As(err, &ce):
				return nil, nil, &FieldError{Field: "/field_policy" + ce.Path, Reason: ce.Reason}
			}
			return nil, nil, &FieldError{Field: "/field_policy", Reason: err.Error()}
		}
	}
	for name, v := range map[string]jsontext.Value{
		"/provider_info": d.ProviderInfo, "/field_policy": d.FieldPolicy, "/retention": d.Retention,
		"/lifecycle": d.Lifecycle, "/oversight": d.Oversight, "/monitoring": d.Monitoring, "/gates": d.Gates,
		"/capture":      d.Capture,
		"/input_schema": d.InputSchema,
	} {
		if len(v) > 0 && v.Kind() != '{' {
			return nil, nil, &FieldError{Field: name, Reason: "must be an object"}
		}
	}
	if len(d.Capture) > 0 {
		var c struct {
			FailurePolicy string `json:"failure_policy"`
		}
		if err := json.Unmarshal(d.Capture, &c, json.RejectUnknownMembers(true)); err != nil {
			return nil, nil, &FieldError{Field: "/capture", Reason: "unknown member or wrong type (failure_policy)"}
		}
		if c.FailurePolicy != "" && c.FailurePolicy != "fail-closed" && c.FailurePolicy != "spool" {
			return nil, nil, &FieldError{Field: "/capture/failure_policy", Reason: "must be fail-closed or spool"}
		}
	}
	if _, err := ParseProviderInfo(d.ProviderInfo); err != nil {
		return nil, nil, err
	}
	if _, err := PersonalFields(d.InputSchema); err != nil {
		return nil, nil, err
	}
	if len(d.Lifecycle) > 0 {
		if _, err := lifecycle.ParseRules(d.Lifecycle); err != nil {
			var fe *lifecycle.FieldError
			if errors.As(err, &fe) {
				return nil, nil, &FieldError{Field: "/lifecycle" + fe.Field, Reason: fe.Reason}
			}
			return nil, nil, &FieldError{Field: "/lifecycle", Reason: err.Error()}
		}
	}
	return &d, c, nil
}

// YAMLToJSON converts a YAML document to JSON, rejecting duplicate keys, non-string keys, anchors and tags
// that JSON cannot express, so a YAML definition is held to the same strictness as JSON.
func YAMLToJSON(b []byte) ([]byte, error) {
	var n yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&n); err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		return nil, errors.New("yaml: want exactly one document")
	}
	var out []byte
	var walk func(n *yaml.Node) error
	walk = func(n *yaml.Node) error {
		switch n.Kind {
		case yaml.DocumentNode:
			if len(n.Content) != 1 {
				return errors.New("yaml: want one document")
			}
			return walk(n.Content[0])
		case yaml.MappingNode:
			out = append(out, '{')
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i]
				if k.Kind != yaml.ScalarNode || (k.Tag != "!!str" && k.Tag != "") {
					return fmt.Errorf("yaml line %d: keys must be strings", k.Line)
				}
				if i > 0 {
					out = append(out, ',')
				}
				out = canon.AppendString(out, k.Value)
				out = append(out, ':')
				if err := walk(n.Content[i+1]); err != nil {
					return err
				}
			}
			out = append(out, '}')
		case yaml.SequenceNode:
			out = append(out, '[')
			for i, c := range n.Content {
				if i > 0 {
					out = append(out, ',')
				}
				if err := walk(c); err != nil {
					return err
				}
			}
			out = append(out, ']')
		case yaml.ScalarNode:
			switch n.Tag {
			case "!!str", "!!binary", "!!timestamp":
				out = canon.AppendString(out, n.Value)
			case "!!int", "!!float":
				f, err := strconv.ParseFloat(n.Value, 64)
				if err != nil {
					return fmt.Errorf("yaml line %d: number out of range", n.Line)
				}
				if out, err = canon.AppendNumber(out, f); err != nil {
					return fmt.Errorf("yaml line %d: %v", n.Line, err)
				}
			case "!!bool":
				var v bool
				if err := n.Decode(&v); err != nil {
					return err
				}
				out = strconv.AppendBool(out, v)
			case "!!null":
				out = append(out, "null"...)
			default:
				return fmt.Errorf("yaml line %d: unsupported tag %s", n.Line, n.Tag)
			}
		case yaml.AliasNode:
			return fmt.Errorf("yaml line %d: aliases are not supported", n.Line)
		}
		return nil
	}
	if err := walk(&n); err != nil {
		return nil, err
	}
	return out, nil
}
