package docgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/lifecycle"
	"github.com/cairn-ai/cairn/internal/registry"
	"github.com/cairn-ai/cairn/internal/store"
	"github.com/cairn-ai/cairn/internal/system"
)

// Log is what a document is generated from: one system's log (a *ledger.Log).
type Log interface {
	Name() string
	Store() store.Log
	// OpenPayload opens a sealed payload; docgen opens only system definitions, which hold no personal data.
	OpenPayload(e *store.Entry) ([]byte, error)
	// SignedCheckpointAt signs a checkpoint for the tree of size n.
	SignedCheckpointAt(n uint64) ([]byte, error)
	// Tree returns the size and root of the durable tree.
	Tree() (uint64, tlog.Hash)
}

// node is one recorded event as documents see it: its envelope's non-personal facts.
type node struct {
	Index      uint64
	ID         string
	Type       string
	Time       time.Time
	Recorded   time.Time
	Actor      string
	Model      *event.Model
	Deployment string
	Refs       []string
	Attrs      json.RawMessage
	Violations []string
	Payload    *event.StoredPayload
	Digest     [32]byte // the leaf's digest of the salted envelope
}

func (n *node) cite() Cite {
	return Cite{Event: n.ID, Leaf: n.Index, Digest: event.SHA256Hex(n.Digest)}
}

func (n *node) str(name string) string {
	v, ok := event.Member(n.Attrs, name)
	if !ok || len(v) < 2 || v[0] != '"' {
		return ""
	}
	var s string
	json.Unmarshal(v, &s)
	return s
}

func (n *node) num(name string) (float64, bool) {
	v, ok := event.Member(n.Attrs, name)
	if !ok {
		return 0, false
	}
	var f float64
	if json.Unmarshal(v, &f) != nil {
		return 0, false
	}
	return f, true
}

func (n *node) strs(name string) []string {
	v, ok := event.Member(n.Attrs, name)
	if !ok {
		return nil
	}
	var s []string
	json.Unmarshal(v, &s)
	return s
}

func (n *node) nums(name string) map[string]float64 {
	v, ok := event.Member(n.Attrs, name)
	if !ok {
		return nil
	}
	var m map[string]float64
	json.Unmarshal(v, &m)
	return m
}

func (n *node) groups() map[string]map[string]float64 {
	v, ok := event.Member(n.Attrs, "group_metrics")
	if !ok {
		return nil
	}
	var m map[string]map[string]float64
	if json.Unmarshal(v, &m) != nil {
		return nil
	}
	return m
}

func (n *node) model() lifecycle.Version {
	if n.Model == nil {
		return lifecycle.Version{}
	}
	return lifecycle.Version{Name: n.Model.Name, Version: n.Model.Version}
}

// definition is one recorded system definition.
type definition struct {
	*node
	def  *system.Definition
	info *system.ProviderInfo
}

// stats aggregates the inferences of a period.
type stats struct {
	count                  uint64
	first, last            *node
	byVersion, byDeploy    spans
	latencyN               uint64
	latencySum, latencyMax float64
	confN                  uint64
	confSum                float64
	flags, errors          spans
}

// snapshot is the log as it stood at a moment: entries [0, size) are those recorded at or before at.
type snapshot struct {
	system    string
	at        time.Time
	size      uint64
	from, to  time.Time // the monitoring period (by event time)
	reg       *registry.Registry
	defs      []*definition // in log order
	nodes     []*node       // every event but inferences and access records, in log order
	byID      map[string]*node
	period    stats
	destroyed uint64 // envelopes gone by retention: their events can be cited by nothing
	inPeriod  spans  // events per type whose time falls in the period
	note      []byte // signed checkpoint for size
	// inferences counts every inference of the snapshot per model version, with the first and last.
	inferences map[lifecycle.Version]*span
	withStats  bool   // aggregate inferences over the period (the monitoring summary)
	want       string // the id or index of the event a reconstruction is about
	target     *node  // that event, once seen
}

// span is a count of events with the first and last of them.
type span struct {
	count       uint64
	first, last *node
}

// spans counts events by a key, with the first and last of each.
type spans map[string]*span

func (m spans) add(key string, n *node) {
	sp := m[key]
	if sp == nil {
		sp = &span{first: n}
		m[key] = sp
	}
	sp.count++
	sp.last = n
}

// ErrEmpty: nothing of the system was recorded by the requested time.
var ErrEmpty = errors.New("the log holds no definition of the system recorded by that time")

// prefixLog shows only the first n entries of a log and lets the snapshot see each entry the registry reads.
type prefixLog struct {
	store.Log
	n   uint64
	tap func(*store.Entry) error
}

