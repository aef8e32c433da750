package gate

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/go-json-experiment/json"

	"github.com/cairn-ai/cairn/internal/canon"
	"github.com/cairn-ai/cairn/internal/docgen"
	"github.com/cairn-ai/cairn/internal/system"
)

// Policy is a gate policy file (YAML or JSON). Each member switches a family of rules on; a policy must switch
// at least one on. Unknown members are rejected, so a misspelt rule cannot silently pass.
type Policy struct {
	Documents   *Documents   `json:"documents,omitzero"`
	Evaluation  *Evaluation  `json:"evaluation,omitzero"`
	Fairness    *Fairness    `json:"fairness,omitzero"`
	Approval    *Approval    `json:"approval,omitzero"`
	Logging     *Logging     `json:"logging,omitzero"`
	FieldPolicy *FieldPolicy `json:"field_policy,omitzero"`
}

// Documents requires documents to be recorded for the model version and current: generated against a log state
// that already held the version's latest registration, evaluation and approval and the definition in force.
type Documents struct {
	// Required lists document kinds (docgen.Kinds; not reconstruction).
	Required []string `json:"required"`
	// Signed lists kinds that must also carry a recorded signature.
	Signed []string `json:"signed,omitzero"`
	// MaxAge, when set, is how old (by recorded time) a document may be: a Go duration ("720h").
	MaxAge string `json:"max_age,omitzero"`
}

// Bound is a metric's limits.
type Bound struct {
	Min *float64 `json:"min,omitzero"`
	Max *float64 `json:"max,omitzero"`
}

// Evaluation checks the latest evaluation of the version.
type Evaluation struct {
	// RequirePassed requires the evaluation's own verdict to be a pass.
	RequirePassed bool `json:"require_passed,omitzero"`
	// Metrics bounds overall metrics by name; a metric the evaluation lacks fails.
	Metrics map[string]Bound `json:"metrics,omitzero"`
}

// Fairness checks the per-group figures of the latest evaluation of the version that has them.
type Fairness struct {
	// MinGroupSize is the smallest group compared (default 30); smaller groups are shown and flagged.
	MinGroupSize int `json:"min_group_size,omitzero"`
	// DemographicParity and EqualOpportunity are the largest differences allowed per protected attribute.
	DemographicParity *float64 `json:"demographic_parity_difference,omitzero"`
	EqualOpportunity  *float64 `json:"equal_opportunity_difference,omitzero"`
	// FourFifths requires every compared group's selection rate to be at least 0.8 of the highest.
	FourFifths bool `json:"four_fifths,omitzero"`
	// Attributes limits the check to these protected attributes; empty: every attribute recorded.
	Attributes []string `json:"attributes,omitzero"`
	// AllowUndefined lets a measure that cannot be computed (too few comparable groups) pass; by default it fails.
	AllowUndefined bool `json:"allow_undefined,omitzero"`
}

// Approval requires that deploying the version now would comply with the lifecycle rules: an approval that
// counts is on record.
type Approval struct {
	// Environment is the deployment environment asked about (default "prod").
	Environment string `json:"environment,omitzero"`
}

// Logging requires the system's logging to be active.
type Logging struct {
	// MaxEventAge is how long ago (by recorded time) the latest event other than gate results, reads and generated
	// documents may be
	// (a Go duration, default "24h").
	MaxEventAge string `json:"max_event_age,omitzero"`
}

// FieldPolicy requires the field policy to cover every field the input schema marks personal.
type FieldPolicy struct {
	// Personal lists more payload paths to treat as personal, beyond the input schema's.
	Personal []string `json:"personal,omitzero"`
}

// ParsePolicy parses a policy (YAML or JSON) and returns it with its digest.
func ParsePolicy(b []byte) (*Policy, string, error) {
	js, err := system.YAMLToJSON(b)
	if err != nil {
		return nil, "", fmt.Errorf("policy: %w", err)
	}
	c, err := canon.Append(nil, js)
	if err != nil {
		return nil, "", fmt.Errorf("policy: %w", err)
	}
	var p Policy
	if err := json.Unmarshal(c, &p, json.RejectUnknownMembers(true)); err != nil {
		var se *json.SemanticError
		if errors.As(err, &se) && se.JSONPointer != "" {
			return nil, "", fmt.Errorf("policy %s: unknown member or wrong type", se.JSONPointer)
		}
		return nil, "", errors.New("policy: must be an object")
	}
	if p == (Policy{}) {
		return nil, "", errors.New("policy: names no rule (documents, evaluation, fairness, approval, logging, field_policy)")
	}
	if d := p.Documents; d != nil {
		if len(d.Required) == 0 {
			return nil, "", errors.New("policy /documents/required: name at least one kind")
		}
		for _, k := range append(slices.Clone(d.Required), d.Signed...) {
			if !slices.Contains(docgen.Kinds, k) || k == docgen.KindReconstruction {
				return nil, "", fmt.Errorf("policy /documents: unknown document kind %q", k)
			}
		}
		if err := duration(d.MaxAge, "/documents/max_age"); err != nil {
			return nil, "", err
		}
	}
	if l := p.Logging; l != nil {
		if err := duration(l.MaxEventAge, "/logging/max_event_age"); err != nil {
			return nil, "", err
		}
	}
	if f := p.Fairness; f != nil && f.MinGroupSize < 0 {
		return nil, "", errors.New("policy /fairness/min_group_size: must not be negative")
	}
	return &p, docgen.Digest(c), nil
}

func duration(s, field string) error {
	if s == "" {
		return nil
	}
	if d, err := time.ParseDuration(s); err != nil || d <= 0 {
		return fmt.Errorf("policy %s: not a positive Go duration (like 24h)", field)
	}
	return nil
}
