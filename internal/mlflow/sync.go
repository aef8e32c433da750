package mlflow

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cairn-ai/cairn/client"
	"github.com/cairn-ai/cairn/internal/atomicfile"
	"github.com/cairn-ai/cairn/internal/event"
)

// Config is one sync's configuration.
type Config struct {
	// System is the Cairn system the events are recorded in.
	System string
	// StatePath is the file that remembers what was recorded (created on first sync). One sync at a time per file.
	StatePath string
	MLflow    *Client
	Cairn     *client.Client
	// IDWindow is how long after its creation an event id may be retried (the server's idempotency window,
	// default 10 minutes); a pending id older than this is checked on the server instead of being resent.
	IDWindow time.Duration
	Now      func() time.Time
	Logger   *slog.Logger
}

// State is what a sync remembers: for each MLflow object, a digest of what was recorded and the event id.
type State struct {
	MLflow  string             `json:"mlflow_uri"`
	System  string             `json:"system"`
	Objects map[string]*Object `json:"objects"`
}

// Object is one recorded (or pending) MLflow object.
type Object struct {
	Digest string `json:"digest"` // of the event content recorded, or being recorded
	ID     string `json:"id"`
	// Index is set once the event is acknowledged; while nil, the event is pending and is retried under ID.
	Index *uint64 `json:"index,omitempty"`
	// Version is, for an alias, the version it points at ("" once removed).
	Version string `json:"version,omitempty"`
	// Pending is the event as sent while it is not acknowledged: a retry resends exactly this.
	Pending *client.Event `json:"pending,omitempty"`
}

// Result counts what a sync recorded.
type Result struct {
	Datasets, Runs, Versions, Aliases int
	// UnknownDigests counts model versions recorded with "digest unknown".
	UnknownDigests int
}

func (r Result) String() string {
	return fmt.Sprintf("recorded %d dataset version(s), %d run(s), %d model version(s), %d alias move(s)", r.Datasets, r.Runs, r.Versions, r.Aliases)
}

// Total is how many events the sync recorded.
func (r Result) Total() int { return r.Datasets + r.Runs + r.Versions + r.Aliases }

type syncer struct {
	cfg     Config
	st      *State
	now     time.Time
	batch   []client.Event
	keys    []string
	kinds   []*int
	res     Result
	pending map[string]bool
}

// Sync reads the MLflow server once and records what is new or changed since the last sync.
func Sync(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.IDWindow == 0 {
		cfg.IDWindow = 10 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	st, err := loadState(cfg.StatePath, cfg.MLflow.URL, cfg.System)
	if err != nil {
		return Result{}, err
	}
	s := &syncer{cfg: cfg, st: st, now: cfg.Now(), pending: map[string]bool{}}
	if err := s.collect(ctx); err != nil {
		return Result{}, err
	}
	if len(s.batch) == 0 {
		return s.res, nil
	}
	// Remember the ids before sending: an interrupted sync retries them, so nothing is recorded twice.
	if err := saveState(cfg.StatePath, st); err != nil {
		return Result{}, err
	}
	for start := 0; start < len(s.batch); start += 1000 {
		end := min(start+1000, len(s.batch))
		rs, err := cfg.Cairn.Append(ctx, cfg.System, s.batch[start:end])
		if err != nil {
			return Result{}, fmt.Errorf("record in cairn: %w", err)
		}
		for i, r := range rs {
			idx := r.Index
			o := st.Objects[s.keys[start+i]]
			o.Index, o.Pending = &idx, nil
			*s.kinds[start+i]++
		}
		if err := saveState(cfg.StatePath, st); err != nil {
			return Result{}, err
		}
	}
	return s.res, nil
}

func loadState(p, uri, system string) (*State, error) {
	st := &State{MLflow: uri, System: system, Objects: map[string]*Object{}}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("state file %s: %w", p, err)
	}
	if st.MLflow != uri || st.System != system {
		return nil, fmt.Errorf("state file %s belongs to MLflow %s and system %s; use another --state", p, st.MLflow, st.System)
	}
	if st.Objects == nil {
		st.Objects = map[string]*Object{}
	}
	return st, nil
}

func saveState(p string, st *State) error {
	b, err := json.MarshalIndent(st, "", " ")
	if err != nil {
		return err
	}
	return atomicfile.Write(p, append(b, '\n'), 0o600)
}

