// Package lifecycle owns the lifecycle rules of an AI system — a deployment needs an approval that rests on an
// evaluation of the same model version, the approver is not the registrant (four eyes), references resolve to
// events of the log — and the state those rules are decided against.
//
// The ledger's sequencer decides each lifecycle event against a State as it orders it, so two racing requests
// can never both pass a rule that only one may. The log records facts: a violating event is still recorded, marked
// with the rules it breaks, and an approval that breaks a rule does not count. This package never blocks an event;
// gates use Check to ask beforehand whether one would comply.
//
// It reads only envelopes' non-personal facts (types, models, actors, refs, attributes), never payloads.
package lifecycle

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/go-json-experiment/json"

	"github.com/cairn-ai/cairn/internal/canon"
	"github.com/cairn-ai/cairn/internal/event"
)

// Rule names, as they appear in an event's attrs.rule_violations.
const (
	// RuleDanglingRef: a lifecycle event refers to an id that is no earlier lifecycle, document or system event of
	// the same log.
	RuleDanglingRef = "dangling_ref"
	// RuleUnregistered: an approval concerns a model version no model.version event registered.
	RuleUnregistered = "unregistered_version"
	// RuleFourEyes: the approving principal is the principal that registered the version.
	RuleFourEyes = "four_eyes"
	// RuleNoEvaluation: an approval references no (passed) evaluation of the version it approves.
	RuleNoEvaluation = "approval_without_evaluation"
	// RuleUnapproved: a version was deployed (or rolled back to) without an approval that counts.
	RuleUnapproved = "deployment_unapproved"
)

// Rules is a system definition's `lifecycle` member. Every rule is on unless the definition turns it off.
type Rules struct {
	// ApprovalRequired: deploying a version (deployed, rolled_back) needs an approval of that version that
	// counts, and an approval counts only if it references an evaluation of that version and breaks no rule.
	ApprovalRequired *bool `json:"approval_required,omitzero"`
	// FourEyes: the principal that approves a version must differ from the one that registered it (both as
	// recorded by the server in `actor`).
	FourEyes *bool `json:"four_eyes,omitzero"`
	// ResolveRefs: every reference of a lifecycle event must name an earlier event of the same log.
	ResolveRefs *bool `json:"resolve_refs,omitzero"`
	// PassedEvaluation: the evaluation an approval rests on must have passed.
	PassedEvaluation *bool `json:"passed_evaluation,omitzero"`
	// Environments limits ApprovalRequired to deployments to these environments; empty: every environment.
	Environments []string `json:"environments,omitzero"`
}

func on(b *bool) bool { return b == nil || *b }

// ParseRules parses and validates a lifecycle member (nil or empty: the defaults).
func ParseRules(b []byte) (*Rules, error) {
	var r Rules
	if len(b) == 0 {
		return &r, nil
	}
	if err := json.Unmarshal(b, &r, json.RejectUnknownMembers(true)); err != nil {
		var se *json.SemanticError
		if errors.As(err, &se) && se.JSONPointer != "" {
			return nil, &FieldError{Field: string(se.JSONPointer), Reason: "unknown member or wrong type (want approval_required, four_eyes, resolve_refs, passed_evaluation, environments)"}
		}
		return nil, &FieldError{Reason: "must be an object"}
	}
	return &r, nil
}

// FieldError names the member of a lifecycle member at fault.
type FieldError struct{ Field, Reason string }

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Version names a model version.
type Version struct{ Name, Version string }

func (v Version) String() string { return v.Name + "@" + v.Version }

// Fact is what the rules know of one recorded event: its non-personal facts.
type Fact struct {
	Index      uint64
	ID         event.UUID
	Type       string
	Time       time.Time
	Actor      string
	Model      Version // zero when the event names no model
	Deployment string
	// Action is the approval's decision, the deployment's action or the alias action.
	Action     string
	Alias      string
	Passed     bool // an evaluation passed
	Refs       []event.UUID
	Violations []string
}

// Counts reports whether an approval counts: it approves and breaks no rule.
func (f *Fact) Counts() bool {
	return f.Type == "approval" && f.Action == "approve" && len(f.Violations) == 0
}

// Tracked reports whether events of a type are kept in the State: the types a lifecycle reference may name.
func Tracked(typ string) bool {
	sp := event.Specs[typ]
	return sp != nil && sp.Class == event.ClassDoc && typ != "admin"
}

