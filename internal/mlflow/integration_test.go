package mlflow_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairn-ai/cairn/client"
	"github.com/cairn-ai/cairn/internal/api"
	"github.com/cairn-ai/cairn/internal/index"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/mlflow"
	"github.com/cairn-ai/cairn/internal/seal"
	"github.com/cairn-ai/cairn/internal/store/local"
)

// needTool skips when a tool is missing, except under CI, where the test must fail instead.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not installed (CI installs it: see .ci/run)", name)
		}
		t.Skipf("%s is not installed", name)
	}
	return p
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startMLflow runs a real MLflow tracking server on loopback with a SQLite backend and a proxied artifact store.
func startMLflow(t *testing.T) (uri, artefacts string) {
	t.Helper()
	bin := needTool(t, "mlflow")
	dir := t.TempDir()
	artefacts = filepath.Join(dir, "artifacts")
	port := freePort(t)
	cmd := exec.Command(bin, "server", "--backend-store-uri", "sqlite:///"+filepath.Join(dir, "mlflow.db"),
		"--artifacts-destination", artefacts, "--host", "127.0.0.1", "--port", fmt.Sprint(port), "--workers", "1")
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	// Webhooks to the connector's plain-HTTP listener on loopback (MLflow allows only https to public addresses
	// by default).
	// MLflow caches its list of webhooks (60 s by default): keep it short, or a webhook created after the last
	// registry event would not fire for the next one.
	cmd.Env = append(os.Environ(), "MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https", "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true",
		"MLFLOW_WEBHOOK_CACHE_TTL=1")
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		killGroup(cmd)
		cmd.Wait()
	})
	uri = fmt.Sprintf("http://127.0.0.1:%d", port)
	for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(500 * time.Millisecond) {
		resp, err := http.Get(uri + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return uri, artefacts
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("mlflow server did not come up:\n%s", log.String())
		}
	}
}

