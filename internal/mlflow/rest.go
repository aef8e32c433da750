// Package mlflow connects Cairn to an MLflow tracking server. It reads experiments, runs (params, metrics, tags,
// dataset inputs), registered model versions and aliases through MLflow's REST API, hashes model artefacts
// through MLflow's artifact proxy, and records what is new or changed as lifecycle events (dataset.version,
// training.run, model.version, alias moves as model.version events with attrs.alias).
//
// Sync is idempotent: a state file remembers what was recorded, and events whose append may have been interrupted
// are retried under the same event id, so re-running records nothing twice. It never sends MLflow credentials to
// Cairn and never puts them in an error.
package mlflow

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"slices"
	"strings"
	"time"
)

// Client reads an MLflow tracking server.
type Client struct {
	// URL is the tracking server, e.g. http://127.0.0.1:5000.
	URL  string
	HTTP *http.Client
	// Token (bearer) or Username/Password (basic) authenticate to MLflow; by default from MLFLOW_TRACKING_TOKEN,
	// MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, as MLflow's own client reads them.
	Token, Username, Password string
	// MaxArtefactBytes bounds how much of a model's artefacts is downloaded to hash them (default 4 GiB).
	MaxArtefactBytes int64
}

// NewClient returns a client for an MLflow server, with credentials from the environment.
func NewClient(uri string) *Client {
	return &Client{URL: strings.TrimRight(uri, "/"), HTTP: &http.Client{Timeout: 5 * time.Minute},
		Token: os.Getenv("MLFLOW_TRACKING_TOKEN"), Username: os.Getenv("MLFLOW_TRACKING_USERNAME"),
		Password: os.Getenv("MLFLOW_TRACKING_PASSWORD"), MaxArtefactBytes: 4 << 30}
}

