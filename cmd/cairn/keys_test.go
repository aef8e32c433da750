package main

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestKeysRotateReadBack is the acceptance of issue 3 for key rotation, through the API: payloads sealed
// under the old KEK are read back by a server restarted with only the new KEK, after `cairn keys rotate` and
// removal of the old KEK, and the store verifies with every payload opened. (testdata/script/keys.txtar covers
// the command's other paths; it runs under TestScripts, which has no GET helper.)
func TestKeysRotateReadBack(t *testing.T) {
	bin := filepath.Join(cliBinary(t), "cairn")
	dir := t.TempDir()
	env := append(os.Environ(), "XDG_STATE_HOME="+filepath.Join(dir, "state"), "CAIRN_KEK_FILE=", "CAIRN_KEYRING=")
	cairn := func(args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := cairn(args...)
		if err != nil {
			t.Fatalf("cairn %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	base := "http://127.0.0.1:" + port
	serve := func(kek string) (stop func()) {
		t.Helper()
		cmd := exec.Command(bin, "serve", "--data", "data", "--listen", "127.0.0.1:"+port, "--origin", "example.test/cairn", "--kek", kek)
		cmd.Dir, cmd.Env = dir, env
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		stopped := false
		stop = func() {
			if stopped {
				return
			}
			stopped = true
			cmd.Process.Signal(syscall.SIGINT)
			if err := cmd.Wait(); err != nil {
				t.Errorf("server: %v\n%s", err, out.String())
			}
		}
		t.Cleanup(stop)
		for deadline := time.Now().Add(20 * time.Second); ; {
			resp, err := http.Get(base + "/healthz")
			if err == nil {
				resp.Body.Close()
				return stop
			}
			if time.Now().After(deadline) {
				t.Fatalf("server did not come up\n%s", out.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	token := func() string {
		b, err := os.ReadFile(filepath.Join(dir, "data", "admin.token"))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	do := func(method, path, body string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		return resp.StatusCode, []byte(b.String())
	}

	if err := os.Mkdir(filepath.Join(dir, "keys"), 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "credit.yaml"), []byte("id: credit-scoring\nname: Credit scoring\nintended_purpose: Creditworthiness of natural persons applying for consumer loans\nprovider: Acme Bank AG\nannex_iii: \"5(b)\"\n"), 0o600)
	stop := serve("keys/kek-1")
	must("system", "apply", "-f", "credit.yaml", "--url", base, "--token-file", "data/admin.token")
	events := `{"type":"inference","model":{"name":"credit","version":"3"},"payload":{"subject":"applicant-17","output":{"score":712}}}
{"type":"inference","model":{"name":"credit","version":"3"},"payload":{"subject":"applicant-18","output":{"score":580}}}`
	if st, b := do("POST", "/v1/systems/credit-scoring/events", events); st != 200 {
		t.Fatalf("ingest: %d %s", st, b)
	}
	stop()

	out := must("keys", "rotate", "--data", "data", "--kek", "keys/kek-1", "--new-kek", "keys/kek-2")
	if !strings.Contains(out, "created key-encryption key: keys/kek-2") || !strings.Contains(out, "delete the old KEK keys/kek-1") {
		t.Errorf("rotate said:\n%s", out)
	}
	if fi, err := os.Stat(filepath.Join(dir, "keys", "kek-2")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("new KEK: %v %v", fi, err)
	}
	if err := os.Remove(filepath.Join(dir, "keys", "kek-1")); err != nil {
		t.Fatal(err)
	}
	if out := must("verify", "--data", "data", "--decrypt", "--kek", "keys/kek-2", "--full"); !strings.Contains(out, "verified: 4 entries checked") {
		t.Fatalf("verify after rotation:\n%s", out)
	}

	stop = serve("keys/kek-2")
	for i, subject := range map[int]string{1: "applicant-17", 2: "applicant-18"} {
		st, b := do("GET", "/v1/systems/credit-scoring/events/"+strconv.Itoa(i)+"?payload=true", "")
		if st != 200 {
			t.Fatalf("read back event %d: %d %s", i, st, b)
		}
		var r struct {
			Payload json.RawMessage `json:"payload"`
		}
		if err := json.Unmarshal(b, &r); err != nil || !strings.Contains(string(r.Payload), `"subject":"`+subject+`"`) {
			t.Fatalf("event %d payload = %s (%v)", i, r.Payload, err)
		}
	}
	// The offline rotation was recorded in _admin at start: who, and which KEK now wraps the keys.
	if st, b := do("GET", "/v1/systems/_admin/events/1", ""); st != 200 || !strings.Contains(string(b), `\"action\":\"kek_rotated\"`) &&
		!strings.Contains(string(b), `"action":"kek_rotated"`) || !strings.Contains(string(b), "cli:") {
		t.Errorf("_admin event 1 = %d %s, want the kek_rotated record", st, b)
	}
	// Ingest goes on under the new KEK in the same period.
	if st, b := do("POST", "/v1/systems/credit-scoring/events", `{"type":"inference","model":{"name":"credit","version":"3"},"payload":{"subject":"applicant-19","output":{"score":650}}}`); st != 200 {
		t.Fatalf("ingest after rotation: %d %s", st, b)
	}
	stop()
	// The rotation record, two access events to credit-scoring, one to _admin and one inference were added;
	// everything opens with the new KEK alone.
	if out := must("verify", "--data", "data", "--decrypt", "--kek", "keys/kek-2", "--full"); !strings.Contains(out, "verified: 9 entries checked") {
		t.Fatalf("final verify:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "keys", "kek")); err == nil {
		t.Error("a KEK was created inside the data directory")
	}
}