// contentDigest is the digest of an event's content, without its id and time, to tell a change from a repeat.
func contentDigest(ev client.Event) string {
	ev.ID, ev.Time, ev.Refs = "", "", nil
	b, _ := json.Marshal(ev)
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:16])
}

// plan queues ev under key unless the same content was recorded already; it returns the event id for key.
func (s *syncer) plan(ctx context.Context, key string, ev client.Event, digest string, kind *int) (string, error) {
	obj := s.st.Objects[key]
	if s.pending[key] {
		return obj.ID, nil // queued already in this sync (a dataset several runs used)
	}
	if obj != nil && obj.Digest == digest {
		if obj.Index != nil {
			return obj.ID, nil
		}
		// Pending from an interrupted sync: retry under the same id while the server still recognises it.
		id, err := event.ParseUUID(obj.ID)
		if err == nil && obj.Pending != nil && s.now.Sub(id.Time()) < s.cfg.IDWindow-time.Minute {
			return s.queue(key, obj, *obj.Pending, kind), nil
		}
		if err == nil {
			rec, err := s.cfg.Cairn.GetID(ctx, s.cfg.System, obj.ID)
			var p *client.Problem
			switch {
			case err == nil:
				idx := rec.Index
				obj.Index, obj.Pending = &idx, nil
				return obj.ID, nil
			case errors.As(err, &p) && p.Status == 404:
				// Never recorded: send it afresh below.
			default:
				return "", fmt.Errorf("an event of an interrupted sync (%s) is older than the idempotency window; to learn whether it was recorded the sync's token needs the auditor role: %w", key, err)
			}
		}
	}
	obj = &Object{Digest: digest, ID: event.NewV7(s.now).String(), Version: ""}
	if o := s.st.Objects[key]; o != nil {
		obj.Version = o.Version
	}
	s.st.Objects[key] = obj
	return s.queue(key, obj, ev, kind), nil
}

func (s *syncer) queue(key string, obj *Object, ev client.Event, kind *int) string {
	ev.ID = obj.ID
	obj.Pending = &ev
	s.batch = append(s.batch, ev)
	s.keys = append(s.keys, key)
	s.kinds = append(s.kinds, kind)
	s.pending[key] = true
	return obj.ID
}

func ms(t int64) string { return time.UnixMilli(t).UTC().Format(time.RFC3339Nano) }

func (s *syncer) collect(ctx context.Context) error {
	exps, err := s.cfg.MLflow.Experiments(ctx)
	if err != nil {
		return err
	}
	names := map[string]string{}
	var ids []string
	for _, e := range exps {
		names[e.ID] = e.Name
		ids = append(ids, e.ID)
	}
	runs, err := s.cfg.MLflow.Runs(ctx, ids)
	if err != nil {
		return err
	}
	slices.SortFunc(runs, func(a, b Run) int {
		if c := a.Info.StartTime - b.Info.StartTime; c != 0 {
			return int(min(max(c, -1), 1))
		}
		return strings.Compare(a.Info.RunID, b.Info.RunID)
	})
	runIDs := map[string]string{}    // MLflow run id → event id
	runData := map[string][]string{} // MLflow run id → dataset event ids
	for _, r := range runs {
		var dsIDs, dsKeys []string
		for _, in := range r.Inputs.Datasets {
			ev, key := datasetEvent(in.Dataset, in.Tags, r.Info.StartTime)
			id, err := s.plan(ctx, key, ev, contentDigest(ev), &s.res.Datasets)
			if err != nil {
				return err
			}
			dsIDs, dsKeys = append(dsIDs, id), append(dsKeys, key)
		}
		ev := runEvent(r, names[r.Info.ExperimentID], dsKeys)
		ev.Refs = dsIDs
		id, err := s.plan(ctx, "run:"+r.Info.RunID, ev, contentDigest(ev), &s.res.Runs)
		if err != nil {
			return err
		}
		runIDs[r.Info.RunID], runData[r.Info.RunID] = id, dsIDs
	}
	models, err := s.cfg.MLflow.RegisteredModels(ctx)
	if err != nil {
		return err
	}
	for _, m := range models {
		vs, err := s.cfg.MLflow.ModelVersions(ctx, m.Name)
		if err != nil {
			return err
		}
		slices.SortFunc(vs, func(a, b ModelVersion) int { return cmpVersion(a.Version, b.Version) })
		for _, v := range vs {
			if v.Status != "READY" {
				continue // registration still pending or failed: nothing to record yet
			}
			key := "version:" + v.Name + "/" + v.Version
			// The artefacts are hashed once per registration the sync has not recorded, not on every sync.
			meta := contentDigest(client.Event{Type: "model.version", Attrs: map[string]any{"source": v.Source, "run_id": v.RunID, "status": v.Status}})
			if o := s.st.Objects[key]; o != nil && o.Digest == meta && o.Index != nil {
				continue
			}
			a, err := s.cfg.MLflow.HashVersion(ctx, v.Name, v.Version)
			if err != nil {
				return err
			}
			ev := versionEvent(v, a)
			if a.Unknown != "" {
				s.res.UnknownDigests++
				s.cfg.Logger.Warn("mlflow: model artefacts not hashed", "model", v.Name, "version", v.Version, "reason", a.Unknown)
			}
			if id := runIDs[v.RunID]; id != "" {
				ev.Refs = append([]string{id}, runData[v.RunID]...)
			}
			if _, err := s.plan(ctx, key, ev, meta, &s.res.Versions); err != nil {
				return err
			}
		}
		if err := s.aliases(ctx, m); err != nil {
			return err
		}
	}
	return nil
}

