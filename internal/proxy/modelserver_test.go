package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Integration tests against real model servers from PyPI: MLServer with mlserver-sklearn (Open Inference
// Protocol v2) and `mlflow models serve --env-manager local` (MLflow /invocations), serving a scikit-learn
// model trained by testdata/models.py. They need python3 with mlflow, mlserver and mlserver-sklearn (.ci/run
// installs them); without them they skip locally and fail under CI.

func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is required under CI: %v", name, err)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// modelServers trains the model once and starts both servers once for the package's tests.
var modelServers struct {
	once         sync.Once
	err          error
	oip, mlflow  string // base URLs
	stop         func()
	mlserverLogs *bytes.Buffer
}

func startModelServers(t *testing.T) (oipURL, mlflowURL string) {
	t.Helper()
	py := needTool(t, "python3")
	needTool(t, "mlserver")
	needTool(t, "mlflow")
	ms := &modelServers
	ms.once.Do(func() {
		dir, err := os.MkdirTemp("", "cairn-models-")
		if err != nil {
			ms.err = err
			return
		}
		hp, gp, mp, fp := freePort(t), freePort(t), freePort(t), freePort(t)
		src, _ := filepath.Abs("testdata/models.py")
		out, err := exec.Command(py, src, dir, fmt.Sprint(hp), fmt.Sprint(gp), fmt.Sprint(mp)).CombinedOutput()
		if err != nil {
			ms.err = fmt.Errorf("train models: %v\n%s", err, out)
			return
		}
		var cmds []*exec.Cmd
		start := func(logs *bytes.Buffer, name string, args ...string) {
			c := exec.Command(name, args...)
			c.Dir = dir
			c.Stdout, c.Stderr = logs, logs
			c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
			if err := c.Start(); err != nil {
				ms.err = err
				return
			}
			cmds = append(cmds, c)
		}
		ms.mlserverLogs = &bytes.Buffer{}
		var mlflowLogs bytes.Buffer
		start(ms.mlserverLogs, "mlserver", "start", "mlserver")
		start(&mlflowLogs, "mlflow", "models", "serve", "-m", "mlflow", "--env-manager", "local", "-h", "127.0.0.1", "-p", fmt.Sprint(fp))
		ms.stop = func() {
			for _, c := range cmds {
				syscall.Kill(-c.Process.Pid, syscall.SIGTERM)
			}
			for _, c := range cmds {
				c.Wait()
			}
			os.RemoveAll(dir)
		}
		ms.oip, ms.mlflow = fmt.Sprintf("http://127.0.0.1:%d", hp), fmt.Sprintf("http://127.0.0.1:%d", fp)
		for _, u := range []string{ms.oip + "/v2/models/iris/ready", ms.mlflow + "/ping"} {
			ok := false
			for i := 0; i < 600 && !ok; i++ {
				resp, err := http.Get(u)
				if err == nil {
					resp.Body.Close()
					ok = resp.StatusCode == 200
				}
				if !ok {
					time.Sleep(200 * time.Millisecond)
				}
			}
			if !ok {
				ms.err = fmt.Errorf("%s not ready; mlserver:\n%s\nmlflow:\n%s", u, ms.mlserverLogs, mlflowLogs.String())
				return
			}
		}
	})
	if ms.err != nil {
		t.Fatal(ms.err)
	}
	return ms.oip, ms.mlflow
}

func TestMain(m *testing.M) {
	code := m.Run()
	if modelServers.stop != nil {
		modelServers.stop()
	}
	os.Exit(code)
}

// exchange is one request sent directly to the model server and through the proxy.
type exchange struct {
	path, ctype, body string
}

func send(t *testing.T, base string, x exchange) (int, http.Header, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", base+x.path, strings.NewReader(x.body))
	req.Header.Set("Content-Type", x.ctype)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// checkPassThrough sends each exchange directly and through the proxy (the model is deterministic) and checks
// the client gets exactly what the model server sent.
func checkPassThrough(t *testing.T, r *rig, upstream string, xs []exchange) {
	t.Helper()
	for _, x := range xs {
		ds, dh, db := send(t, upstream, x)
		ps, ph, pb := send(t, r.proxy.URL, x)
		if ds != ps || !bytes.Equal(db, pb) || dh.Get("Content-Type") != ph.Get("Content-Type") {
			t.Errorf("%s %s: direct %d %s %q, through the proxy %d %s %q", x.path, x.body, ds, dh.Get("Content-Type"), db, ps, ph.Get("Content-Type"), pb)
		}
	}
}

func TestMLServerOIP(t *testing.T) {
	oipURL, _ := startModelServers(t)
	for _, policy := range []string{FailClosed, SpoolPolicy} {
		t.Run(policy, func(t *testing.T) {
			r := newRigURL(t, policy, Config{}, oipURL)
			xs := []exchange{
				{"/v2/models/iris/infer", "application/json", `{"id":"r1","inputs":[{"name":"predict","shape":[2,4],"datatype":"FP64","data":[[5.1,3.5,1.4,0.2],[6.7,3.0,5.2,2.3]]}]}`},
				{"/v2/models/iris/versions/v1/infer", "application/json", `{"id":"r2","inputs":[{"name":"predict","shape":[1,4],"datatype":"FP64","data":[5.9,3.0,4.2,1.5]}]}`},
				// An error: wrong shape for the model. MLServer answers it; it must be recorded too.
				{"/v2/models/iris/infer", "application/json", `{"id":"r3","inputs":[{"name":"predict","shape":[1,2],"datatype":"FP64","data":[1,2]}]}`},
			}
			checkPassThrough(t, r, oipURL, xs)
			evs := r.waitEvents(t, len(xs))
			time.Sleep(50 * time.Millisecond)
			if evs = events(t, r.l); len(evs) != len(xs) {
				t.Fatalf("%d events for %d calls", len(evs), len(xs))
			}
			for i, e := range evs {
				if e.Envelope.Model["name"] != "iris" || e.Envelope.Attrs["requested_model"] != "iris" {
					t.Errorf("call %d: model %v attrs %v", i, e.Envelope.Model, e.Envelope.Attrs)
				}
				if e.Envelope.Attrs["request_id"] != fmt.Sprintf("r%d", i+1) {
					t.Errorf("call %d: request_id %v", i, e.Envelope.Attrs["request_id"])
				}
			}
			for i := 0; i < 2; i++ {
				if evs[i].Envelope.Model["version"] != "v1" || evs[i].Envelope.Attrs["outcome"] != "ok" {
					t.Errorf("call %d: %v %v", i, evs[i].Envelope.Model, evs[i].Envelope.Attrs)
				}
			}
			if got := string(evs[0].Payload["output"]); got != `{"predict":[0,2]}` {
				t.Errorf("output %s", got)
			}
			if evs[2].Envelope.Attrs["outcome"] == "ok" || evs[2].Envelope.Attrs["error_code"] == nil || len(evs[2].Payload["error"]) == 0 {
				t.Errorf("error call recorded as %v %s", evs[2].Envelope.Attrs, evs[2].Payload["error"])
			}
		})
	}
}

func TestMLflowInvocations(t *testing.T) {
	_, mlflowURL := startModelServers(t)
	for _, policy := range []string{FailClosed, SpoolPolicy} {
		t.Run(policy, func(t *testing.T) {
			r := newRigURL(t, policy, Config{Model: "iris-mlflow", ModelVersion: "3"}, mlflowURL)
			cols := `["sepal_length","sepal_width","petal_length","petal_width"]`
			xs := []exchange{
				{"/invocations", "application/json", `{"dataframe_split":{"columns":` + cols + `,"data":[[5.1,3.5,1.4,0.2],[6.7,3.0,5.2,2.3]]}}`},
				{"/invocations", "application/json", `{"dataframe_records":[{"sepal_length":5.1,"sepal_width":3.5,"petal_length":1.4,"petal_width":0.2}]}`},
				{"/invocations", "application/json", `{"instances":[{"sepal_length":6.7,"sepal_width":3.0,"petal_length":5.2,"petal_width":2.3}]}`},
				{"/invocations", "application/json", `{"inputs":{"sepal_length":[5.9],"sepal_width":[3.0],"petal_length":[4.2],"petal_width":[1.5]}}`},
				{"/invocations", "text/csv", "sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n"},
				{"/invocations", "application/json", `{"dataframe_split":{"columns":["a"],"data":[[1]]}}`}, // schema error
			}
			checkPassThrough(t, r, mlflowURL, xs)
			evs := r.waitEvents(t, len(xs))
			time.Sleep(50 * time.Millisecond)
			if evs = events(t, r.l); len(evs) != len(xs) {
				t.Fatalf("%d events for %d calls", len(evs), len(xs))
			}
			wantIn := []string{
				`[{"petal_length":1.4,"petal_width":0.2,"sepal_length":5.1,"sepal_width":3.5},{"petal_length":5.2,"petal_width":2.3,"sepal_length":6.7,"sepal_width":3}]`,
				`[{"petal_length":1.4,"petal_width":0.2,"sepal_length":5.1,"sepal_width":3.5}]`,
				`[{"petal_length":5.2,"petal_width":2.3,"sepal_length":6.7,"sepal_width":3}]`,
				`[{"petal_length":4.2,"petal_width":1.5,"sepal_length":5.9,"sepal_width":3}]`,
				`[{"petal_length":1.4,"petal_width":0.2,"sepal_length":5.1,"sepal_width":3.5}]`,
			}
			for i, e := range evs {
				if e.Envelope.Model["name"] != "iris-mlflow" || e.Envelope.Model["version"] != "3" || e.Envelope.Attrs["protocol"] != "mlflow" {
					t.Errorf("call %d: %v %v", i, e.Envelope.Model, e.Envelope.Attrs)
				}
				if i < len(wantIn) {
					if got := string(e.Payload["input"]); got != wantIn[i] {
						t.Errorf("call %d: input %s, want %s", i, got, wantIn[i])
					}
					if e.Envelope.Attrs["outcome"] != "ok" || len(e.Payload["output"]) == 0 {
						t.Errorf("call %d: %v output %s", i, e.Envelope.Attrs, e.Payload["output"])
					}
				}
			}
			if got := string(evs[0].Payload["output"]); got != "[0,2]" {
				t.Errorf("predictions %s", got)
			}
			last := evs[len(evs)-1]
			if last.Envelope.Attrs["outcome"] != "error_client" || last.Envelope.Attrs["error_code"] != "INVALID_PARAMETER_VALUE" {
				t.Errorf("schema error recorded as %v", last.Envelope.Attrs)
			}
			var e map[string]any
			if json.Unmarshal(last.Payload["error"], &e) != nil || e["message"] == nil {
				t.Errorf("error body %s", last.Payload["error"])
			}
		})
	}
}
