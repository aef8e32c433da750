package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// proc is a cairn subprocess that announces its address on a line starting with prefix.
type proc struct {
	cmd    *exec.Cmd
	exited chan struct{}
	out    *killLog
}

func startProc(t *testing.T, prefix string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: cairnCmd(t, args...), exited: make(chan struct{}), out: &killLog{}}
	pr, pw := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = io.MultiWriter(pw, p.out), p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive a test that timed out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); pw.Close(); close(p.exited) }()
	t.Cleanup(func() { p.cmd.Process.Kill(); <-p.exited })
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), prefix) {
				close(ready)
				break
			}
		}
		io.Copy(io.Discard, pr)
	}()
	select {
	case <-ready:
	case <-p.exited:
		t.Fatalf("%v exited at start:\n%s", args, p.out.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("%v did not start:\n%s", args, p.out.String())
	}
	return p
}

func (p *proc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type logEvent struct {
	Envelope struct {
		Type  string         `json:"type"`
		Attrs map[string]any `json:"attrs"`
	} `json:"envelope"`
	Payload map[string]json.RawMessage `json:"payload"`
}

// readLog reads a system's inference and anomaly events with their payloads.
func readLog(t *testing.T, base, token, sys string) []logEvent {
	t.Helper()
	get := func(path string) (int, []byte) {
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	// Every read is recorded as an access event, so the events are found by a query first.
	_, qb := get("/v1/systems/" + sys + "/events?limit=1000")
	var q struct {
		Events []struct {
			Index uint64 `json:"index"`
			Type  string `json:"type"`
		} `json:"events"`
	}
	if err := json.Unmarshal(qb, &q); err != nil {
		t.Fatal(err)
	}
	var out []logEvent
	for _, row := range q.Events {
		if row.Type != "inference" && row.Type != "anomaly" {
			continue
		}
		_, b := get(fmt.Sprintf("/v1/systems/%s/events/%d?payload=true", sys, row.Index))
		var e logEvent
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

// TestProxyLedgerOutage runs `cairn serve` and two `cairn proxy` processes, one per failure policy, kills the
// server with SIGKILL, keeps calling, restarts it and checks what each policy promised.
func TestProxyLedgerOutage(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	addr := freeAddr(t)
	serve := func() *proc {
		return startProc(t, "cairn serving on", "serve", "--data", data, "--listen", addr, "--origin", "proxy.test/cairn", "--checkpoint-interval", "5ms")
	}
	srv := serve()
	base := "http://" + addr
	tokb, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(tokb))
	for _, def := range []string{
		`{"id":"closed","name":"C","intended_purpose":"p","provider":"A","capture":{"failure_policy":"fail-closed"}}`,
		`{"id":"spooled","name":"S","intended_purpose":"p","provider":"A","capture":{"failure_policy":"spool"}}`,
	} {
		req, _ := http.NewRequest("POST", base+"/v1/systems", strings.NewReader(def))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 201 {
			t.Fatalf("register: %v %v", resp, err)
		}
		resp.Body.Close()
	}
	var calls atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"model_name":"iris","model_version":"1","outputs":[{"name":"p","shape":[1],"datatype":"INT64","data":[1]}]}`)
	}))
	defer up.Close()
	proxies := map[string]string{}
	for _, sys := range []string{"closed", "spooled"} {
		a := freeAddr(t)
		// The proxy's policy comes from the system definition: no --failure-policy here.
		startProc(t, "cairn proxy on", "proxy", "--upstream", up.URL, "--system", sys, "--listen", a, "--url", base,
			"--token-file", filepath.Join(data, "admin.token"), "--spool", filepath.Join(dir, "spool-"+sys))
		proxies[sys] = "http://" + a
	}
	infer := func(sys string, i int) int {
		body := fmt.Sprintf(`{"id":"c%d","inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[%d]}]}`, i, i)
		resp, err := http.Post(proxies[sys]+"/v2/models/iris/infer", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for i := 0; i < 3; i++ {
		for _, sys := range []string{"closed", "spooled"} {
			if st := infer(sys, i); st != 200 {
				t.Fatalf("%s call %d: %d", sys, i, st)
			}
		}
	}

	// The spool delivers asynchronously: let it catch up, so the outage below delays exactly the calls made in it.
	for i := 0; len(readLog(t, base, token, "spooled")) < 3; i++ {
		if i > 600 {
			t.Fatal("the spool did not deliver")
		}
		time.Sleep(20 * time.Millisecond)
	}
	srv.kill()
	before := calls.Load()
	for i := 3; i < 8; i++ {
		if st := infer("closed", i); st != 503 {
			t.Fatalf("fail-closed with the ledger down answered %d, want 503", st)
		}
	}
	// The first call found the ledger down after the upstream answered (withheld); the rest were not forwarded.
	if n := calls.Load() - before; n > 1 {
		t.Errorf("the upstream was called %d times while the ledger was down", n)
	}
	for i := 3; i < 13; i++ {
		if st := infer("spooled", i); st != 200 {
			t.Fatalf("spool with the ledger down answered %d, want 200", st)
		}
	}

	srv = serve()
	wait := func(sys string, n int) []logEvent {
		for i := 0; i < 600; i++ {
			if evs := readLog(t, base, token, sys); len(evs) >= n && evs[len(evs)-1].Envelope.Type == "anomaly" {
				return evs
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("%s: log holds %d events, want %d ending with the gap", sys, len(readLog(t, base, token, sys)), n)
		return nil
	}
	closed := wait("closed", 3+5+1)
	var outcomes []string
	for _, e := range closed {
		outcomes = append(outcomes, fmt.Sprint(e.Envelope.Attrs["outcome"], e.Envelope.Attrs["kind"]))
	}
	want := "ok<nil>,ok<nil>,ok<nil>,withheld<nil>,refused<nil>,refused<nil>,refused<nil>,refused<nil>,<nil>capture_gap"
	if n := calls.Load() - before; n == 0 {
		// Had the ledger's death been noticed before the first call, that call is refused too.
		want = strings.Replace(want, "withheld", "refused", 1)
	}
	if got := strings.Join(outcomes, ","); got != want {
		t.Errorf("fail-closed log: %s\nwant %s", got, want)
	}
	spooled := wait("spooled", 3+10+1)
	if len(spooled) != 14 {
		t.Fatalf("spool log holds %d events, want 14", len(spooled))
	}
	for i := 0; i < 13; i++ {
		if got, want := string(spooled[i].Payload["input"]), fmt.Sprintf(`{"x":[%d]}`, i); got != want {
			t.Fatalf("spooled event %d holds %s, want %s: lost or out of order", i, got, want)
		}
	}
	if g := spooled[13]; g.Envelope.Attrs["kind"] != "capture_gap" || g.Envelope.Attrs["value"] != 10.0 {
		t.Errorf("gap record %v, want 10 delayed events", g.Envelope.Attrs)
	}
}