// Error is an error answer of the MLflow server.
type Error struct {
	Status  int
	Code    string `json:"error_code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return fmt.Sprintf("mlflow: %d %s: %s", e.Status, e.Code, e.Message) }

func (c *Client) request(ctx context.Context, method, p string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.URL+p, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	switch {
	case c.Token != "":
		req.Header.Set("Authorization", "Bearer "+c.Token)
	case c.Username != "":
		req.SetBasicAuth(c.Username, c.Password)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("mlflow: %s %s: %w", method, strings.SplitN(p, "?", 2)[0], err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		e := &Error{Status: resp.StatusCode}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		json.Unmarshal(b, e)
		return nil, e
	}
	return resp, nil
}

func (c *Client) call(ctx context.Context, method, p string, body, out any) error {
	resp, err := c.request(ctx, method, p, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("mlflow: %s: %w", strings.SplitN(p, "?", 2)[0], err)
	}
	return nil
}

const api = "/api/2.0/mlflow"

// KV is an MLflow key/value pair (param, tag).
type KV struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Experiment is an MLflow experiment.
type Experiment struct {
	ID             string `json:"experiment_id"`
	Name           string `json:"name"`
	LifecycleStage string `json:"lifecycle_stage"`
}

// Experiments lists every experiment, deleted ones included.
func (c *Client) Experiments(ctx context.Context) ([]Experiment, error) {
	return pages(func(token string) ([]Experiment, string, error) {
		var page struct {
			Experiments []Experiment `json:"experiments"`
			Next        string       `json:"next_page_token"`
		}
		body := map[string]any{"max_results": 1000, "view_type": "ALL"}
		if token != "" {
			body["page_token"] = token
		}
		err := c.call(ctx, "POST", api+"/experiments/search", body, &page)
		return page.Experiments, page.Next, err
	})
}

// pages collects a paginated listing: fetch returns one page and the next page's token ("" after the last).
func pages[T any](fetch func(token string) ([]T, string, error)) ([]T, error) {
	var out []T
	token := ""
	for {
		items, next, err := fetch(token)
		if err != nil {
			return nil, err
		}
		out = append(out, items...)
		if token = next; token == "" {
			return out, nil
		}
	}
}

// Dataset is an MLflow dataset as a run's input names it.
type Dataset struct {
	Name       string `json:"name"`
	Digest     string `json:"digest"`
	SourceType string `json:"source_type"`
	Source     string `json:"source"`
	Schema     string `json:"schema"`
	Profile    string `json:"profile"`
}

// Run is an MLflow run.
type Run struct {
	Info struct {
		RunID          string `json:"run_id"`
		RunName        string `json:"run_name"`
		ExperimentID   string `json:"experiment_id"`
		Status         string `json:"status"`
		StartTime      int64  `json:"start_time"`
		EndTime        int64  `json:"end_time"`
		LifecycleStage string `json:"lifecycle_stage"`
	} `json:"info"`
	Data struct {
		Metrics []struct {
			Key   string  `json:"key"`
			Value float64 `json:"value"`
		} `json:"metrics"`
		Params []KV `json:"params"`
		Tags   []KV `json:"tags"`
	} `json:"data"`
	Inputs struct {
		Datasets []struct {
			Tags    []KV    `json:"tags"`
			Dataset Dataset `json:"dataset"`
		} `json:"dataset_inputs"`
	} `json:"inputs"`
}

// Runs lists the runs of experiments, deleted ones included.
func (c *Client) Runs(ctx context.Context, experimentIDs []string) ([]Run, error) {
	var out []Run
	for ids := range slices.Chunk(experimentIDs, 100) {
		runs, err := pages(func(token string) ([]Run, string, error) {
			var page struct {
				Runs []Run  `json:"runs"`
				Next string `json:"next_page_token"`
			}
			body := map[string]any{"experiment_ids": ids, "run_view_type": "ALL", "max_results": 1000}
			if token != "" {
				body["page_token"] = token
			}
			err := c.call(ctx, "POST", api+"/runs/search", body, &page)
			return page.Runs, page.Next, err
		})
		if err != nil {
			return nil, err
		}
		out = append(out, runs...)
	}
	return out, nil
}

// RegisteredModel is a registered model with its aliases.
type RegisteredModel struct {
	Name    string `json:"name"`
	Aliases []struct {
		Alias   string `json:"alias"`
		Version string `json:"version"`
	} `json:"aliases"`
}

// RegisteredModels lists every registered model.
func (c *Client) RegisteredModels(ctx context.Context) ([]RegisteredModel, error) {
	return pages(func(token string) ([]RegisteredModel, string, error) {
		var page struct {
			Models []RegisteredModel `json:"registered_models"`
			Next   string            `json:"next_page_token"`
		}
		q := url.Values{"max_results": {"1000"}}
		if token != "" {
			q.Set("page_token", token)
		}
		err := c.call(ctx, "GET", api+"/registered-models/search?"+q.Encode(), nil, &page)
		return page.Models, page.Next, err
	})
}

// ModelVersion is a registered model version.
type ModelVersion struct {
	Name              string `json:"name"`
	Version           string `json:"version"`
	CreationTimestamp int64  `json:"creation_timestamp"`
	Source            string `json:"source"`
	RunID             string `json:"run_id"`
	Status            string `json:"status"`
}

// ModelVersions lists the versions of a registered model.
func (c *Client) ModelVersions(ctx context.Context, name string) ([]ModelVersion, error) {
	return pages(func(token string) ([]ModelVersion, string, error) {
		var page struct {
			Versions []ModelVersion `json:"model_versions"`
			Next     string         `json:"next_page_token"`
		}
		q := url.Values{"filter": {"name='" + strings.ReplaceAll(name, "'", `\'`) + "'"}, "max_results": {"1000"}}
		if token != "" {
			q.Set("page_token", token)
		}
		err := c.call(ctx, "GET", api+"/model-versions/search?"+q.Encode(), nil, &page)
		return page.Versions, page.Next, err
	})
}

// Artefacts is the result of hashing a model version's artefacts.
type Artefacts struct {
	// Digest is SHA-256 over the sha256sum-style manifest of every file ("<hex>  <path>\n", sorted by path), so
	// `find . -type f | sort | xargs sha256sum | sha256sum` over a download reproduces it; "" when unknown.
	Digest string
	// Files maps each file's path to its SHA-256 ("sha256:<hex>").
	Files map[string]string
	// Format is the model's flavour from its MLmodel file (e.g. "sklearn"), when found.
	Format string
	// Unknown says why the digest could not be had.
	Unknown string
}

