// Package registry is Cairn's lineage registry: a projection of each system's log that answers which model
// versions exist and what they were built from (datasets → training run → version → evaluations → approvals →
// deployments → inference count), and which version was live in each environment at any time T.
//
// The registry is a follower, never on the ingest path: Follow tails each log from the registry's watermark and
// ingest never waits for it. It holds nothing that is not in the log and lives in memory, so it is rebuilt from
// index 0 whenever the server starts. It keeps only envelopes' non-personal facts — never a payload — and of
// inferences only a count per model version.
package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/lifecycle"
	"github.com/cairn-ai/cairn/internal/store"
)

// Node is one lifecycle, document or oversight event as the registry holds it: its envelope's facts.
type Node struct {
	Index      uint64          `json:"index"`
	ID         string          `json:"id"`
	Type       string          `json:"type"`
	Time       time.Time       `json:"time"`
	Recorded   time.Time       `json:"recorded"`
	Actor      string          `json:"actor"`
	Model      *event.Model    `json:"model,omitempty"`
	Deployment string          `json:"deployment,omitempty"`
	Refs       []string        `json:"refs,omitempty"`
	Attrs      json.RawMessage `json:"attrs,omitempty"`
	// Violations are the lifecycle rules the event breaks, as the sequencer marked it.
	Violations []string `json:"rule_violations,omitempty"`
	// Counts is set on approvals: whether the approval counts (it approves and breaks no rule).
	Counts *bool `json:"counts,omitempty"`

	fact *lifecycle.Fact
}

// Attr returns a string attribute of the node, or "".
func (n *Node) Attr(name string) string {
	v, ok := event.Member(n.Attrs, name)
	if !ok || len(v) < 2 || v[0] != '"' {
		return ""
	}
	var s string
	json.Unmarshal(v, &s)
	return s
}

type version struct {
	registrations, aliases, evaluations, approvals, deployments []*Node
}

// sys is the registry of one system.
type sys struct {
	size       uint64 // watermark: entries [0, size) are applied
	nodes      map[event.UUID]*Node
	versions   map[lifecycle.Version]*version
	envs       map[string][]*Node // deployments per environment, in log order
	docs       map[string][]*Node // documents per kind, in log order
	runs       map[string][]*Node // training runs per run_id, in log order
	inferences map[lifecycle.Version]uint64
	oversight  map[event.UUID][]*Node // oversight events per event they refer to
}

// Registry is the lineage registry of every followed system. It is safe for concurrent use.
type Registry struct {
	mu      sync.RWMutex
	systems map[string]*sys
	log     *slog.Logger
}

// New returns an empty registry.
func New(logger *slog.Logger) *Registry {
	if logger == nil {
		logger = slog.Default()
	}
	return &Registry{systems: map[string]*sys{}, log: logger}
}

// ErrUnknown: the registry holds nothing of that system, model version or event.
var ErrUnknown = errors.New("not in the registry")

// Watermark returns how many entries of a system the registry has applied.
func (r *Registry) Watermark(system string) uint64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if s := r.systems[system]; s != nil {
		return s.size
	}
	return 0
}