// FactOf builds the fact of a validated client event appended by actor at index.
func FactOf(ev *event.Event, actor string, index uint64) *Fact {
	f := &Fact{Index: index, ID: ev.ID, Type: ev.Type, Time: ev.Time, Actor: actor, Deployment: ev.Deployment, Refs: ev.Refs}
	if ev.Model != nil {
		f.Model = Version{ev.Model.Name, ev.Model.Version}
	}
	f.fromAttrs(ev.Attrs)
	return f
}

// FactFromEnvelope builds the fact of a stored envelope.
func FactFromEnvelope(index uint64, s *event.Stored) (*Fact, error) {
	id, err := event.ParseUUID(s.ID)
	if err != nil {
		return nil, fmt.Errorf("envelope id: %w", err)
	}
	t, err := time.Parse(time.RFC3339Nano, s.Time)
	if err != nil {
		return nil, fmt.Errorf("envelope time: %w", err)
	}
	f := &Fact{Index: index, ID: id, Type: s.Type, Time: t, Actor: s.Actor, Deployment: s.Deployment}
	if s.Model != nil {
		f.Model = Version{s.Model.Name, s.Model.Version}
	}
	for _, r := range s.Refs {
		u, err := event.ParseUUID(r)
		if err != nil {
			return nil, fmt.Errorf("envelope ref: %w", err)
		}
		f.Refs = append(f.Refs, u)
	}
	f.fromAttrs(s.Attrs)
	var vs []string
	if v, ok := event.Member(s.Attrs, event.RuleViolations); ok {
		if err := json.Unmarshal(v, &vs); err != nil {
			return nil, fmt.Errorf("envelope %s: %w", event.RuleViolations, err)
		}
	}
	f.Violations = vs
	return f, nil
}

func (f *Fact) fromAttrs(attrs []byte) {
	if len(attrs) == 0 {
		return
	}
	str := func(name string) string {
		v, ok := event.Member(attrs, name)
		if !ok || len(v) < 2 || v[0] != '"' {
			return ""
		}
		var s string
		json.Unmarshal(v, &s)
		return s
	}
	switch f.Type {
	case "approval":
		f.Action = str("decision")
	case "deployment":
		f.Action = str("action")
	case "model.version":
		f.Alias, f.Action = str("alias"), str("alias_action")
	case "evaluation":
		v, _ := event.Member(attrs, "passed")
		f.Passed = string(v) == "true"
	}
}

// versionState is what the rules know of one model version.
type versionState struct {
	registered  *Fact // the first model.version event that registered it (not an alias move)
	evaluations []*Fact
	approvals   []*Fact // in log order
}

// State holds the facts of a log's tracked events and decides lifecycle events against them. It is safe for
// concurrent use: the sequencer decides, gates check.
type State struct {
	mu       sync.Mutex
	rules    Rules
	facts    map[event.UUID]*Fact
	versions map[Version]*versionState
}

// NewState returns an empty state with the default rules.
func NewState() *State {
	return &State{facts: map[event.UUID]*Fact{}, versions: map[Version]*versionState{}}
}

// SetRules replaces the rules (a system definition changed).
func (s *State) SetRules(r *Rules) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rules = *r
}

// Rules returns the rules in force.
func (s *State) Rules() Rules {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rules
}

// Decide checks f against the rules and what the log holds, records it (with its violations, which it also
// returns) and returns the rules it breaks. Only tracked types are recorded; others get nil.
func (s *State) Decide(f *Fact) []string {
	if !Tracked(f.Type) {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f.Violations = s.check(f)
	s.apply(f)
	return f.Violations
}

// Check answers whether f would comply if it were sequenced now, without recording it: the rules it would
// break, or nil.
func (s *State) Check(f *Fact) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.check(f)
}

// Load records a fact read back from the log, with the violations it was marked with when it was sequenced.
func (s *State) Load(f *Fact) {
	if !Tracked(f.Type) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apply(f)
}

// Len is the number of facts held.
func (s *State) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.facts)
}

