package mlflow_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cairn-ai/cairn/client"
	"github.com/cairn-ai/cairn/internal/mlflow"
)

// fakeMLflow answers the REST calls a sync makes with one experiment, one run with a dataset input, one model
// version with one artefact file and an alias. It stands in for MLflow in unit tests of the sync's bookkeeping;
// TestSyncRealMLflow talks to the real server.
func fakeMLflow(t *testing.T) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	reply := func(body string) func(http.ResponseWriter, *http.Request) {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, body)
		}
	}
	mux.HandleFunc("POST /api/2.0/mlflow/experiments/search", reply(`{"experiments":[{"experiment_id":"1","name":"credit","lifecycle_stage":"active"}]}`))
	mux.HandleFunc("POST /api/2.0/mlflow/runs/search", reply(`{"runs":[{"info":{"run_id":"r1","experiment_id":"1","status":"FINISHED","start_time":1796000000000,"end_time":1796000060000,"lifecycle_stage":"active"},
		"data":{"metrics":[{"key":"auc","value":0.8}],"params":[{"key":"C","value":"1.0"}],"tags":[{"key":"mlflow.source.git.commit","value":"abc123"}]},
		"inputs":{"dataset_inputs":[{"tags":[{"key":"mlflow.data.context","value":"training"}],"dataset":{"name":"applications","digest":"e6a0a5d7","source_type":"s3","source":"{\"uri\":\"s3://b/a.parquet\"}","profile":"{\"num_rows\":10}"}}]}}]}`))
	mux.HandleFunc("GET /api/2.0/mlflow/registered-models/search", reply(`{"registered_models":[{"name":"credit-model","aliases":[{"alias":"champion","version":"1"}]}]}`))
	mux.HandleFunc("GET /api/2.0/mlflow/model-versions/search", reply(`{"model_versions":[{"name":"credit-model","version":"1","creation_timestamp":1796000070000,"source":"models:/m-1","run_id":"r1","status":"READY"}]}`))
	mux.HandleFunc("GET /api/2.0/mlflow/model-versions/get-download-uri", reply(`{"artifact_uri":"mlflow-artifacts:/1/models/m-1/artifacts"}`))
	mux.HandleFunc("GET /api/2.0/mlflow-artifacts/artifacts", reply(`{"files":[{"path":"model.pkl","is_dir":false,"file_size":5}]}`))
	mux.HandleFunc("GET /api/2.0/mlflow-artifacts/artifacts/1/models/m-1/artifacts/model.pkl", reply("hello"))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// TestSyncInterruptedIsNotDuplicated: the server records a sync's events but the acknowledgement is lost; the
// next sync resends them under the same ids and the log holds each once.
func TestSyncInterruptedIsNotDuplicated(t *testing.T) {
	ml := fakeMLflow(t)
	c, l := startCairn(t)
	target, _ := url.Parse(c.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	var drop atomic.Bool
	drop.Store(true)
	lossy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if drop.Load() && r.Method == "POST" && strings.HasSuffix(r.URL.Path, "/events") {
			// Forward, then lose the answer.
			rec := httptest.NewRecorder()
			proxy.ServeHTTP(rec, r)
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(lossy.Close)
	cfg := mlflow.Config{System: "credit", StatePath: filepath.Join(t.TempDir(), "state.json"), MLflow: mlflow.NewClient(ml.URL), Cairn: client.New(lossy.URL, c.Token)}
	if _, err := mlflow.Sync(context.Background(), cfg); err == nil {
		t.Fatal("sync succeeded although its acknowledgement was lost")
	}
	lg, _ := l.Log("credit")
	n1, _ := lg.Tree()
	drop.Store(false)
	r, err := mlflow.Sync(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	n2, _ := lg.Tree()
	if n2 != n1 || r.Total() != 4 {
		t.Errorf("the retried sync grew the log from %d to %d (result %+v): events recorded twice", n1, n2, r)
	}
	vs := envelopes(t, l, "model.version")
	if len(vs) != 2 || vs[0]["model"].(map[string]any)["digest"] == nil {
		t.Errorf("model.version events: %v", vs)
	}
	if r, err := mlflow.Sync(context.Background(), cfg); err != nil || r.Total() != 0 {
		t.Errorf("third sync: %+v %v", r, err)
	}
}

// TestWebhookSignature checks MLflow's webhook signature scheme against a vector computed with Python's hmac.
func TestWebhookSignature(t *testing.T) {
	body := []byte(`{"entity":"model_version_alias","action":"created","timestamp":"2026-11-30T00:00:00Z","data":{"name":"credit-model","alias":"champion","version":"2"}}`)
	const sig = "v1,Y/XDektPtqIlY6yPs/v6u+LFyO+mEYt3VzUwg5zgbxQ="
	if err := mlflow.Verify([]byte("whsec-test"), "d-1", "1796000000", sig, body); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ secret, id, ts, sig string }{
		{"whsec-other", "d-1", "1796000000", sig},
		{"whsec-test", "d-2", "1796000000", sig},
		{"whsec-test", "d-1", "1796000001", sig},
		{"whsec-test", "d-1", "1796000000", strings.Replace(sig, "v1,", "v2,", 1)},
	} {
		if err := mlflow.Verify([]byte(tc.secret), tc.id, tc.ts, tc.sig, body); err == nil {
			t.Errorf("verified with %+v", tc)
		}
	}
	if err := mlflow.Verify([]byte("whsec-test"), "d-1", "1796000000", sig, append(body, ' ')); err == nil {
		t.Error("verified an altered body")
	}
}