// Follow tails a log from the registry's watermark until ctx ends, applying new entries whenever wake fires or
// every 200 ms. Read errors are logged and retried with backoff.
func (r *Registry) Follow(ctx context.Context, system string, lg store.Log, wake <-chan struct{}) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var backoff time.Duration
	for {
		if err := r.CatchUp(ctx, system, lg); err != nil && ctx.Err() == nil {
			backoff = min(max(2*backoff, 200*time.Millisecond), 5*time.Second)
			r.log.Error("registry follower", "system", system, "err", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		select {
		case <-ctx.Done():
			return
		case _, ok := <-wake:
			if !ok {
				wake = nil
			}
		case <-tick.C:
		}
	}
}

// CatchUp applies the entries of lg beyond the watermark, up to its size when CatchUp starts.
func (r *Registry) CatchUp(ctx context.Context, system string, lg store.Log) error {
	end := lg.Size()
	r.mu.Lock()
	s := r.systems[system]
	if s == nil {
		s = &sys{nodes: map[event.UUID]*Node{}, versions: map[lifecycle.Version]*version{}, envs: map[string][]*Node{},
			docs: map[string][]*Node{}, runs: map[string][]*Node{}, inferences: map[lifecycle.Version]uint64{},
			oversight: map[event.UUID][]*Node{}}
		r.systems[system] = s
	}
	start := s.size
	r.mu.Unlock()
	const chunk = 4096
	for at := start; at < end; {
		n := min(end-at, chunk)
		var parsed []parsedEntry
		err := lg.Entries(ctx, at, at+n, func(e *store.Entry) error {
			parsed = append(parsed, r.parse(system, e))
			return nil
		})
		if err != nil {
			return fmt.Errorf("registry: read log: %w", err)
		}
		if uint64(len(parsed)) != n {
			return fmt.Errorf("registry: log returned %d entries from %d, want %d", len(parsed), at, n)
		}
		r.mu.Lock()
		if s.size != at {
			r.mu.Unlock()
			return nil // another CatchUp of the same system went ahead
		}
		for i := range parsed {
			s.apply(&parsed[i])
		}
		s.size = at + n
		r.mu.Unlock()
		at += n
	}
	return nil
}

// parsedEntry is an entry as parsed outside the lock.
type parsedEntry struct {
	typ   string
	node  *Node             // tracked and oversight events
	model lifecycle.Version // inferences
}

func (r *Registry) parse(system string, e *store.Entry) parsedEntry {
	p := parsedEntry{typ: e.Type}
	if e.Envelope == nil {
		return p
	}
	if e.Type == "inference" {
		// Only the model is needed: read it without decoding the whole envelope.
		if m, ok := event.Member(e.Envelope, "model"); ok {
			n, _ := event.Member(m, "name")
			v, _ := event.Member(m, "version")
			p.model = lifecycle.Version{Name: jsonString(n), Version: jsonString(v)}
		}
		return p
	}
	if !lifecycle.Tracked(e.Type) && e.Type != "oversight" {
		return p
	}
	s, err := event.ParseEnvelope(e.Envelope)
	if err != nil {
		r.log.Warn("registry: unreadable envelope", "system", system, "index", e.Index, "err", err)
		return p
	}
	f, err := lifecycle.FactFromEnvelope(e.Index, s)
	if err != nil {
		r.log.Warn("registry: unreadable envelope", "system", system, "index", e.Index, "err", err)
		return p
	}
	n := &Node{Index: e.Index, ID: s.ID, Type: s.Type, Time: f.Time, Recorded: time.Unix(0, e.Recorded).UTC(),
		Actor: s.Actor, Model: s.Model, Deployment: s.Deployment, Refs: s.Refs, Attrs: json.RawMessage(s.Attrs),
		Violations: f.Violations, fact: f}
	if len(n.Attrs) == 0 {
		n.Attrs = nil
	}
	p.node = n
	return p
}

// jsonString decodes a canonical JSON string value, without reflection when it has no escapes.
func jsonString(b []byte) string {
	if len(b) >= 2 && b[0] == '"' && bytes.IndexByte(b, '\\') < 0 {
		return string(b[1 : len(b)-1])
	}
	var s string
	json.Unmarshal(b, &s)
	return s
}

func (s *sys) version(v lifecycle.Version) *version {
	x := s.versions[v]
	if x == nil {
		x = &version{}
		s.versions[v] = x
	}
	return x
}

func (s *sys) apply(p *parsedEntry) {
	if p.typ == "inference" {
		if p.model != (lifecycle.Version{}) {
			s.inferences[p.model]++
		}
		return
	}
	n := p.node
	if n == nil {
		return
	}
	f := n.fact
	s.nodes[f.ID] = n
	switch n.Type {
	case "oversight":
		for _, ref := range f.Refs {
			s.oversight[ref] = append(s.oversight[ref], n)
		}
	case "model.version":
		v := s.version(f.Model)
		if f.Alias != "" {
			v.aliases = append(v.aliases, n)
		} else {
			v.registrations = append(v.registrations, n)
		}
	case "evaluation":
		v := s.version(f.Model)
		v.evaluations = append(v.evaluations, n)
	case "approval":
		c := f.Counts()
		n.Counts = &c
		v := s.version(f.Model)
		v.approvals = append(v.approvals, n)
	case "deployment":
		v := s.version(f.Model)
		v.deployments = append(v.deployments, n)
		s.envs[f.Deployment] = append(s.envs[f.Deployment], n)
	case "document":
		k := n.Attr("kind")
		s.docs[k] = append(s.docs[k], n)
	case "training.run":
		id := n.Attr("run_id")
		s.runs[id] = append(s.runs[id], n)
	}
}

// VersionSummary is one model version in a listing.
type VersionSummary struct {
	Name        string `json:"name"`
	Version     string `json:"version"`
	Digest      string `json:"digest,omitempty"`
	Registered  *Node  `json:"registered,omitempty"`
	Evaluations int    `json:"evaluations"`
	Approved    bool   `json:"approved"`
	Deployments int    `json:"deployments"`
	Inferences  uint64 `json:"inferences"`
}

// Versions lists a system's model versions, by name and then by registration order.
func (r *Registry) Versions(system string) ([]VersionSummary, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	s := r.systems[system]
	if s == nil {
		return nil, ErrUnknown
	}
	out := []VersionSummary{}
	for k, v := range s.versions {
		vs := VersionSummary{Name: k.Name, Version: k.Version, Evaluations: len(v.evaluations), Deployments: len(v.deployments),
			Inferences: s.inferences[k]}
		if len(v.registrations) > 0 {
			vs.Registered = v.registrations[0]
			if m := v.registrations[0].Model; m != nil {
				vs.Digest = m.Digest
			}
		}
		vs.Approved = latestCounting(v.approvals, ^uint64(0)) != nil
		out = append(out, vs)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return order(out[i].Registered) < order(out[j].Registered)
	})
	return out, nil
}