// aliases records alias moves: an alias set on (or moved to) a version, and an alias that disappeared.
func (s *syncer) aliases(ctx context.Context, m RegisteredModel) error {
	seen := map[string]bool{}
	for _, a := range m.Aliases {
		key := "alias:" + m.Name + "@" + a.Alias
		seen[key] = true
		if o := s.st.Objects[key]; o != nil && o.Version == a.Version && (o.Index != nil || s.pending[key]) {
			continue
		}
		ev := client.Event{Type: "model.version", Time: s.now.UTC().Format(time.RFC3339Nano), Model: &client.Model{Name: m.Name, Version: a.Version},
			Attrs: map[string]any{"alias": a.Alias, "alias_action": "set", "source": "mlflow"}}
		if _, err := s.plan(ctx, key, ev, contentDigest(ev), &s.res.Aliases); err != nil {
			return err
		}
		s.st.Objects[key].Version = a.Version
	}
	prefix := "alias:" + m.Name + "@"
	keys := make([]string, 0)
	for k := range s.st.Objects {
		if strings.HasPrefix(k, prefix) && !seen[k] {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, key := range keys {
		o := s.st.Objects[key]
		if o.Version == "" {
			continue // removal already recorded
		}
		alias := strings.TrimPrefix(key, prefix)
		ev := client.Event{Type: "model.version", Time: s.now.UTC().Format(time.RFC3339Nano), Model: &client.Model{Name: m.Name, Version: o.Version},
			Attrs: map[string]any{"alias": alias, "alias_action": "removed", "source": "mlflow"}}
		if _, err := s.plan(ctx, key, ev, contentDigest(ev), &s.res.Aliases); err != nil {
			return err
		}
		s.st.Objects[key].Version = ""
	}
	return nil
}

// cmpVersion orders MLflow version numbers numerically.
func cmpVersion(a, b string) int {
	x, err1 := strconv.Atoi(a)
	y, err2 := strconv.Atoi(b)
	if err1 == nil && err2 == nil {
		return x - y
	}
	return strings.Compare(a, b)
}

func tag(kvs []KV, key string) string {
	for _, kv := range kvs {
		if kv.Key == key {
			return kv.Value
		}
	}
	return ""
}

// datasetEvent maps an MLflow dataset input to a dataset.version event. MLflow's digest is a fingerprint of
// the first 10,000 rows, so it is kept as a cross-reference, not as the identity; Cairn's own SHA-256 is taken
// when the source is a file this machine can read.
func datasetEvent(d Dataset, tags []KV, at int64) (client.Event, string) {
	attrs := map[string]any{"name": d.Name, "version": d.Digest, "mlflow_digest": d.Digest, "source": "mlflow"}
	if d.SourceType != "" {
		attrs["source_type"] = d.SourceType
	}
	if c := tag(tags, "mlflow.data.context"); c != "" {
		attrs["mlflow_context"] = c
	}
	var src map[string]any
	uri := ""
	if json.Unmarshal([]byte(d.Source), &src) == nil {
		for _, k := range []string{"uri", "url", "path"} {
			if v, ok := src[k].(string); ok && v != "" {
				uri = v
				break
			}
		}
	}
	if uri != "" {
		attrs["uri"] = uri
	}
	var prof struct {
		Rows *float64 `json:"num_rows"`
	}
	if json.Unmarshal([]byte(d.Profile), &prof) == nil && prof.Rows != nil && *prof.Rows >= 0 {
		attrs["rows"] = *prof.Rows
	}
	if d.Schema != "" {
		h := sha256.Sum256([]byte(d.Schema))
		attrs["schema_digest"] = "sha256:" + hex.EncodeToString(h[:])
	}
	if dg, reason := fileDigest(uri); dg != "" {
		attrs["digest"] = dg
	} else {
		attrs["digest_unknown"] = reason
	}
	ev := client.Event{Type: "dataset.version", Attrs: attrs}
	if at > 0 {
		ev.Time = ms(at)
	}
	return ev, "dataset:" + d.Name + "@" + d.Digest
}

// fileDigest hashes a dataset source that is a local file, or says why it cannot.
func fileDigest(uri string) (string, string) {
	p := uri
	if u, err := url.Parse(uri); err == nil && u.Scheme == "file" {
		p = u.Path
	} else if err == nil && u.Scheme != "" {
		return "", "the content at a " + u.Scheme + " source is not read by the connector; MLflow's digest is only a fingerprint of the first 10,000 rows"
	}
	if p == "" || !strings.HasPrefix(p, "/") {
		return "", "MLflow names no readable source; its digest is only a fingerprint of the first 10,000 rows"
	}
	f, err := os.Open(p)
	if err != nil {
		return "", "the source file is not readable on the connector's machine"
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", "the source file could not be read"
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), ""
}

func runEvent(r Run, experiment string, datasets []string) client.Event {
	status := strings.ToLower(r.Info.Status)
	if r.Info.LifecycleStage == "deleted" {
		status = "deleted"
	}
	attrs := map[string]any{"run_id": r.Info.RunID, "source": "mlflow"}
	if status != "" {
		attrs["status"] = status
	}
	if experiment != "" {
		attrs["experiment"] = experiment
	}
	if r.Info.StartTime > 0 {
		attrs["started"] = ms(r.Info.StartTime)
	}
	if r.Info.EndTime > 0 && r.Info.EndTime >= r.Info.StartTime {
		attrs["ended"] = ms(r.Info.EndTime)
	}
	if len(r.Data.Params) > 0 {
		p := map[string]any{}
		for _, kv := range r.Data.Params {
			p[kv.Key] = kv.Value
		}
		attrs["params"] = p
	}
	m := map[string]any{}
	for _, kv := range r.Data.Metrics {
		if !math.IsNaN(kv.Value) && !math.IsInf(kv.Value, 0) {
			m[kv.Key] = kv.Value
		}
	}
	if len(m) > 0 {
		attrs["metrics"] = m
	}
	if c := tag(r.Data.Tags, "mlflow.source.git.commit"); c != "" {
		attrs["code_revision"] = c
	}
	if len(datasets) > 0 {
		attrs["datasets"] = datasets
	}
	ev := client.Event{Type: "training.run", Attrs: attrs}
	switch {
	case r.Info.EndTime > 0:
		ev.Time = ms(r.Info.EndTime)
	case r.Info.StartTime > 0:
		ev.Time = ms(r.Info.StartTime)
	}
	return ev
}

// maxFileDigests bounds the per-file digests an event carries; the manifest digest covers every file.
const maxFileDigests = 64

func versionEvent(v ModelVersion, a *Artefacts) client.Event {
	attrs := map[string]any{"source": "mlflow", "status": strings.ToLower(v.Status)}
	if v.RunID != "" {
		attrs["run_id"] = v.RunID
	}
	m := &client.Model{Name: v.Name, Version: v.Version, Digest: a.Digest}
	if a.Unknown != "" {
		attrs["digest_unknown"] = a.Unknown
	}
	if a.Format != "" {
		attrs["format"] = a.Format
	}
	if len(a.Files) > 0 && len(a.Files) <= maxFileDigests {
		f := map[string]any{}
		for k, v := range a.Files {
			f[k] = v
		}
		attrs["artefact_digests"] = f
	}
	ev := client.Event{Type: "model.version", Model: m, Attrs: attrs}
	if v.CreationTimestamp > 0 {
		ev.Time = ms(v.CreationTimestamp)
	}
	return ev
}