// HashVersion downloads a model version's artefacts through the server's artifact proxy and hashes them. When
// the artefacts are not reachable that way, it reports why in Unknown instead of failing.
func (c *Client) HashVersion(ctx context.Context, name, version string) (*Artefacts, error) {
	var dl struct {
		URI string `json:"artifact_uri"`
	}
	q := url.Values{"name": {name}, "version": {version}}
	if err := c.call(ctx, "GET", api+"/model-versions/get-download-uri?"+q.Encode(), nil, &dl); err != nil {
		return &Artefacts{Unknown: "MLflow did not give the download location: " + err.Error()}, nil
	}
	root, ok := strings.CutPrefix(dl.URI, "mlflow-artifacts:")
	if !ok {
		scheme, _, _ := strings.Cut(dl.URI, ":")
		return &Artefacts{Unknown: "artefacts are stored at a " + scheme + ": location that the MLflow server does not proxy (run the server with --serve-artifacts)"}, nil
	}
	// mlflow-artifacts:/path or mlflow-artifacts://host:port/path
	if rest, ok := strings.CutPrefix(root, "//"); ok {
		_, root, _ = strings.Cut(rest, "/")
	}
	root = strings.Trim(root, "/")
	a := &Artefacts{Files: map[string]string{}}
	var total int64
	var walk func(dir string) error
	walk = func(dir string) error {
		var list struct {
			Files []struct {
				Path  string `json:"path"`
				IsDir bool   `json:"is_dir"`
			} `json:"files"`
		}
		p := root
		if dir != "" {
			p += "/" + dir
		}
		if err := c.call(ctx, "GET", "/api/2.0/mlflow-artifacts/artifacts?"+url.Values{"path": {p}}.Encode(), nil, &list); err != nil {
			return err
		}
		for _, f := range list.Files {
			rel := f.Path
			if dir != "" && !strings.HasPrefix(rel, dir+"/") {
				rel = path.Join(dir, rel)
			}
			if f.IsDir {
				if err := walk(rel); err != nil {
					return err
				}
				continue
			}
			resp, err := c.request(ctx, "GET", "/api/2.0/mlflow-artifacts/artifacts/"+escapePath(root+"/"+rel), nil)
			if err != nil {
				return err
			}
			h := sha256.New()
			var mlmodel bytes.Buffer
			w := io.Writer(h)
			if rel == "MLmodel" {
				w = io.MultiWriter(h, &mlmodel)
			}
			n, err := io.Copy(w, io.LimitReader(resp.Body, c.MaxArtefactBytes-total+1))
			resp.Body.Close()
			if err != nil {
				return err
			}
			if total += n; total > c.MaxArtefactBytes {
				return fmt.Errorf("artefacts larger than %d bytes", c.MaxArtefactBytes)
			}
			a.Files[rel] = "sha256:" + hex.EncodeToString(h.Sum(nil))
			if rel == "MLmodel" {
				a.Format = flavour(mlmodel.String())
			}
		}
		return nil
	}
	if err := walk(""); err != nil {
		return &Artefacts{Unknown: "artefacts could not be read through the artifact proxy: " + err.Error()}, nil
	}
	if len(a.Files) == 0 {
		return &Artefacts{Unknown: "the artefact location holds no files"}, nil
	}
	paths := make([]string, 0, len(a.Files))
	for p := range a.Files {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	h := sha256.New()
	for _, p := range paths {
		fmt.Fprintf(h, "%s  %s\n", strings.TrimPrefix(a.Files[p], "sha256:"), p)
	}
	a.Digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	return a, nil
}

func escapePath(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		parts[i] = url.PathEscape(s)
	}
	return strings.Join(parts, "/")
}

// flavour picks the model flavour from an MLmodel file: the first flavour other than python_function.
func flavour(mlmodel string) string {
	in := false
	for _, line := range strings.Split(mlmodel, "\n") {
		if line == "flavors:" {
			in = true
			continue
		}
		if !in {
			continue
		}
		if !strings.HasPrefix(line, "  ") {
			return ""
		}
		if !strings.HasPrefix(line, "   ") {
			name := strings.TrimSuffix(strings.TrimSpace(line), ":")
			if name != "python_function" {
				return name
			}
		}
	}
	return ""
}