func (p prefixLog) Size() uint64 { return p.n }

func (p prefixLog) Entries(ctx context.Context, start, end uint64, fn func(*store.Entry) error) error {
	return p.Log.Entries(ctx, start, min(end, p.n), func(e *store.Entry) error {
		if err := p.tap(e); err != nil {
			return err
		}
		return fn(e)
	})
}

// recordedBy returns how many entries of the log were recorded at or before t (recorded times never decrease
// along a log, so they are a prefix).
func recordedBy(ctx context.Context, sl store.Log, t time.Time) (uint64, error) {
	n := sl.Size()
	var err error
	i := sort.Search(int(n), func(i int) bool {
		if err != nil {
			return true
		}
		e, e2 := sl.Entry(ctx, uint64(i))
		if e2 != nil {
			err = e2
			return true
		}
		return e.Recorded > t.UnixNano()
	})
	return uint64(i), err
}

func load(ctx context.Context, lg Log, at, from, to time.Time, want string, withStats bool) (*snapshot, error) {
	sl := lg.Store()
	n, err := recordedBy(ctx, sl, at)
	if err != nil {
		return nil, fmt.Errorf("find the log state at %s: %w", at.Format(time.RFC3339Nano), err)
	}
	// Entries the store holds but the tree does not cover yet (a batch being committed) are not part of any state
	// a checkpoint can be signed for.
	if size, _ := lg.Tree(); n > size {
		n = size
	}
	s := &snapshot{system: lg.Name(), at: at, size: n, from: from, to: to, reg: registry.New(nil), want: want, withStats: withStats,
		byID: map[string]*node{}, inferences: map[lifecycle.Version]*span{}, inPeriod: spans{},
		period: stats{byVersion: spans{}, byDeploy: spans{}, flags: spans{}, errors: spans{}}}
	tap := func(e *store.Entry) error { return s.add(lg, e) }
	if err := s.reg.CatchUp(ctx, s.system, prefixLog{Log: sl, n: n, tap: tap}); err != nil {
		return nil, err
	}
	if len(s.defs) == 0 {
		return nil, ErrEmpty
	}
	if s.note, err = lg.SignedCheckpointAt(n); err != nil {
		return nil, fmt.Errorf("checkpoint at %d: %w", n, err)
	}
	return s, nil
}

func (s *snapshot) inside(t time.Time) bool { return !t.Before(s.from) && t.Before(s.to) }

func (s *snapshot) add(lg Log, e *store.Entry) error {
	if e.Envelope == nil {
		s.destroyed++ // destroyed by retention; the retention event says so
		return nil
	}
	if e.Type == "inference" && !s.withStats && (s.want == "" || (s.want != e.ID.String() && s.want != strconv.FormatUint(e.Index, 10))) {
		// Only the per-version count is needed: read the model without decoding the whole envelope.
		var m event.Model
		if v, ok := event.Member(e.Envelope, "model"); ok && json.Unmarshal(v, &m) == nil {
			n := &node{Index: e.Index, ID: e.ID.String(), Type: e.Type, Model: &m, Digest: e.Digest}
			s.count(n)
		}
		return nil
	}
	env, err := event.ParseEnvelope(e.Envelope)
	if err != nil {
		return fmt.Errorf("envelope %d: %w", e.Index, err)
	}
	t, err := time.Parse(time.RFC3339Nano, env.Time)
	if err != nil {
		return fmt.Errorf("envelope %d time: %w", e.Index, err)
	}
	n := &node{Index: e.Index, ID: env.ID, Type: env.Type, Time: t, Recorded: time.Unix(0, e.Recorded).UTC(),
		Actor: env.Actor, Model: env.Model, Deployment: env.Deployment, Refs: env.Refs, Attrs: json.RawMessage(env.Attrs),
		Payload: env.Payload, Digest: e.Digest}
	n.Violations = n.strs(event.RuleViolations)
	if s.want != "" && (n.ID == s.want || strconv.FormatUint(n.Index, 10) == s.want) {
		s.target = n
	}
	if s.inside(t) {
		s.inPeriod.add(e.Type, n)
	}
	switch e.Type {
	case "inference":
		s.count(n)
		if s.inside(t) {
			s.period.add(n)
		}
		return nil
	case "access":
		return nil
	case "system.registered", "system.updated":
		pt, err := lg.OpenPayload(e)
		if err != nil {
			return fmt.Errorf("system definition at %d: %w", e.Index, err)
		}
		d, _, err := system.Parse(pt)
		if err != nil {
			return fmt.Errorf("system definition at %d: %w", e.Index, err)
		}
		info, _ := system.ParseProviderInfo(d.ProviderInfo)
		s.defs = append(s.defs, &definition{node: n, def: d, info: info})
	}
	s.nodes = append(s.nodes, n)
	s.byID[n.ID] = n
	return nil
}