func (s *State) check(f *Fact) []string {
	if !event.Lifecycle(f.Type) {
		return nil
	}
	var out []string
	add := func(rule string) {
		if !slices.Contains(out, rule) {
			out = append(out, rule)
		}
	}
	if on(s.rules.ResolveRefs) {
		for _, r := range f.Refs {
			if _, ok := s.facts[r]; !ok {
				add(RuleDanglingRef)
			}
		}
	}
	vs := s.versions[f.Model]
	switch f.Type {
	case "approval":
		if vs == nil || vs.registered == nil {
			add(RuleUnregistered)
		} else if on(s.rules.FourEyes) && vs.registered.Actor == f.Actor {
			add(RuleFourEyes)
		}
		if f.Action == "approve" && !s.restsOnEvaluation(f) {
			add(RuleNoEvaluation)
		}
	case "deployment":
		if f.Action == "retired" || !on(s.rules.ApprovalRequired) {
			break
		}
		if len(s.rules.Environments) > 0 && !slices.Contains(s.rules.Environments, f.Deployment) {
			break
		}
		if !s.approved(f, vs) {
			add(RuleUnapproved)
		}
	}
	slices.Sort(out)
	return out
}

// restsOnEvaluation reports whether an approval references an evaluation of the version it approves (a passed
// one, unless the rules say otherwise).
func (s *State) restsOnEvaluation(f *Fact) bool {
	for _, r := range f.Refs {
		e := s.facts[r]
		if e != nil && e.Type == "evaluation" && e.Model == f.Model && (e.Passed || !on(s.rules.PassedEvaluation)) {
			return true
		}
	}
	return false
}

// approved reports whether a deployment of f.Model has an approval that counts: among the approvals the
// deployment references, if it references any, else among every approval of the version; the latest approval
// that breaks no rule decides (a later rejection withdraws an earlier approval).
func (s *State) approved(f *Fact, vs *versionState) bool {
	var named []*Fact
	for _, r := range f.Refs {
		if a := s.facts[r]; a != nil && a.Type == "approval" {
			named = append(named, a)
		}
	}
	if len(named) > 0 {
		for _, a := range named {
			if a.Model == f.Model && a.Counts() && !s.withdrawn(a, vs) {
				return true
			}
		}
		return false
	}
	if vs == nil {
		return false
	}
	for i := len(vs.approvals) - 1; i >= 0; i-- {
		if a := vs.approvals[i]; len(a.Violations) == 0 {
			return a.Action == "approve"
		}
	}
	return false
}

// withdrawn reports whether a rejection of the version that breaks no rule came after approval a.
func (s *State) withdrawn(a *Fact, vs *versionState) bool {
	if vs == nil {
		return false
	}
	for _, b := range vs.approvals {
		if b.Index > a.Index && b.Action == "reject" && len(b.Violations) == 0 {
			return true
		}
	}
	return false
}

func (s *State) apply(f *Fact) {
	s.facts[f.ID] = f
	if f.Model == (Version{}) {
		return
	}
	vs := s.versions[f.Model]
	if vs == nil {
		vs = &versionState{}
		s.versions[f.Model] = vs
	}
	switch f.Type {
	case "model.version":
		if f.Alias == "" && vs.registered == nil {
			vs.registered = f
		}
	case "evaluation":
		vs.evaluations = append(vs.evaluations, f)
	case "approval":
		vs.approvals = append(vs.approvals, f)
	}
}

// Forget removes the facts of events at index from and beyond: a batch built on speculation did not become
// durable, or a request was undone.
func (s *State) Forget(from uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, f := range s.facts {
		if f.Index >= from {
			delete(s.facts, id)
		}
	}
	drop := func(fs []*Fact) []*Fact { return slices.DeleteFunc(fs, func(f *Fact) bool { return f.Index >= from }) }
	for _, vs := range s.versions {
		// The registration is the version's first model.version event, so none earlier than it remains.
		if vs.registered != nil && vs.registered.Index >= from {
			vs.registered = nil
		}
		vs.evaluations, vs.approvals = drop(vs.evaluations), drop(vs.approvals)
	}
}

// Fact returns the fact of an event id, if the state holds it.
func (s *State) Fact(id event.UUID) (*Fact, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.facts[id]
	return f, ok
}

// MarkAttrs returns canonical attrs with rule_violations set to rules.
func MarkAttrs(attrs []byte, rules []string) ([]byte, error) {
	v, err := json.Marshal(rules)
	if err != nil {
		return nil, err
	}
	obj := `{"` + event.RuleViolations + `":` + string(v) + `}`
	if len(attrs) > 2 {
		obj = string(attrs[:len(attrs)-1]) + `,"` + event.RuleViolations + `":` + string(v) + `}`
	}
	return canon.Append(nil, []byte(obj))
}