func order(n *Node) uint64 {
	if n == nil {
		return ^uint64(0)
	}
	return n.Index
}

// latestCounting returns the latest approval before index that breaks no rule if it approves, or nil when the
// latest such decision is a rejection or there is none.
func latestCounting(approvals []*Node, before uint64) *Node {
	for i := len(approvals) - 1; i >= 0; i-- {
		a := approvals[i]
		if a.Index >= before || len(a.Violations) > 0 {
			continue
		}
		if a.fact.Action == "approve" {
			return a
		}
		return nil
	}
	return nil
}

// Lineage is the lineage graph of one model version: what it was built from and what became of it.
type Lineage struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	// Registered is the model.version event that registered it; Registrations every such event since.
	Registered    *Node   `json:"registered,omitempty"`
	Registrations []*Node `json:"registrations,omitempty"`
	Aliases       []*Node `json:"aliases,omitempty"`
	Run           *Node   `json:"training_run,omitempty"`
	Datasets      []*Node `json:"datasets"`
	Evaluations   []*Node `json:"evaluations"`
	Approvals     []*Node `json:"approvals"`
	Deployments   []*Node `json:"deployments"`
	Inferences    uint64  `json:"inferences"`
	// Indexed is the registry's watermark when it answered: entries [0, Indexed) of the log are reflected.
	Indexed uint64 `json:"indexed"`
}

// Lineage returns the lineage of a model version.
func (r *Registry) Lineage(system, name, ver string) (*Lineage, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	s := r.systems[system]
	if s == nil {
		return nil, ErrUnknown
	}
	return s.lineage(lifecycle.Version{Name: name, Version: ver})
}

func (s *sys) lineage(k lifecycle.Version) (*Lineage, error) {
	v := s.versions[k]
	if v == nil {
		return nil, ErrUnknown
	}
	l := &Lineage{Name: k.Name, Version: k.Version, Registrations: v.registrations, Aliases: v.aliases,
		Evaluations: nonNil(v.evaluations), Approvals: nonNil(v.approvals), Deployments: nonNil(v.deployments),
		Inferences: s.inferences[k], Indexed: s.size, Datasets: []*Node{}}
	if len(v.registrations) > 0 {
		l.Registered = v.registrations[0]
	}
	// The producing run: one the registration refers to, else the latest run with its run_id before it.
	seen := map[string]bool{}
	addDatasets := func(n *Node) {
		for _, ref := range n.Refs {
			if d := s.node(ref); d != nil && d.Type == "dataset.version" && !seen[d.ID] {
				seen[d.ID] = true
				l.Datasets = append(l.Datasets, d)
			}
		}
	}
	if reg := l.Registered; reg != nil {
		for _, ref := range reg.Refs {
			if n := s.node(ref); n != nil && n.Type == "training.run" {
				l.Run = n
			}
		}
		if l.Run == nil {
			if runs := s.runs[reg.Attr("run_id")]; reg.Attr("run_id") != "" {
				for _, n := range runs {
					if n.Index < reg.Index {
						l.Run = n
					}
				}
			}
		}
		if l.Run != nil {
			addDatasets(l.Run)
		}
		addDatasets(reg)
	}
	return l, nil
}

func nonNil(ns []*Node) []*Node {
	if ns == nil {
		return []*Node{}
	}
	return ns
}

func (s *sys) node(ref string) *Node {
	id, err := event.ParseUUID(ref)
	if err != nil {
		return nil
	}
	return s.nodes[id]
}

