package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-ai/cairn/internal/event"
)

// TestKillMidIngest is the durability acceptance test of the server: it SIGKILLs `cairn serve` while many
// clients ingest, restarts it on the same data directory, retries the requests that got no answer with the
// same event ids, and finally checks that every acknowledged event is stored exactly once at the index it was
// acknowledged with, that the log has no gaps and no duplicate ids, and that `cairn verify --full` passes.
func TestKillMidIngest(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("needs SIGKILL and SIGTERM")
	}
	rounds := 20
	if testing.Short() {
		rounds = 3
	}
	bin := killBinary(t)
	data := t.TempDir()
	k := &killBook{acked: map[string]uint64{}}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	srv := killStart(t, bin, data)
	token, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	k.token = strings.TrimSpace(string(token))
	if st, b, err := srv.post(k.token, "/v1/systems", []byte(`{"id":"crash","name":"x","intended_purpose":"y","provider":"z"}`)); err != nil || st != http.StatusCreated {
		t.Fatalf("register: %d %s %v", st, b, err)
	}
	for round := range rounds {
		if round > 0 {
			srv = killStart(t, bin, data)
		}
		k.retry(t, srv, k.token)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 16 {
			wg.Go(func() { k.write(t, srv, k.token, rand.New(rand.NewPCG(seed+uint64(round), uint64(w))), stop) })
		}
		time.Sleep(time.Duration(50+rng.IntN(350)) * time.Millisecond)
		srv.kill(t)
		close(stop)
		wg.Wait()
		if t.Failed() {
			t.Fatalf("round %d:\n%s", round, srv.log.String())
		}
	}

	srv = killStart(t, bin, data)
	k.retry(t, srv, k.token)
	n := k.checkLog(t, srv)
	srv.term(t)
	t.Logf("%d rounds: %d events acknowledged, %d retried after a kill (%d of them found already stored), log of %d entries",
		rounds, len(k.acked), k.retried, k.dups, n)

	out, err := exec.Command(bin, "verify", "--data", data, "--full", "--state", filepath.Join(t.TempDir(), "verify.json")).CombinedOutput()
	if err != nil {
		t.Fatalf("cairn verify --full: %v\n%s", err, out)
	}
}

// killBinary builds cairn into a temporary directory.
func killBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cairn")
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		gobin = "go"
	}
	if out, err := exec.Command(gobin, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// killServer is a running `cairn serve`.
type killServer struct {
	cmd    *exec.Cmd
	url    string
	log    *killLog
	exited chan struct{}
	err    error
	client *http.Client
}

// killLog collects a server's output and reports the address it announces.
type killLog struct {
	mu   sync.Mutex
	b    bytes.Buffer
	line []byte
	addr chan string
}

func (l *killLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Write(p)
	l.line = append(l.line, p...)
	for {
		i := bytes.IndexByte(l.line, '\n')
		if i < 0 {
			break
		}
		if rest, ok := strings.CutPrefix(string(l.line[:i]), "cairn serving on "); ok && l.addr != nil {
			l.addr <- strings.Fields(rest)[0]
			l.addr = nil
		}
		l.line = l.line[i+1:]
	}
	return len(p), nil
}

func (l *killLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// killStart starts the server on a port of its choosing and waits until it says where it listens.
func killStart(t *testing.T, bin, data string) *killServer {
	t.Helper()
	return startCairn(t, bin, nil, "serve", "--data", data, "--listen", "127.0.0.1:0")
}

// startCairn runs bin with args (a serve command listening on port 0), with env added to the environment,
// and waits until it says where it listens.
func startCairn(t *testing.T, bin string, env []string, args ...string) *killServer {
	t.Helper()
	addr := make(chan string, 1)
	s := &killServer{log: &killLog{addr: addr}, exited: make(chan struct{}),
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 32}}}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Env = append(os.Environ(), env...)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.err = s.cmd.Wait(); close(s.exited) }()
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		<-s.exited
	})
	select {
	case a := <-addr:
		s.url = a
	case <-s.exited:
		t.Fatalf("cairn serve exited at start (%v):\n%s", s.err, s.log.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("cairn serve did not start:\n%s", s.log.String())
	}
	return s
}

func (s *killServer) kill(t *testing.T) {
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
	s.client.CloseIdleConnections()
}

// term stops the server gracefully; it must exit with status 0.
func (s *killServer) term(t *testing.T) {
	t.Helper()
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("cairn serve did not stop after SIGTERM:\n%s", s.log.String())
	}
	if s.err != nil {
		t.Fatalf("cairn serve exited with %v:\n%s", s.err, s.log.String())
	}
}

