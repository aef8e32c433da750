package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/ledger"
	"github.com/cairn-ai/cairn/internal/seal"
	"github.com/cairn-ai/cairn/internal/store/local"
)

// testLedger is an in-process ledger with one registered system, "credit".
func testLedger(t testing.TB, policy string) *ledger.Ledger {
	t.Helper()
	dir := t.TempDir()
	k := make([]byte, 32)
	rand.Read(k)
	kek, _ := seal.NewKEK(k)
	keys, _ := seal.OpenKeyring(filepath.Join(dir, "keys"), kek)
	_, sk, _ := ed25519.GenerateKey(rand.Reader)
	st, err := local.Open(dir, local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := ledger.Open(context.Background(), ledger.Config{Origin: "proxy.test", CheckpointInterval: 5 * time.Millisecond}, st, keys, sk)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	def := `{"id":"credit","name":"Credit","intended_purpose":"scoring","provider":"Acme"` + policy + `}`
	if _, _, err := l.Register(context.Background(), []byte(def), "test"); err != nil {
		t.Fatal(err)
	}
	return l
}

func testSpoolKey() []byte {
	k := make([]byte, 32)
	rand.Read(k)
	return k
}

// recorded is an event read back from the log, its payload opened.
type recorded struct {
	Index    uint64
	Envelope struct {
		ID    string            `json:"id"`
		Type  string            `json:"type"`
		Model map[string]string `json:"model"`
		Refs  []string          `json:"refs"`
		Attrs map[string]any    `json:"attrs"`
	}
	Payload map[string]json.RawMessage
}

// events returns the log's events after the system definition.
func events(t testing.TB, l *ledger.Ledger) []recorded {
	t.Helper()
	lg, err := l.Log("credit")
	if err != nil {
		t.Fatal(err)
	}
	n, _ := lg.Tree()
	var out []recorded
	for i := uint64(1); i < n; i++ {
		e, err := lg.Entry(context.Background(), i)
		if err != nil {
			t.Fatal(err)
		}
		r := recorded{Index: i}
		if err := json.Unmarshal(e.Envelope, &r.Envelope); err != nil {
			t.Fatal(err)
		}
		if e.Sealed != nil {
			pt, err := lg.OpenPayload(e)
			if err != nil {
				t.Fatal(err)
			}
			json.Unmarshal(pt, &r.Payload)
		}
		out = append(out, r)
	}
	return out
}

// switchSink is a sink that can be taken down, standing in for an unreachable ledger in unit tests.
type switchSink struct {
	Sink
	down atomic.Bool
}

func (s *switchSink) Append(ctx context.Context, evs [][]byte) error {
	if s.down.Load() {
		return errors.New("connection refused")
	}
	return s.Sink.Append(ctx, evs)
}

type rig struct {
	l     *ledger.Ledger
	sink  *switchSink
	rec   *Recorder
	proxy *httptest.Server
	up    *httptest.Server // nil in front of a real model server
	calls *atomic.Int64
}

// recordsPolicy pseudonymises the name column of record-shaped inputs.
const recordsPolicy = `,"field_policy":{"default":"keep","domain":"customers","fields":{"input[].name":{"action":"pseudonym"}}}`

func newRig(t *testing.T, policy string, cfg Config, upstream http.Handler, fieldPolicy ...string) *rig {
	t.Helper()
	var calls atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		calls.Add(1)
		upstream.ServeHTTP(w, req)
	}))
	t.Cleanup(up.Close)
	r := newRigURL(t, policy, cfg, up.URL, fieldPolicy...)
	r.up, r.calls = up, &calls
	return r
}

// newRigURL puts a proxy recording into an in-process ledger in front of an upstream URL.
func newRigURL(t *testing.T, policy string, cfg Config, upstream string, fieldPolicy ...string) *rig {
	t.Helper()
	r := &rig{l: testLedger(t, strings.Join(fieldPolicy, ""))}
	r.sink = &switchSink{Sink: &LedgerSink{Ledger: r.l, System: "credit", Actor: "proxy"}}
	sp, err := OpenSpool(t.TempDir(), testSpoolKey(), 0)
	if err != nil {
		t.Fatal(err)
	}
	r.rec = NewRecorder(r.sink, sp, policy, nil)
	cfg.Upstream, _ = url.Parse(upstream)
	p, err := New(cfg, r.rec)
	if err != nil {
		t.Fatal(err)
	}
	r.proxy = httptest.NewServer(p)
	t.Cleanup(func() {
		r.proxy.Close()
		r.rec.Close()
		sp.Close()
	})
	return r
}