// Live is what was live in one environment at a time T, by the events' own times.
type Live struct {
	Environment string `json:"environment"`
	// State is "live" when a version was deployed (or rolled back to) there at T, "retired" when the last
	// deployment event before T retired it.
	State   string `json:"state"`
	Name    string `json:"name,omitempty"`
	Version string `json:"version,omitempty"`
	// Deployment is the deployment event that decides the answer: the latest in the environment whose time is
	// not after T.
	Deployment *Node `json:"deployment"`
	// Approval is the approval the deployment rests on (one it references that counts, else the version's
	// latest counting approval recorded before it); nil when there is none, and the deployment is then marked.
	Approval     *Node   `json:"approval,omitempty"`
	Run          *Node   `json:"training_run,omitempty"`
	Datasets     []*Node `json:"datasets"`
	ConfigDigest string  `json:"config_digest,omitempty"`
	DataVersion  string  `json:"data_version,omitempty"`
	// Documents are the documents current at T: per kind, the latest whose time is not after T.
	Documents []*Node `json:"documents"`
	// RecordedLater lists the events this answer rests on that happened by T but were recorded after T: asked
	// at T itself, the log would have answered differently.
	RecordedLater []*Node `json:"recorded_later,omitempty"`
}

// LiveAt answers, for every environment of a system, the model version live at t (by the events' own time).
// Environments with no deployment event at or before t are left out.
func (r *Registry) LiveAt(system string, t time.Time) ([]Live, uint64, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	s := r.systems[system]
	if s == nil {
		return nil, 0, ErrUnknown
	}
	envs := make([]string, 0, len(s.envs))
	for e := range s.envs {
		envs = append(envs, e)
	}
	slices.Sort(envs)
	out := []Live{}
	for _, env := range envs {
		if l := s.liveIn(env, t); l != nil {
			out = append(out, *l)
		}
	}
	return out, s.size, nil
}

// LiveIn answers what was live in one environment at t, or ErrUnknown when nothing had been deployed there.
func (r *Registry) LiveIn(system, env string, t time.Time) (*Live, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	s := r.systems[system]
	if s == nil {
		return nil, ErrUnknown
	}
	l := s.liveIn(env, t)
	if l == nil {
		return nil, ErrUnknown
	}
	return l, nil
}

func (s *sys) liveIn(env string, t time.Time) *Live {
	var decide *Node
	var late []*Node
	for _, d := range s.envs[env] {
		if d.Time.After(t) {
			continue
		}
		// Ties in time go to the later recorded event.
		if decide == nil || !d.Time.Before(decide.Time) {
			decide = d
		}
		if d.Recorded.After(t) {
			late = append(late, d)
		}
	}
	if decide == nil {
		return nil
	}
	l := &Live{Environment: env, Deployment: decide, Datasets: []*Node{}, Documents: []*Node{},
		ConfigDigest: decide.Attr("config_digest"), DataVersion: decide.Attr("data_version")}
	if decide.fact.Action == "retired" {
		l.State = "retired"
	} else {
		l.State = "live"
		l.Name, l.Version = decide.fact.Model.Name, decide.fact.Model.Version
		for _, ref := range decide.Refs {
			if a := s.node(ref); a != nil && a.Type == "approval" && a.fact.Model == decide.fact.Model && a.fact.Counts() {
				l.Approval = a
			}
		}
		if l.Approval == nil {
			if v := s.versions[decide.fact.Model]; v != nil {
				l.Approval = latestCounting(v.approvals, decide.Index)
			}
		}
		if l.Approval != nil && l.Approval.Recorded.After(t) && !l.Approval.Time.After(t) {
			late = append(late, l.Approval)
		}
		if lin, err := s.lineage(decide.fact.Model); err == nil {
			l.Run, l.Datasets = lin.Run, lin.Datasets
		}
	}
	kinds := make([]string, 0, len(s.docs))
	for k := range s.docs {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		var cur *Node
		for _, d := range s.docs[k] {
			if !d.Time.After(t) && (cur == nil || !d.Time.Before(cur.Time)) {
				cur = d
			}
		}
		if cur != nil {
			l.Documents = append(l.Documents, cur)
		}
	}
	l.RecordedLater = late
	return l
}

// Oversight returns the oversight events that refer to an event, in log order.
func (r *Registry) Oversight(system string, id event.UUID) []*Node {
	r.mu.RLock()
	defer r.mu.RUnlock()
	s := r.systems[system]
	if s == nil {
		return nil
	}
	return slices.Clone(s.oversight[id])
}

// Node returns a tracked or oversight event by id.
func (r *Registry) Node(system string, id event.UUID) (*Node, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	s := r.systems[system]
	if s == nil {
		return nil, false
	}
	n, ok := s.nodes[id]
	return n, ok
}

// Documents returns a system's document events of one kind (signatures of documents included), in log order.
func (r *Registry) Documents(system, kind string) []*Node {
	r.mu.RLock()
	defer r.mu.RUnlock()
	s := r.systems[system]
	if s == nil {
		return nil
	}
	return slices.Clone(s.docs[kind])
}