// startCairn runs a Cairn API server in-process with the system "credit" registered.
func startCairn(t *testing.T) (*client.Client, *ledger.Ledger) {
	t.Helper()
	dir := t.TempDir()
	k := make([]byte, 32)
	rand.Read(k)
	kek, _ := seal.NewKEK(k)
	keys, err := seal.OpenKeyring(filepath.Join(dir, "keys"), kek)
	if err != nil {
		t.Fatal(err)
	}
	_, sk, _ := ed25519.GenerateKey(rand.Reader)
	st, err := local.Open(dir, local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := ledger.Open(context.Background(), ledger.Config{Origin: "test.example", CheckpointInterval: 5 * time.Millisecond}, st, keys, sk)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	x, err := index.Open(filepath.Join(dir, "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.Close() })
	tokens, err := api.LoadTokens(filepath.Join(dir, "tokens.json"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokens.Create(api.Principal{Name: "mlflow-sync", Roles: []string{api.RoleAdmin}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.New(api.Config{}, l, tokens, api.LedgerIndex(x, l)))
	t.Cleanup(srv.Close)
	c := client.New(srv.URL, tok)
	if _, err := c.ApplySystem(context.Background(), []byte(`{"id":"credit","name":"Credit","intended_purpose":"scoring","provider":"Acme"}`)); err != nil {
		t.Fatal(err)
	}
	return c, l
}

// manifestDigest hashes a directory as the connector defines a model's digest: SHA-256 of the sha256sum-style
// manifest of its files sorted by path.
func manifestDigest(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		h := sha256.Sum256(b)
		lines = append(lines, hex.EncodeToString(h[:])+"  "+filepath.ToSlash(rel)+"\n")
		return nil
	})
	slices.SortFunc(lines, func(a, b string) int { return strings.Compare(a[66:], b[66:]) })
	h := sha256.Sum256([]byte(strings.Join(lines, "")))
	return "sha256:" + hex.EncodeToString(h[:])
}

// envelopes returns the envelopes of a log's events of one type.
func envelopes(t *testing.T, l *ledger.Ledger, typ string) []map[string]any {
	t.Helper()
	lg, _ := l.Log("credit")
	n, _ := lg.Tree()
	var out []map[string]any
	for i := range n {
		e, err := lg.Entry(context.Background(), i)
		if err != nil {
			t.Fatal(err)
		}
		if e.Type != typ {
			continue
		}
		var m map[string]any
		json.Unmarshal(e.Envelope, &m)
		out = append(out, m)
	}
	return out
}

// TestSyncRealMLflow is the acceptance test of the connector against a real MLflow 3 server populated by MLflow's
// own Python client: the first sync records the runs, the dataset, the versions with their artefacts' SHA-256
// and the alias; a second sync records nothing; moving the alias records exactly one alias event.
func TestSyncRealMLflow(t *testing.T) {
	python := needTool(t, "python3")
	uri, artefacts := startMLflow(t)
	out, err := exec.Command(python, "testdata/populate.py", uri).CombinedOutput()
	if err != nil {
		t.Fatalf("populate MLflow: %v\n%s", err, out)
	}
	c, l := startCairn(t)
	cfg := mlflow.Config{System: "credit", StatePath: filepath.Join(t.TempDir(), "state.json"), MLflow: mlflow.NewClient(uri), Cairn: c}
	ctx := context.Background()

	r, err := mlflow.Sync(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r.Datasets != 1 || r.Runs != 2 || r.Versions != 2 || r.Aliases != 1 || r.UnknownDigests != 0 {
		t.Fatalf("first sync: %+v, want 1 dataset, 2 runs, 2 versions, 1 alias", r)
	}
	versions := envelopes(t, l, "model.version")
	var registered []map[string]any
	for _, v := range versions {
		attrs := v["attrs"].(map[string]any)
		if attrs["alias"] == nil {
			registered = append(registered, v)
		}
	}
	if len(registered) != 2 {
		t.Fatalf("%d registrations", len(registered))
	}
	// The recorded digest is the SHA-256 of the artefacts MLflow stored, computed here from its disk.
	for _, v := range registered {
		m := v["model"].(map[string]any)
		attrs := v["attrs"].(map[string]any)
		dirs, _ := filepath.Glob(filepath.Join(artefacts, "*", "models", "*", "artifacts"))
		found := false
		for _, d := range dirs {
			if manifestDigest(t, d) == m["digest"] {
				found = true
			}
		}
		if !found || attrs["format"] != "sklearn" || attrs["run_id"] == nil || len(v["refs"].([]any)) != 2 {
			t.Errorf("version %v: digest %v matches no artefact directory of %v, or attrs %v / refs %v", m["version"], m["digest"], dirs, attrs, v["refs"])
		}
	}
	ds := envelopes(t, l, "dataset.version")
	if a := ds[0]["attrs"].(map[string]any); a["uri"] != "s3://bank-data/applications-2026-11.parquet" || a["rows"] != 300.0 || a["mlflow_context"] != "training" || a["digest_unknown"] == nil {
		t.Errorf("dataset: %v", a)
	}
	runs := envelopes(t, l, "training.run")
	if a := runs[0]["attrs"].(map[string]any); a["status"] != "finished" || a["params"].(map[string]any)["C"] == nil || a["metrics"].(map[string]any)["accuracy"] == nil {
		t.Errorf("run: %v", a)
	}

	// Nothing new: nothing recorded.
	lg, _ := l.Log("credit")
	before, _ := lg.Tree()
	if r, err := mlflow.Sync(ctx, cfg); err != nil || r.Total() != 0 {
		t.Fatalf("second sync: %+v %v, want nothing recorded", r, err)
	}
	if after, _ := lg.Tree(); after != before {
		t.Errorf("second sync grew the log from %d to %d", before, after)
	}

	// A webhook for alias changes, delivered by MLflow to the connector's listener, signed with the secret.
	trigger := make(chan struct{}, 1)
	hookPort := freePort(t)
	stopHook, err := mlflow.ListenWebhooks(ctx, fmt.Sprintf("127.0.0.1:%d", hookPort), []byte("whsec-integration"), trigger, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer stopHook()
	hook := fmt.Sprintf(`{"name":"cairn","url":"http://127.0.0.1:%d/","secret":"whsec-integration","events":[{"entity":"MODEL_VERSION_ALIAS","action":"CREATED"}]}`, hookPort)
	resp, err := http.Post(uri+"/api/2.0/mlflow/webhooks", "application/json", strings.NewReader(hook))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("create webhook: %v %v", err, resp)
	}
	resp.Body.Close()
	time.Sleep(2 * time.Second) // past MLflow's webhook cache

	// Move the alias through MLflow's REST API: the webhook fires, and the sync records exactly one alias event.
	body := strings.NewReader(`{"name":"credit-model","alias":"champion","version":"2"}`)
	resp, err = http.Post(uri+"/api/2.0/mlflow/registered-models/alias", "application/json", body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("move alias: %v %v", err, resp)
	}
	resp.Body.Close()
	select {
	case <-trigger:
	case <-time.After(3 * time.Minute):
		t.Fatal("MLflow's webhook for the alias move did not arrive with a valid signature")
	}
	r, err = mlflow.Sync(ctx, cfg)
	if err != nil || r.Total() != 1 || r.Aliases != 1 {
		t.Fatalf("sync after the alias moved: %+v %v, want exactly one alias event", r, err)
	}
	var moves []string
	for _, v := range envelopes(t, l, "model.version") {
		if a := v["attrs"].(map[string]any); a["alias"] == "champion" {
			moves = append(moves, fmt.Sprint(a["alias_action"], " ", v["model"].(map[string]any)["version"]))
		}
	}
	if !slices.Equal(moves, []string{"set 1", "set 2"}) {
		t.Errorf("alias events %v, want [set 1, set 2]", moves)
	}
	if r, err := mlflow.Sync(ctx, cfg); err != nil || r.Total() != 0 {
		t.Fatalf("sync after recording the move: %+v %v, want nothing", r, err)
	}
}