// waitEvents waits until the log holds n events after the definition (the spool delivers asynchronously).
func (r *rig) waitEvents(t *testing.T, n int) []recorded {
	t.Helper()
	for i := 0; i < 2000; i++ {
		if ev := events(t, r.l); len(ev) >= n {
			return ev
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("log holds %d events, want %d", len(events(t, r.l)), n)
	return nil
}

func post(t *testing.T, url, ctype, body string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Content-Type", ctype)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, b
}

const oipResponse = `{"model_name":"iris","model_version":"v3","id":"c-1","outputs":[{"name":"predict","shape":[2,1],"datatype":"INT64","data":[0,2]}]}`

func oipUpstream() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if strings.HasSuffix(r.URL.Path, "/infer") {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Upstream", "yes")
			io.WriteString(w, oipResponse)
			return
		}
		w.WriteHeader(200)
		io.WriteString(w, "ready")
	})
}

func TestOIPRecordedOncePerCall(t *testing.T) {
	for _, policy := range []string{FailClosed, SpoolPolicy} {
		t.Run(policy, func(t *testing.T) {
			r := newRig(t, policy, Config{}, oipUpstream())
			req := `{"id":"c-1","inputs":[{"name":"predict","shape":[2,4],"datatype":"FP32","data":[[5.1,3.5,1.4,0.2],[6.2,3.4,5.4,2.3]]}]}`
			tp := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
			resp, body := post(t, r.proxy.URL+"/v2/models/iris/versions/3/infer", "application/json", req, "Traceparent", tp, "X-Request-Id", "req-42")
			if resp.StatusCode != 200 || string(body) != oipResponse || resp.Header.Get("X-Upstream") != "yes" {
				t.Fatalf("client got %d %q %v, want the upstream's response", resp.StatusCode, body, resp.Header)
			}
			// Health checks pass through unrecorded.
			hr, err := http.Get(r.proxy.URL + "/v2/health/ready")
			if err != nil || hr.StatusCode != 200 {
				t.Fatalf("health: %v %v", hr, err)
			}
			ev := r.waitEvents(t, 1)
			time.Sleep(20 * time.Millisecond)
			if ev = events(t, r.l); len(ev) != 1 {
				t.Fatalf("%d events, want 1", len(ev))
			}
			e := ev[0]
			if e.Envelope.Model["name"] != "iris" || e.Envelope.Model["version"] != "v3" {
				t.Errorf("model %v, want the served iris v3", e.Envelope.Model)
			}
			a := e.Envelope.Attrs
			for k, want := range map[string]any{"protocol": "oip-v2", "status": 200.0, "outcome": "ok", "requested_model": "iris",
				"requested_version": "3", "served_version": "v3", "traceparent": tp, "request_id": "req-42"} {
				if a[k] != want {
					t.Errorf("attr %s = %v, want %v", k, a[k], want)
				}
			}
			if _, ok := a["latency_ms"]; !ok {
				t.Error("no latency_ms")
			}
			if _, ok := a["ttfb_ms"]; !ok {
				t.Error("no ttfb_ms")
			}
			if got := string(e.Payload["input"]); got != `{"predict":[[5.1,3.5,1.4,0.2],[6.2,3.4,5.4,2.3]]}` {
				t.Errorf("input %s", got)
			}
			if got := string(e.Payload["output"]); got != `{"predict":[0,2]}` {
				t.Errorf("output %s", got)
			}
		})
	}
}

func TestOIPBinaryTensorsByDigest(t *testing.T) {
	r := newRig(t, SpoolPolicy, Config{}, oipUpstream())
	head := `{"inputs":[{"name":"img","shape":[4],"datatype":"UINT8","parameters":{"binary_data_size":4}}]}`
	body := head + "\x01\x02\x03\x04"
	req, _ := http.NewRequest("POST", r.proxy.URL+"/v2/models/iris/infer", strings.NewReader(body))
	req.Header.Set("Inference-Header-Content-Length", fmt.Sprint(len(head)))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatal(resp, err)
	}
	resp.Body.Close()
	e := r.waitEvents(t, 1)[0]
	var in map[string]map[string]any
	json.Unmarshal(e.Payload["input"], &in)
	// sha256 of 01 02 03 04
	if in["img"]["sha256"] != "9f64a747e1b97f131fabb6b447296c9b6f0201e79fb3c5356e6c77e89b6a806a" || in["img"]["size"] != 4.0 {
		t.Errorf("binary tensor recorded as %v", in["img"])
	}
}