func (s *killServer) do(method, token, path string, body []byte) (int, []byte, error) {
	req, err := http.NewRequest(method, s.url+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func (s *killServer) post(token, path string, body []byte) (int, []byte, error) {
	return s.do("POST", token, path, body)
}

// killBook records what the server acknowledged and what it never answered, for one system's log.
type killBook struct {
	token    string // the default token: send, write and retry take one per server
	system   string // default "crash"
	mu       sync.Mutex
	acked    map[string]uint64 // event id → acknowledged index
	inflight [][]byte          // request bodies sent without an answer
	retried  int
	dups     int
}

type killReceipts struct {
	Events []struct {
		ID        string `json:"id"`
		Index     uint64 `json:"index"`
		Duplicate bool   `json:"duplicate"`
	} `json:"events"`
}

// send posts one batch; it returns false when the request got no answer (the server is gone).
func (k *killBook) send(t *testing.T, s *killServer, token string, body []byte, ids []string, retry bool) bool {
	sys := k.system
	if sys == "" {
		sys = "crash"
	}
	for {
		st, b, err := s.post(token, "/v1/systems/"+sys+"/events", body)
		switch {
		case err != nil:
			return false
		case st == http.StatusServiceUnavailable:
			time.Sleep(5 * time.Millisecond)
			continue
		case st != http.StatusOK:
			// A failed append is not an acknowledgement: its outcome is unknown, as after a kill.
			if st >= 500 {
				return false
			}
			t.Errorf("ingest: %d %s", st, b)
			return true
		}
		var r killReceipts
		if err := json.Unmarshal(b, &r); err != nil || len(r.Events) != len(ids) {
			t.Errorf("ingest response %s: %v", b, err)
			return true
		}
		k.mu.Lock()
		for i, e := range r.Events {
			if e.ID != ids[i] {
				t.Errorf("receipt %d is for %s, want %s", i, e.ID, ids[i])
			}
			if e.Duplicate && !retry {
				t.Errorf("fresh id %s answered as a duplicate", e.ID)
			}
			if old, ok := k.acked[e.ID]; ok && old != e.Index {
				t.Errorf("id %s acknowledged at %d and at %d", e.ID, old, e.Index)
			}
			k.acked[e.ID] = e.Index
			if retry {
				k.retried++
				if e.Duplicate {
					k.dups++
				}
			}
		}
		k.mu.Unlock()
		return true
	}
}

// write posts batches of 1–50 fresh events until stop, or until the server stops answering.
func (k *killBook) write(t *testing.T, s *killServer, token string, rng *rand.Rand, stop chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		n := 1 + rng.IntN(50)
		ids := make([]string, n)
		var body bytes.Buffer
		body.WriteByte('[')
		for i := range n {
			ids[i] = event.NewV7(time.Now()).String()
			if i > 0 {
				body.WriteByte(',')
			}
			fmt.Fprintf(&body, `{"id":%q,"type":"inference","model":{"name":"m","version":"1"},"payload":{"output":%d}}`, ids[i], rng.IntN(1000))
		}
		body.WriteByte(']')
		if !k.send(t, s, token, body.Bytes(), ids, false) {
			k.mu.Lock()
			k.inflight = append(k.inflight, body.Bytes())
			k.mu.Unlock()
			return
		}
	}
}

// retry resends every unanswered batch with the same ids: each event must come back as a duplicate with its
// original index, or be appended now.
func (k *killBook) retry(t *testing.T, s *killServer, token string) {
	t.Helper()
	k.mu.Lock()
	batches := k.inflight
	k.inflight = nil
	k.mu.Unlock()
	for _, body := range batches {
		var evs []struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(body, &evs); err != nil {
			t.Fatal(err)
		}
		ids := make([]string, len(evs))
		for i, e := range evs {
			ids[i] = e.ID
		}
		if !k.send(t, s, token, body, ids, true) {
			t.Fatalf("retry after restart got no answer:\n%s", s.log.String())
		}
	}
}

// checkLog reads every entry of the log through the API and checks it against the acknowledgements; it
// returns the log's size.
func (k *killBook) checkLog(t *testing.T, s *killServer) uint64 {
	t.Helper()
	st, b, err := s.do("GET", k.token, "/v1/systems/crash", nil)
	if err != nil || st != http.StatusOK {
		t.Fatalf("system: %d %s %v", st, b, err)
	}
	var sys struct {
		TreeSize uint64 `json:"tree_size"`
	}
	if err := json.Unmarshal(b, &sys); err != nil {
		t.Fatal(err)
	}
	n := sys.TreeSize
	ids := make([]string, n)
	var wg sync.WaitGroup
	next := make(chan uint64)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				st, b, err := s.do("GET", k.token, fmt.Sprintf("/v1/systems/crash/events/%d", i), nil)
				if err != nil || st != http.StatusOK {
					t.Errorf("event %d: %d %s %v", i, st, b, err)
					continue
				}
				var ev struct {
					Index    uint64 `json:"index"`
					Envelope struct {
						ID string `json:"id"`
					} `json:"envelope"`
				}
				if err := json.Unmarshal(b, &ev); err != nil || ev.Index != i {
					t.Errorf("event %d: %s %v", i, b, err)
					continue
				}
				ids[i] = ev.Envelope.ID
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	// Contiguous: every index below the size answers (above). Each of those reads was itself recorded as an
	// access event, so what follows index n is access records, and far beyond them nothing answers.
	if st, b, _ := s.do("GET", k.token, fmt.Sprintf("/v1/systems/crash/events/%d", n), nil); st != http.StatusOK || !strings.Contains(string(b), `"type":"access"`) {
		t.Errorf("event %d after the ingested ones answers %d %s, want the first access record", n, st, b)
	}
	if st, b, _ := s.do("GET", k.token, fmt.Sprintf("/v1/systems/crash/events/%d", 3*n+10), nil); st != http.StatusNotFound {
		t.Errorf("event %d beyond the tree answers %d %s", 3*n+10, st, b)
	}
	at := make(map[string]uint64, n)
	for i, id := range ids {
		if id == "" {
			t.Fatalf("event %d has no id", i)
		}
		if j, ok := at[id]; ok {
			t.Fatalf("id %s is stored twice, at %d and %d", id, j, i)
		}
		at[id] = uint64(i)
	}
	missing := 0
	for id, idx := range k.acked {
		if got, ok := at[id]; !ok || got != idx {
			if missing++; missing <= 10 {
				t.Errorf("acknowledged event %s at %d; the log has it at %d (%v)", id, idx, got, ok)
			}
		}
	}
	if missing > 0 {
		t.Fatalf("%d acknowledged events are not where they were acknowledged", missing)
	}
	return n
}