// count counts an inference of its model version.
func (s *snapshot) count(n *node) {
	sp := s.inferences[n.model()]
	if sp == nil {
		sp = &span{first: n}
		s.inferences[n.model()] = sp
	}
	sp.count++
	sp.last = n
}

func (st *stats) add(n *node) {
	st.count++
	if st.first == nil {
		st.first = n
	}
	st.last = n
	if n.Model != nil {
		st.byVersion.add(n.Model.Name+"@"+n.Model.Version, n)
	}
	if n.Deployment != "" {
		st.byDeploy.add(n.Deployment, n)
	}
	if v, ok := n.num("latency_ms"); ok {
		st.latencyN++
		st.latencySum += v
		st.latencyMax = max(st.latencyMax, v)
	}
	if v, ok := n.num("confidence"); ok {
		st.confN++
		st.confSum += v
	}
	for _, f := range n.strs("anomaly_flags") {
		st.flags.add(f, n)
	}
	if c := n.str("error_code"); c != "" {
		st.errors.add(c, n)
	}
}

// def returns the definition in force.
func (s *snapshot) def() *definition { return s.defs[len(s.defs)-1] }

// of returns the events of a type, in log order, that match keep (nil: all).
func (s *snapshot) of(typ string, keep func(*node) bool) []*node {
	var out []*node
	for _, n := range s.nodes {
		if n.Type == typ && (keep == nil || keep(n)) {
			out = append(out, n)
		}
	}
	return out
}

func (s *snapshot) forVersion(typ string, v lifecycle.Version) []*node {
	return s.of(typ, func(n *node) bool { return n.model() == v })
}

// resolve finds the model version a request names ("name@version", or a version of exactly one model); "" picks
// the version registered last.
func (s *snapshot) resolve(ref string) (lifecycle.Version, error) {
	regs := s.of("model.version", func(n *node) bool { return n.str("alias") == "" && n.Model != nil })
	if ref == "" {
		if len(regs) == 0 {
			return lifecycle.Version{}, nil
		}
		return regs[len(regs)-1].model(), nil
	}
	name, ver, ok := strings.Cut(ref, "@")
	if !ok {
		name, ver = "", ref
	}
	var found []lifecycle.Version
	for _, n := range regs {
		v := n.model()
		if v.Version == ver && (name == "" || v.Name == name) && !slices.Contains(found, v) {
			found = append(found, v)
		}
	}
	switch len(found) {
	case 0:
		return lifecycle.Version{}, fmt.Errorf("%w: model version %q was not registered by then", ErrRequest, ref)
	case 1:
		return found[0], nil
	}
	return lifecycle.Version{}, fmt.Errorf("%w: several models have version %q: name it as NAME@VERSION", ErrRequest, ref)
}

// registration returns the model.version event that registered v, or nil.
func (s *snapshot) registration(v lifecycle.Version) *node {
	for _, n := range s.forVersion("model.version", v) {
		if n.str("alias") == "" {
			return n
		}
	}
	return nil
}

// lineage returns the registry's lineage of v over the snapshot, or nil.
func (s *snapshot) lineage(v lifecycle.Version) *registry.Lineage {
	if v == (lifecycle.Version{}) {
		return nil
	}
	l, err := s.reg.Lineage(s.system, v.Name, v.Version)
	if err != nil {
		return nil
	}
	return l
}

// latestDoc returns the latest document event of a kind (for a version, when v is set), or nil.
func (s *snapshot) latestDoc(kind string, v lifecycle.Version) *node {
	docs := s.of("document", func(n *node) bool {
		return n.str("kind") == kind && n.str("signature") == "" && (v == (lifecycle.Version{}) || n.model() == v)
	})
	if len(docs) == 0 {
		return nil
	}
	return docs[len(docs)-1]
}

// signatures returns the signature events recorded for a document event.
func (s *snapshot) signatures(doc *node) []*node {
	return s.of("document", func(n *node) bool { return n.str("signature") != "" && slices.Contains(n.Refs, doc.ID) })
}

func (s *snapshot) byRef(ref string) *node { return s.byID[ref] }

// citeNode cites an event the registry answered with.
func (s *snapshot) citeNode(n *registry.Node) Cite {
	if x := s.byID[n.ID]; x != nil {
		return x.cite()
	}
	return Cite{Event: n.ID, Leaf: n.Index}
}