func TestMLflowShapesBecomeRecords(t *testing.T) {
	up := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"predictions": [1, 0]}`)
	})
	r := newRig(t, FailClosed, Config{Model: "credit-model", ModelVersion: "7"}, up, recordsPolicy)
	bodies := map[string]string{
		"dataframe_split":   `{"dataframe_split":{"columns":["age","name"],"data":[[41,"Jane"],[29,"Joe"]]}}`,
		"dataframe_records": `{"dataframe_records":[{"age":41,"name":"Jane"},{"age":29,"name":"Joe"}]}`,
		"instances":         `{"instances":[{"age":41,"name":"Jane"},{"age":29,"name":"Joe"}]}`,
		"inputs":            `{"inputs":{"age":[41,29],"name":["Jane","Joe"]},"params":{"threshold":0.5}}`,
	}
	for _, f := range []string{"dataframe_split", "dataframe_records", "instances", "inputs"} {
		resp, body := post(t, r.proxy.URL+"/invocations", "application/json", bodies[f])
		if resp.StatusCode != 200 || string(body) != `{"predictions": [1, 0]}` {
			t.Fatalf("%s: %d %s", f, resp.StatusCode, body)
		}
	}
	evs := events(t, r.l)
	if len(evs) != 4 {
		t.Fatalf("%d events, want 4", len(evs))
	}
	for i, f := range []string{"dataframe_split", "dataframe_records", "instances", "inputs"} {
		e := evs[i]
		if e.Envelope.Model["name"] != "credit-model" || e.Envelope.Model["version"] != "7" {
			t.Errorf("%s: model %v", f, e.Envelope.Model)
		}
		// The field policy pseudonymised input[].name in every shape.
		var recs []map[string]any
		json.Unmarshal(e.Payload["input"], &recs)
		if len(recs) != 2 || recs[0]["age"] != 41.0 || !strings.HasPrefix(fmt.Sprint(recs[0]["name"]), "pn:") {
			t.Errorf("%s: input %s, want records with a pseudonymised name", f, e.Payload["input"])
		}
		if string(e.Payload["output"]) != "[1,0]" {
			t.Errorf("%s: output %s", f, e.Payload["output"])
		}
		if !strings.Contains(string(e.Payload["input_meta"]), f) {
			t.Errorf("%s: input_meta %s", f, e.Payload["input_meta"])
		}
	}
}

func TestUpstreamErrorsRecorded(t *testing.T) {
	up := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(400)
		io.WriteString(w, `{"error_code":"BAD_REQUEST","message":"column x missing"}`)
	})
	r := newRig(t, FailClosed, Config{Model: "m", ModelVersion: "1"}, up)
	resp, body := post(t, r.proxy.URL+"/invocations", "application/json", `{"instances":[[1]]}`)
	if resp.StatusCode != 400 || !strings.Contains(string(body), "column x missing") {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	e := events(t, r.l)[0]
	if e.Envelope.Attrs["error_code"] != "BAD_REQUEST" || e.Envelope.Attrs["outcome"] != "error_client" || e.Envelope.Attrs["status"] != 400.0 {
		t.Errorf("attrs %v", e.Envelope.Attrs)
	}
	if !strings.Contains(string(e.Payload["error"]), "column x missing") {
		t.Errorf("payload error %s", e.Payload["error"])
	}

	// The upstream is down: the client gets 502 and the failure is recorded.
	r.up.Close()
	resp, _ = post(t, r.proxy.URL+"/invocations", "application/json", `{"instances":[[1]]}`)
	if resp.StatusCode != 502 {
		t.Fatalf("status %d, want 502", resp.StatusCode)
	}
	evs := events(t, r.l)
	if len(evs) != 2 || evs[1].Envelope.Attrs["outcome"] != "upstream_unreachable" || evs[1].Envelope.Attrs["error_code"] != "upstream_unreachable" {
		t.Fatalf("events %+v", evs)
	}
}

func TestFailClosedLedgerDown(t *testing.T) {
	r := newRig(t, FailClosed, Config{}, oipUpstream())
	url := r.proxy.URL + "/v2/models/iris/infer"
	req := `{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}`
	if resp, _ := post(t, url, "application/json", req); resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	r.sink.down.Store(true)
	// The call in flight when the ledger fails: upstream answered, response withheld.
	resp, body := post(t, url, "application/json", req)
	if resp.StatusCode != 503 || bytes.Contains(body, []byte("model_name")) {
		t.Fatalf("ledger down: %d %s, want 503 without the upstream's answer", resp.StatusCode, body)
	}
	calls := r.calls.Load()
	// Later calls are refused without reaching the upstream.
	for i := 0; i < 3; i++ {
		if resp, _ := post(t, url, "application/json", req); resp.StatusCode != 503 {
			t.Fatalf("status %d, want 503", resp.StatusCode)
		}
	}
	if r.calls.Load() != calls {
		t.Errorf("upstream called %d times while the ledger was down", r.calls.Load()-calls)
	}
	r.sink.down.Store(false)
	evs := r.waitEvents(t, 6) // ok + withheld + 3 refused + gap
	var outcomes []string
	for _, e := range evs {
		if e.Envelope.Type == "anomaly" {
			outcomes = append(outcomes, "gap")
			if e.Envelope.Attrs["kind"] != "capture_gap" || string(e.Payload["refused_calls"]) != "4" {
				t.Errorf("gap %v %s", e.Envelope.Attrs, e.Payload["refused_calls"])
			}
			continue
		}
		outcomes = append(outcomes, fmt.Sprint(e.Envelope.Attrs["outcome"]))
	}
	if got := strings.Join(outcomes, ","); got != "ok,withheld,refused,refused,refused,gap" {
		t.Fatalf("recorded %s", got)
	}
	// Back to normal.
	for i := 0; i < 100 && !r.rec.Available(); i++ {
		time.Sleep(5 * time.Millisecond)
	}
	if resp, _ := post(t, url, "application/json", req); resp.StatusCode != 200 {
		t.Fatalf("after recovery: %d", resp.StatusCode)
	}
}

func TestSpoolKeepsOrderAndRecordsGap(t *testing.T) {
	r := newRig(t, SpoolPolicy, Config{}, oipUpstream())
	url := r.proxy.URL + "/v2/models/iris/infer"
	r.sink.down.Store(true)
	for i := 0; i < 20; i++ {
		req := fmt.Sprintf(`{"id":"n%d","inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[%d]}]}`, i, i)
		if resp, _ := post(t, url, "application/json", req); resp.StatusCode != 200 {
			t.Fatalf("spool mode answered %d while the ledger was down", resp.StatusCode)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if n := len(events(t, r.l)); n != 0 {
		t.Fatalf("%d events recorded while down", n)
	}
	r.sink.down.Store(false)
	evs := r.waitEvents(t, 21)
	for i := 0; i < 20; i++ {
		if got := string(evs[i].Payload["input"]); got != fmt.Sprintf(`{"x":[%d]}`, i) {
			t.Fatalf("event %d holds %s: order lost", i, got)
		}
	}
	if evs[20].Envelope.Type != "anomaly" || evs[20].Envelope.Attrs["value"] != 20.0 {
		t.Fatalf("last event %+v, want the gap with 20 delayed events", evs[20].Envelope)
	}
}

// TestStreamChunkByChunk: the upstream sends its second chunk only after the client has received the first
// through the proxy, so a proxy that held the stream back would deadlock here.
func TestStreamChunkByChunk(t *testing.T) {
	for _, policy := range []string{FailClosed, SpoolPolicy} {
		t.Run(policy, func(t *testing.T) {
			got1 := make(chan struct{})
			var once sync.Once
			up := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "text/event-stream")
				fl := w.(http.Flusher)
				io.WriteString(w, `data: {"id":"c1","object":"chat.completion.chunk","model":"llm-2026","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"}}]}`+"\n\n")
				fl.Flush()
				select {
				case <-got1:
				case <-time.After(30 * time.Second):
					return
				}
				io.WriteString(w, `data: {"id":"c1","object":"chat.completion.chunk","model":"llm-2026","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}`+"\n\n")
				io.WriteString(w, `data: {"id":"c1","object":"chat.completion.chunk","model":"llm-2026","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}`+"\n\n")
				io.WriteString(w, "data: [DONE]\n\n")
			})
			r := newRig(t, policy, Config{}, up)
			req, _ := http.NewRequest("POST", r.proxy.URL+"/v1/chat/completions", strings.NewReader(
				`{"model":"llm","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Say hello"}]}`))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(resp.Body)
			line, _ := br.ReadString('\n')
			if !strings.Contains(line, `"Hel"`) {
				t.Fatalf("first line %q", line)
			}
			once.Do(func() { close(got1) })
			rest, _ := io.ReadAll(br)
			resp.Body.Close()
			if !strings.Contains(string(rest), "[DONE]") {
				t.Fatalf("stream cut: %q", rest)
			}
			evs := r.waitEvents(t, 2)
			rq, cm := evs[0], evs[1]
			if rq.Envelope.Attrs["part"] != "request" || cm.Envelope.Attrs["part"] != "completion" || len(cm.Envelope.Refs) != 1 || cm.Envelope.Refs[0] != rq.Envelope.ID {
				t.Fatalf("parts %v / %v refs %v", rq.Envelope.Attrs, cm.Envelope.Attrs, cm.Envelope.Refs)
			}
			if !strings.Contains(string(rq.Payload["input"]), "Say hello") {
				t.Errorf("request input %s", rq.Payload["input"])
			}
			var out []map[string]any
			json.Unmarshal(cm.Payload["output"], &out)
			if len(out) != 1 || out[0]["content"] != "Hello" || out[0]["finish_reason"] != "stop" {
				t.Errorf("output %s", cm.Payload["output"])
			}
			u, _ := cm.Envelope.Attrs["usage"].(map[string]any)
			if u["completion_tokens"] != 2.0 || u["total_tokens"] != 7.0 {
				t.Errorf("usage %v", cm.Envelope.Attrs["usage"])
			}
			if cm.Envelope.Model["name"] != "llm-2026" || cm.Envelope.Attrs["requested_model"] != "llm" {
				t.Errorf("model %v attrs %v", cm.Envelope.Model, cm.Envelope.Attrs)
			}
		})
	}
}

