package main

import (
	"bytes"
	"io"
	"io/fs"
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

// TestPlantedPersonalValuesStayOut plants raw personal values (a name, an IBAN, an e-mail address, a birth date)
// in events of a system whose field policy pseudonymises or generalises them, then looks for them everywhere a
// server writes: every file under the data directory (segments, projections, SQLite index and its WAL, key
// files, temporary files, the token vault — whose values are encrypted), the server's log, and every API answer,
// including decrypted payloads, except a dpo's re-identification. None may hold any of them, after ingest, restart,
// reindex and verify.
func TestPlantedPersonalValuesStayOut(t *testing.T) {
	bin := filepath.Join(cliBinary(t), "cairn")
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	planted := []string{"Jane Roe", "DE89370400440532013000", "jane.roe@example.com", "1984-05-17"}
	var serverLog bytes.Buffer
	start := func() (string, func()) {
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		addr := l.Addr().String()
		l.Close()
		cmd := exec.Command(bin, "serve", "--data", data, "--listen", addr, "--origin", "privacy.test/cairn")
		cmd.Stdout, cmd.Stderr = &serverLog, &serverLog
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		url := "http://" + addr
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if resp, err := http.Get(url + "/healthz"); err == nil {
				resp.Body.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("server did not start:\n%s", serverLog.String())
			}
		}
		return url, func() {
			cmd.Process.Signal(syscall.SIGINT)
			cmd.Wait()
		}
	}
	var answers bytes.Buffer
	call := func(url, method, path, body string, want int) []byte {
		t.Helper()
		tok, _ := os.ReadFile(filepath.Join(data, "admin.token"))
		req, _ := http.NewRequest(method, url+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("%s %s = %d %s", method, path, resp.StatusCode, b)
		}
		answers.Write(b)
		return b
	}
	url, stop := start()
	call(url, "POST", "/v1/systems", `{"id":"credit","name":"Credit","intended_purpose":"creditworthiness","provider":"Acme",
	  "field_policy":{"domain":"customers","fields":{
	    "subject":{"action":"pseudonym"},
	    "input.name":{"action":"vault"},
	    "input.iban":{"action":"vault","domain":"accounts"},
	    "input.email":{"action":"pseudonym"},
	    "input.birth_date":{"action":"generalize","to":"year"},
	    "rationale":{"action":"drop"}}}}`, 201)
	var body strings.Builder
	for i := 0; i < 50; i++ {
		body.WriteString(`{"type":"inference","model":{"name":"credit","version":"3"},"payload":{"subject":"jane.roe@example.com",` +
			`"input":{"name":"Jane Roe","iban":"DE89370400440532013000","email":"jane.roe@example.com","birth_date":"1984-05-17","income":` + strconv.Itoa(30000+i) + `},` +
			`"rationale":"Jane Roe asked twice","output":{"score":` + strconv.Itoa(600+i) + `}}}` + "\n")
	}
	call(url, "POST", "/v1/systems/credit/events", body.String(), 200)
	// A value sent in a shape the policy cannot handle is refused, and the refusal does not echo it.
	call(url, "POST", "/v1/systems/credit/events", `[{"type":"inference","model":{"name":"credit","version":"3"},"payload":{"input":{"birth_date":{"d":"1984-05-17"}},"output":1}}]`, 422)
	for _, i := range []string{"1", "25", "50"} {
		b := call(url, "GET", "/v1/systems/credit/events/"+i+"?payload=true", "", 200)
		if !strings.Contains(string(b), `"pn:`) {
			t.Errorf("payload %s shows no pseudonym: %s", i, b)
		}
	}
	// A dpo reverses the vaulted name, for a stated purpose: the only answer that may hold a planted value, so it
	// is kept out of the answers checked below.
	b := call(url, "GET", "/v1/systems/credit/events/1?payload=true", "", 200)
	i := bytes.Index(b, []byte(`"name":"pn:`))
	if i < 0 {
		t.Fatalf("no vaulted name in %s", b)
	}
	pn := string(b[i+len(`"name":"`) : i+len(`"name":"`)+25])
	tok := call(url, "POST", "/v1/tokens", `{"principal":"dpo-1","roles":["dpo"]}`, 201)
	dpoToken := string(tok[bytes.Index(tok, []byte(`"token":"`))+9:])
	dpoToken = dpoToken[:strings.IndexByte(dpoToken, '"')]
	req, _ := http.NewRequest("POST", url+"/v1/systems/credit/reidentify", strings.NewReader(`{"pseudonyms":["`+pn+`"],"purpose":"subject access request 42"}`))
	req.Header.Set("Authorization", "Bearer "+dpoToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(rb), `"Jane Roe"`) {
		t.Errorf("re-identification = %d %s", resp.StatusCode, rb)
	}
	stop()
	url, stop = start() // restart
	call(url, "GET", "/v1/systems/credit/events/2?payload=true", "", 200)
	stop()
	for _, args := range [][]string{{"reindex", "--data", data}, {"verify", "--data", data, "--full", "--decrypt", "--state", filepath.Join(dir, "state.json")}} {
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("cairn %s: %v\n%s", args[0], err, out)
		}
		serverLog.Write(out)
	}
	check := func(where string, b []byte) {
		for _, p := range planted {
			if bytes.Contains(b, []byte(p)) {
				t.Errorf("%q found in %s", p, where)
			}
		}
	}
	files := 0
	filepath.WalkDir(data, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("read %s: %v", path, err)
			return nil
		}
		files++
		check(path, b)
		return nil
	})
	if files < 8 {
		t.Errorf("only %d files under the data directory were checked", files)
	}
	check("the server's and tools' output", serverLog.Bytes())
	check("API answers", answers.Bytes())
}