// TestSpoolOlderThanIdempotencyWindow: events held in the spool longer than the ledger remembers ids are
// delivered under fresh ids, with their links rewritten, not substituted or lost.
func TestSpoolOlderThanIdempotencyWindow(t *testing.T) {
	r := newRig(t, SpoolPolicy, Config{}, oipUpstream())
	old := time.Now().Add(-30 * time.Minute)
	id1, id2 := event.NewV7(old).String(), event.NewV7(old.Add(time.Millisecond)).String()
	r.rec.Defer([]byte(`{"id":"` + id1 + `","type":"inference","model":{"name":"m","version":"1"},"attrs":{"part":"request"},"payload":{"input":1}}`))
	r.rec.Defer([]byte(`{"id":"` + id2 + `","type":"inference","model":{"name":"m","version":"1"},"refs":["` + id1 + `"],"attrs":{"part":"completion"},"payload":{"output":2}}`))
	evs := r.waitEvents(t, 2)
	if evs[0].Envelope.ID == id1 || evs[1].Envelope.ID == id2 {
		t.Fatalf("ids not renewed: %s %s", evs[0].Envelope.ID, evs[1].Envelope.ID)
	}
	if len(evs[1].Envelope.Refs) != 1 || evs[1].Envelope.Refs[0] != evs[0].Envelope.ID {
		t.Fatalf("completion refs %v, want the request's new id %s", evs[1].Envelope.Refs, evs[0].Envelope.ID)
	}
	if string(evs[0].Payload["input"]) != "1" || string(evs[1].Payload["output"]) != "2" {
		t.Fatalf("content lost: %s %s", evs[0].Payload["input"], evs[1].Payload["output"])
	}
}

// TestSpoolWriteFailureKeepsEvents: when the spool cannot take events (here: closed, as a full disk would
// refuse them), they are kept in memory and delivered, not dropped.
func TestSpoolWriteFailureKeepsEvents(t *testing.T) {
	r := newRig(t, SpoolPolicy, Config{}, oipUpstream())
	r.rec.spool.Close()
	for i := 0; i < 5; i++ {
		body := fmt.Sprintf(`{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[%d]}]}`, i)
		if resp, _ := post(t, r.proxy.URL+"/v2/models/iris/infer", "application/json", body); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	evs := r.waitEvents(t, 5)
	for i, e := range evs[:5] {
		if got := string(e.Payload["input"]); got != fmt.Sprintf(`{"x":[%d]}`, i) {
			t.Fatalf("event %d holds %s", i, got)
		}
	}
	if r.rec.Stats.InMemory.Load() != 5 {
		t.Errorf("%d events went through memory, want 5", r.rec.Stats.InMemory.Load())
	}
}
