package main

// Acceptance tests for remote verification: a real `cairn serve` subprocess is checked by a third party that
// uses only the C2SP tlog-tiles HTTP API, the log's verifier key and independent libraries
// (golang.org/x/mod/sumdb/note and tlog, github.com/transparency-dev/merkle). Nothing in this file's third-party
// part uses Cairn's client or ledger packages; the tile path unit test checks ledger's formatter and parser
// against hand-written expectations.
//
// The server harness (startServer, cairnCmd, …) is shared with tamper_test.go.

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/cairn-ai/cairn/internal/ledger"
)

// --- harness: the cairn binary as a subprocess ---

// execMainEnv makes the test binary behave as the cairn binary: the tests start themselves as
// `cairn serve` / `cairn verify` subprocesses. This runs the same code as main (os.Exit(run(...))) in a separate
// process without a `go build` step, a TestMain (other test files may want one) or a leaked temporary binary.
const execMainEnv = "CAIRN_TEST_EXEC_MAIN"

func init() {
	if os.Getenv(execMainEnv) == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
}

// cairnCmd returns a command that runs `cairn args...` as a subprocess.
func cairnCmd(t testing.TB, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), execMainEnv+"=1", "XDG_STATE_HOME="+t.TempDir())
	return cmd
}

// runCairn runs `cairn args...` to completion and returns its combined output and exit status.
func runCairn(t testing.TB, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := cairnCmd(t, args...)
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee) && ee.Exited():
		return string(out), ee.ExitCode()
	default:
		t.Fatalf("cairn %s: %v\n%s", strings.Join(args, " "), err, out)
		return "", -1
	}
}

// syncBuffer collects a subprocess's output while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testServer is a `cairn serve` subprocess on a loopback port.
type testServer struct {
	t       testing.TB
	dir     string
	url     string
	token   string
	cmd     *exec.Cmd
	out     *syncBuffer
	exited  chan struct{}
	waitErr error
	stopped bool
	http    *http.Client
}

// startServer starts `cairn serve --data dir` on a free loopback port and waits until /healthz answers. The
// server is stopped with SIGTERM when the test ends, unless the test stops it first.
func startServer(t testing.TB, dir string, extra ...string) *testServer {
	t.Helper()
	var last string
	for attempt := 0; attempt < 3; attempt++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		s := &testServer{t: t, dir: dir, url: "http://" + addr, out: new(syncBuffer), exited: make(chan struct{}),
			http: &http.Client{Timeout: 2 * time.Minute}}
		args := append([]string{"serve", "--data", dir, "--listen", addr}, extra...)
		s.cmd = cairnCmd(t, args...)
		s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
		if err := s.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { s.waitErr = s.cmd.Wait(); close(s.exited) }()
		if s.waitHealthy() {
			t.Cleanup(func() {
				if !s.stopped {
					s.stop()
				}
			})
			tok, err := os.ReadFile(filepath.Join(dir, "admin.token"))
			if err != nil {
				s.stop()
				t.Fatal(err)
			}
			s.token = strings.TrimSpace(string(tok))
			return s
		}
		s.cmd.Process.Kill()
		<-s.exited
		last = s.out.String()
		// The port may have been taken between choosing and binding it: try another.
	}
	t.Fatalf("cairn serve did not become healthy:\n%s", last)
	return nil
}

func (s *testServer) waitHealthy() bool {
	deadline := time.Now().Add(30 * time.Second)
	c := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return false
		default:
		}
		if resp, err := c.Get(s.url + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// stop sends SIGTERM, waits for a clean exit and fails the test if the server did not exit with status 0.
func (s *testServer) stop() {
	s.t.Helper()
	s.stopped = true
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(60 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
		s.t.Errorf("cairn serve did not stop within 60 s of SIGTERM:\n%s", s.out.String())
		return
	}
	if s.waitErr != nil {
		s.t.Errorf("cairn serve exited with %v:\n%s", s.waitErr, s.out.String())
	}
}

// do sends a request; with auth it carries the admin token. It returns the status, body and headers.
func (s *testServer) do(t testing.TB, method, path string, body []byte, auth bool) (int, []byte, http.Header) {
	t.Helper()
	st, b, h, err := s.tryDo(method, path, body, auth)
	if err != nil {
		t.Fatal(err)
	}
	return st, b, h
}

// tryDo is do for goroutines other than the test's: it returns errors instead of failing the test.
func (s *testServer) tryDo(method, path string, body []byte, auth bool) (int, []byte, http.Header, error) {
	req, err := http.NewRequest(method, s.url+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	if auth {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("%s %s: %v", method, path, err)
	}
	return resp.StatusCode, b, resp.Header, nil
}

// register registers an AI system with the admin token.
func (s *testServer) register(t testing.TB, sys string) {
	t.Helper()
	def := fmt.Sprintf(`{"id":%q,"name":"Credit scoring","intended_purpose":"creditworthiness of natural persons","provider":"Acme Bank","annex_iii":"5(b)"}`, sys)
	st, b, _ := s.do(t, "POST", "/v1/systems", []byte(def), true)
	if st != http.StatusCreated {
		t.Fatalf("register %s: %d %s", sys, st, b)
	}
}

type ingestReceipt struct {
	ID    string `json:"id"`
	Index uint64 `json:"index"`
}

// ingest posts events (as NDJSON, or as a JSON array with array) and returns the receipts.
func (s *testServer) ingest(t testing.TB, sys string, events [][]byte, array bool) []ingestReceipt {
	t.Helper()
	rs, err := s.tryIngest(sys, events, array)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func (s *testServer) tryIngest(sys string, events [][]byte, array bool) ([]ingestReceipt, error) {
	var body []byte
	if array {
		body = append([]byte("["), bytes.Join(events, []byte(","))...)
		body = append(body, ']')
	} else {
		body = bytes.Join(events, []byte("\n"))
	}
	st, b, _, err := s.tryDo("POST", "/v1/systems/"+sys+"/events", body, true)
	if err != nil {
		return nil, err
	}
	if st != http.StatusOK {
		return nil, fmt.Errorf("ingest %d events: %d %s", len(events), st, b)
	}
	var out struct {
		Events []ingestReceipt `json:"events"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	if len(out.Events) != len(events) {
		return nil, fmt.Errorf("ingest: %d receipts for %d events", len(out.Events), len(events))
	}
	return out.Events, nil
}

// inferenceEvents returns n realistic inference events numbered from first. Every field has a fixed width, so
// all records of these events have the same length in the segment files (tamper tests swap and copy them).
func inferenceEvents(first, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		k := first + i
		decision := "approve"
		if k%3 == 0 {
			decision = "decline"
		}
		out[i] = fmt.Appendf(nil, `{"type":"inference","time":"2026-03-01T10:%02d:%02d.%08d1Z","model":{"name":"credit","version":"3"},`+
			`"attrs":{"confidence":0.8%d,"latency_ms":1%d},"payload":{"subject":"applicant-%07d","output":{"score":%d,"decision":%q}}}`,
			k/60%60, k%60, k%100000000, k%9+1, k%9+1, k, 100+k%900, decision)
	}
	return out
}

// --- the third party: only HTTP, the verifier key and independent libraries ---

// tpCheckpoint is a checkpoint opened by the third party.
type tpCheckpoint struct {
	origin string
	size   int64
	root   tlog.Hash
}

// tpOpenCheckpoint verifies a signed note with vkey and parses its c2sp.org/tlog-checkpoint body.
func tpOpenCheckpoint(signed []byte, vkey string) (tpCheckpoint, error) {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return tpCheckpoint{}, err
	}
	n, err := note.Open(signed, note.VerifierList(v))
	if err != nil {
		return tpCheckpoint{}, err
	}
	lines := strings.Split(n.Text, "\n")
	// origin, size, root, optional extension lines, and the empty string after the final newline.
	if len(lines) < 4 || lines[len(lines)-1] != "" {
		return tpCheckpoint{}, fmt.Errorf("checkpoint body has %d lines", len(lines))
	}
	c := tpCheckpoint{origin: lines[0]}
	if c.origin != v.Name() {
		return tpCheckpoint{}, fmt.Errorf("checkpoint origin %q is not the key name %q", c.origin, v.Name())
	}
	if !regexp.MustCompile(`^(0|[1-9][0-9]*)$`).MatchString(lines[1]) {
		return tpCheckpoint{}, fmt.Errorf("checkpoint size %q", lines[1])
	}
	if c.size, err = strconv.ParseInt(lines[1], 10, 64); err != nil {
		return tpCheckpoint{}, err
	}
	root, err := base64.StdEncoding.Strict().DecodeString(lines[2])
	if err != nil || len(root) != 32 {
		return tpCheckpoint{}, fmt.Errorf("checkpoint root %q", lines[2])
	}
	copy(c.root[:], root)
	return c, nil
}

// tpIndexPath formats a tile index per c2sp.org/tlog-tiles: the decimal index zero-padded to a multiple of three
// digits, split into groups of three, every group but the last prefixed with "x".
func tpIndexPath(n int64) string {
	d := strconv.FormatInt(n, 10)
	if r := len(d) % 3; r != 0 {
		d = strings.Repeat("0", 3-r) + d
	}
	var groups []string
	for i := 0; i < len(d); i += 3 {
		groups = append(groups, d[i:i+3])
	}
	for i := range groups[:len(groups)-1] {
		groups[i] = "x" + groups[i]
	}
	return strings.Join(groups, "/")
}

// tpTilePath is the path after "tile/" of a hash tile (level ≥ 0) or an entry bundle (level -1).
func tpTilePath(level int, n int64, w int) string {
	p := "entries/" + tpIndexPath(n)
	if level >= 0 {
		p = strconv.Itoa(level) + "/" + tpIndexPath(n)
	}
	if w < 256 {
		p += ".p/" + strconv.Itoa(w)
	}
	return p
}

// tpTileReader fetches hash tiles over HTTP for tlog.TileHashReader, which checks every tile it uses against
// the tree of a verified checkpoint. It keeps what it fetched (tiles are immutable for a given width).
type tpTileReader struct {
	base  string // server URL + "/logs/" + system
	mu    sync.Mutex
	cache map[string][]byte
	paths []string // every path fetched, in order
}

func (r *tpTileReader) Height() int { return 8 }

func (r *tpTileReader) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, tile := range tiles {
		if tile.H != 8 {
			return nil, fmt.Errorf("tile height %d", tile.H)
		}
		p := tpTilePath(tile.L, tile.N, tile.W)
		r.mu.Lock()
		b, ok := r.cache[p]
		r.mu.Unlock()
		if !ok {
			resp, err := http.Get(r.base + "/tile/" + p)
			if err != nil {
				return nil, err
			}
			b, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return nil, err
			}
			if resp.StatusCode != http.StatusOK {
				return nil, fmt.Errorf("GET tile/%s: %d %s", p, resp.StatusCode, b)
			}
			if len(b) != tile.W*tlog.HashSize {
				return nil, fmt.Errorf("GET tile/%s: %d bytes, want %d", p, len(b), tile.W*tlog.HashSize)
			}
			r.mu.Lock()
			r.cache[p] = b
			r.paths = append(r.paths, p)
			r.mu.Unlock()
		}
		out[i] = b
	}
	return out, nil
}

func (r *tpTileReader) SaveTiles([]tlog.Tile, [][]byte) {}

// tpLeafHash is RFC 6962's leaf hash, computed by hand: SHA-256(0x00 || leaf).
func tpLeafHash(leaf []byte) tlog.Hash {
	return sha256.Sum256(append([]byte{0}, leaf...))
}

// tpSplitBundle splits a c2sp.org/tlog-tiles entry bundle: each entry prefixed by its big-endian uint16 length.
func tpSplitBundle(b []byte) ([][]byte, error) {
	var out [][]byte
	for len(b) > 0 {
		if len(b) < 2 {
			return nil, errors.New("bundle: truncated length")
		}
		n := int(b[0])<<8 | int(b[1])
		if len(b) < 2+n {
			return nil, errors.New("bundle: truncated entry")
		}
		out = append(out, b[2:2+n])
		b = b[2+n:]
	}
	return out, nil
}

func decodeProof(t testing.TB, body []byte) [][]byte {
	t.Helper()
	var out struct {
		Proof []string `json:"proof"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("proof answer %s: %v", body, err)
	}
	ps := make([][]byte, len(out.Proof))
	for i, s := range out.Proof {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(b) != 32 {
			t.Fatalf("proof hash %q", s)
		}
		ps[i] = b
	}
	return ps
}

func toTlog(ps [][]byte) []tlog.Hash {
	out := make([]tlog.Hash, len(ps))
	for i, p := range ps {
		copy(out[i][:], p)
	}
	return out
}

// flipped returns a copy of ps with one byte of hash i flipped.
func flipped(ps [][]byte, i int) [][]byte {
	out := make([][]byte, len(ps))
	for j := range ps {
		out[j] = slices.Clone(ps[j])
	}
	out[i][7] ^= 0x40
	return out
}

// fetchCheckpoint fetches and opens the latest checkpoint, waiting until it covers at least size leaves
// (checkpoints are published shortly after the acknowledgement).
func fetchCheckpoint(t testing.TB, s *testServer, sys, vkey string, size int64) (tpCheckpoint, []byte) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, b, h := s.do(t, "GET", "/logs/"+sys+"/checkpoint", nil, false)
		if st == http.StatusOK {
			if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("checkpoint Content-Type %q", ct)
			}
			c, err := tpOpenCheckpoint(b, vkey)
			if err != nil {
				t.Fatalf("checkpoint does not verify: %v\n%s", err, b)
			}
			if c.size >= size {
				return c, b
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint of size %d after 10 s (last answer %d: %s)", size, st, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestThirdPartyTiles checks a log of more than 65,536 events (so the tree has a level-2 tile) the way an
// independent auditor would: checkpoint, every tile and entry bundle, inclusion and consistency proofs, with
// two independent Merkle implementations; then `cairn verify --url` twice.
func TestThirdPartyTiles(t *testing.T) {
	if testing.Short() {
		t.Skip("ingests 70,000 events over HTTP")
	}
	const (
		sys      = "credit-scoring"
		total    = 70_000
		perBatch = 1_000
		more     = 1_300 // second ingest: crosses a level-0 tile boundary
	)
	start := time.Now()
	s := startServer(t, filepath.Join(t.TempDir(), "data"))
	s.register(t, sys)

	// Ingest 70,000 events, 1,000 per request, from four concurrent clients; NDJSON and arrays alternate.
	ids := make([]string, total+1+more)
	var idMu sync.Mutex
	var wg sync.WaitGroup
	batches := make(chan int)
	for range 4 {
		wg.Go(func() {
			for b := range batches {
				rs, err := s.tryIngest(sys, inferenceEvents(b*perBatch, perBatch), b%2 == 0)
				if err != nil {
					t.Error(err)
					continue
				}
				idMu.Lock()
				for _, r := range rs {
					if r.Index == 0 || r.Index > total || ids[r.Index] != "" {
						t.Errorf("receipt index %d out of range or repeated", r.Index)
						continue
					}
					ids[r.Index] = r.ID
				}
				idMu.Unlock()
			}
		})
	}
	for b := range total / perBatch {
		batches <- b
	}
	close(batches)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("ingested %d events in %v", total, time.Since(start))

	// The third party gets the verifier key (here from the server; in practice out of band) and nothing else.
	st, vk, _ := s.do(t, "GET", "/logs/"+sys+"/vkey", nil, false)
	if st != http.StatusOK {
		t.Fatalf("vkey: %d %s", st, vk)
	}
	vkey := strings.TrimSpace(string(vk))
	cp, cpNote := fetchCheckpoint(t, s, sys, vkey, total+1)
	if cp.size != total+1 {
		t.Fatalf("checkpoint size %d, want %d", cp.size, total+1)
	}
	origin, err := os.ReadFile(filepath.Join(s.dir, "cairn.json"))
	if err != nil {
		t.Fatal(err)
	}
	var inst struct{ Origin string }
	json.Unmarshal(origin, &inst)
	if cp.origin != inst.Origin+"/"+sys {
		t.Errorf("checkpoint origin %q, want %q", cp.origin, inst.Origin+"/"+sys)
	}

	tr := &tpTileReader{base: s.url + "/logs/" + sys, cache: map[string][]byte{}}
	thr := tlog.TileHashReader(tlog.Tree{N: cp.size, Hash: cp.root}, tr)

	// Every entry bundle: leaves parse, carry the acknowledged ids in order, and hash to the tiles' leaf hashes;
	// the root recomputed from the leaves alone (merkle/compact) is the checkpoint's.
	leafHashes := make([]tlog.Hash, 0, cp.size)
	leafRE := regexp.MustCompile(`^\{"digest":"sha256:[0-9a-f]{64}","id":"([0-9a-f-]{36})","recorded":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z)","type":"([a-z.]+)","v":1\}$`)
	lastRecorded := ""
	sawPartialBundle := false
	for n := int64(0); n*256 < cp.size; n++ {
		w := int(min(256, cp.size-n*256))
		p := tpTilePath(-1, n, w)
		if st, b, _ := s.do(t, "GET", "/logs/"+sys+"/tile/"+p, nil, false); st != http.StatusUnauthorized {
			t.Fatalf("entry bundle without a token: %d %s, want 401", st, b)
		}
		st, b, h := s.do(t, "GET", "/logs/"+sys+"/tile/"+p, nil, true)
		if st != http.StatusOK {
			t.Fatalf("GET tile/%s: %d %s", p, st, b)
		}
		if w < 256 {
			sawPartialBundle = true
			if cc := h.Get("Cache-Control"); strings.Contains(cc, "immutable") {
				t.Errorf("partial bundle %s served with Cache-Control %q", p, cc)
			}
		}
		leaves, err := tpSplitBundle(b)
		if err != nil {
			t.Fatalf("tile/%s: %v", p, err)
		}
		if len(leaves) != w {
			t.Fatalf("tile/%s holds %d entries, want %d", p, len(leaves), w)
		}
		idx := make([]int64, w)
		for i := range idx {
			idx[i] = tlog.StoredHashIndex(0, n*256+int64(i))
		}
		want, err := thr.ReadHashes(idx)
		if err != nil {
			t.Fatalf("hash tiles for bundle %d do not verify against the checkpoint: %v", n, err)
		}
		for i, leaf := range leaves {
			index := n*256 + int64(i)
			lh := tpLeafHash(leaf)
			if lh != want[i] {
				t.Fatalf("leaf %d: hash of the bundle entry does not match the tile", index)
			}
			leafHashes = append(leafHashes, lh)
			m := leafRE.FindSubmatch(leaf)
			if m == nil {
				t.Fatalf("leaf %d is not a canonical leaf entry: %s", index, leaf)
			}
			typ := "inference"
			if index == 0 {
				typ = "system.registered"
			} else if string(m[1]) != ids[index] {
				t.Fatalf("leaf %d has id %s, the receipt said %s", index, m[1], ids[index])
			}
			if string(m[3]) != typ {
				t.Fatalf("leaf %d has type %s, want %s", index, m[3], typ)
			}
			if string(m[2]) < lastRecorded {
				t.Fatalf("leaf %d: recorded time goes backwards", index)
			}
			lastRecorded = string(m[2])
		}
	}
	if !sawPartialBundle {
		t.Errorf("no partial entry bundle was needed for size %d", cp.size)
	}
	if got := compactRoot(t, leafHashes); got != cp.root {
		t.Fatalf("root recomputed from %d leaves with merkle/compact does not match the checkpoint", len(leafHashes))
	}
	if got, err := tlog.TreeHash(cp.size, thr); err != nil || got != cp.root {
		t.Fatalf("tlog.TreeHash over tiles: %v", err)
	}

	// Partial tiles for the incomplete right edge: 70,001 leaves = 273 full level-0 tiles + 113,
	// 1 full level-1 tile + 17, and one level-2 hash.
	for _, p := range []string{"0/273.p/113", "1/000", "1/001.p/17", "2/000.p/1"} {
		if !slices.Contains(tr.paths, p) {
			t.Errorf("tile reader never needed tile/%s; fetched %d tiles, e.g. %v", p, len(tr.paths), tr.paths[max(0, len(tr.paths)-6):])
		}
	}
	for p, wantImmutable := range map[string]bool{"0/000": true, "1/000": true, "0/273.p/113": false, "2/000.p/1": false} {
		st, b, h := s.do(t, "GET", "/logs/"+sys+"/tile/"+p, nil, false)
		if st != http.StatusOK {
			t.Errorf("tile/%s without a token: %d %s (hash tiles are open)", p, st, b)
			continue
		}
		if got := strings.Contains(h.Get("Cache-Control"), "immutable"); got != wantImmutable {
			t.Errorf("tile/%s: Cache-Control %q", p, h.Get("Cache-Control"))
		}
	}

	t.Run("TilePaths404", func(t *testing.T) {
		for _, p := range []string{
			"0/1234",         // four digits: must be x001/234
			"0/01", "0/0000", // not three digits
			"0/x000/001",       // non-canonical spelling of 1
			"0/x1/000",         // short x group
			"0/000.p/0",        // width 0
			"0/000.p/256",      // a full tile has no .p
			"0/000.p/07",       // non-canonical width
			"0/000/",           // trailing slash
			"00/000", "-1/000", // bad level
			"64/000",            // level beyond any tree
			"entries",           // no index
			"entry/000",         // unknown kind
			"0/274",             // beyond the tree
			"0/273",             // full tile not yet complete
			"0/273.p/114",       // wider than the tree
			"1/001",             // full level-1 tile not yet complete
			"2/000",             // full level-2 tile
			"3/000.p/1",         // level 3 needs 2^24 leaves
			"0/x001/234",        // N=1234, beyond the tree
			"0/x001/x234/067",   // N=1234067, beyond the tree
			"entries/274",       // bundle beyond the tree
			"entries/x001/000",  // bundle beyond the tree
			"entries/273.p/114", // bundle wider than the tree
		} {
			if st, b, _ := s.do(t, "GET", "/logs/"+sys+"/tile/"+p, nil, true); st != http.StatusNotFound {
				t.Errorf("GET tile/%s: %d %.80s, want 404", p, st, b)
			}
		}
		if st, _, _ := s.do(t, "GET", "/logs/no-such-system/tile/0/000", nil, false); st != http.StatusNotFound {
			t.Errorf("tile of an unknown system: %d, want 404", st)
		}
	})

	t.Run("Inclusion", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(1, 2))
		sample := []int64{0, 1, 255, 256, 65535, 65536, 65537, cp.size - 1}
		for range 12 {
			sample = append(sample, rng.Int64N(cp.size))
		}
		for _, i := range sample {
			lh := leafHashes[i]
			// tlog over the verified tiles.
			tp, err := tlog.ProveRecord(cp.size, i, thr)
			if err != nil {
				t.Fatalf("ProveRecord(%d): %v", i, err)
			}
			if err := tlog.CheckRecord(tp, cp.size, cp.root, i, lh); err != nil {
				t.Errorf("CheckRecord(%d) with a proof from tiles: %v", i, err)
			}
			// The server's JSON proof with an independent RFC 6962 implementation.
			st, b, _ := s.do(t, "GET", fmt.Sprintf("/v1/systems/%s/proofs/inclusion?index=%d&size=%d", sys, i, cp.size), nil, true)
			if st != http.StatusOK {
				t.Fatalf("inclusion proof %d: %d %s", i, st, b)
			}
			sp := decodeProof(t, b)
			if err := proof.VerifyInclusion(rfc6962.DefaultHasher, uint64(i), uint64(cp.size), lh[:], sp, cp.root[:]); err != nil {
				t.Errorf("merkle/proof.VerifyInclusion(%d) of the server's proof: %v", i, err)
			}
			if err := tlog.CheckRecord(toTlog(sp), cp.size, cp.root, i, lh); err != nil {
				t.Errorf("tlog.CheckRecord(%d) of the server's proof: %v", i, err)
			}
			if !slices.Equal(toTlog(sp), tp) {
				t.Errorf("index %d: the server's proof differs from the one built from tiles", i)
			}
			// Negative cases: every flipped hash, truncation, an extra hash, a wrong index, a wrong leaf.
			for k := range sp {
				bad := flipped(sp, k)
				if proof.VerifyInclusion(rfc6962.DefaultHasher, uint64(i), uint64(cp.size), lh[:], bad, cp.root[:]) == nil {
					t.Errorf("index %d: proof with hash %d flipped verifies (merkle)", i, k)
				}
				if tlog.CheckRecord(toTlog(bad), cp.size, cp.root, i, lh) == nil {
					t.Errorf("index %d: proof with hash %d flipped verifies (tlog)", i, k)
				}
			}
			if len(sp) > 0 {
				trunc := sp[:len(sp)-1]
				if proof.VerifyInclusion(rfc6962.DefaultHasher, uint64(i), uint64(cp.size), lh[:], trunc, cp.root[:]) == nil ||
					tlog.CheckRecord(toTlog(trunc), cp.size, cp.root, i, lh) == nil {
					t.Errorf("index %d: truncated proof verifies", i)
				}
			}
			extra := append(slices.Clone(sp), make([]byte, 32))
			if proof.VerifyInclusion(rfc6962.DefaultHasher, uint64(i), uint64(cp.size), lh[:], extra, cp.root[:]) == nil ||
				tlog.CheckRecord(toTlog(extra), cp.size, cp.root, i, lh) == nil {
				t.Errorf("index %d: proof with an extra hash verifies", i)
			}
			other := (i + 1) % cp.size
			if proof.VerifyInclusion(rfc6962.DefaultHasher, uint64(other), uint64(cp.size), lh[:], sp, cp.root[:]) == nil {
				t.Errorf("index %d: proof verifies for index %d", i, other)
			}
			badLeaf := lh
			badLeaf[0] ^= 1
			if proof.VerifyInclusion(rfc6962.DefaultHasher, uint64(i), uint64(cp.size), badLeaf[:], sp, cp.root[:]) == nil {
				t.Errorf("index %d: proof verifies for a different leaf", i)
			}
		}
		for _, q := range []string{
			fmt.Sprintf("index=%d&size=%d", cp.size, cp.size),   // index not in the tree
			fmt.Sprintf("index=0&size=%d", cp.size+1),           // beyond the published tree
			fmt.Sprintf("index=%d&size=%d", cp.size+5, cp.size), // far beyond
		} {
			if st, b, _ := s.do(t, "GET", "/v1/systems/"+sys+"/proofs/inclusion?"+q, nil, true); st != http.StatusNotFound {
				t.Errorf("inclusion proof ?%s: %d %s, want 404", q, st, b)
			}
		}
		if st, _, _ := s.do(t, "GET", fmt.Sprintf("/v1/systems/%s/proofs/inclusion?index=1&size=%d", sys, cp.size), nil, false); st != http.StatusUnauthorized {
			t.Errorf("inclusion proof without a token: %d, want 401", st)
		}
	})

	t.Run("CheckpointNegative", func(t *testing.T) {
		sig := bytes.Index(cpNote, []byte("\n\n")) + 2
		for i := range cpNote {
			if i >= sig && i >= len(cpNote)-4 {
				// The last base64 characters of the signature line may only touch padding bits that a
				// lenient decoder ignores; the body and the signature proper are what must be covered.
				continue
			}
			bad := slices.Clone(cpNote)
			bad[i] ^= 0x01
			if _, err := tpOpenCheckpoint(bad, vkey); err == nil {
				t.Errorf("checkpoint with byte %d (%q) flipped still opens", i, cpNote[i])
			}
		}
		otherSkey, otherVkey, err := note.GenerateKey(nil, cp.origin)
		if err != nil {
			t.Fatal(err)
		}
		signer, _ := note.NewSigner(otherSkey)
		forged, _ := note.Sign(&note.Note{Text: string(cpNote[:sig-1])}, signer)
		if _, err := tpOpenCheckpoint(forged, vkey); err == nil {
			t.Error("checkpoint signed by another key with the same origin opens")
		}
		if _, err := tpOpenCheckpoint(cpNote, otherVkey); err == nil {
			t.Error("checkpoint opens with another key of the same name")
		}
	})

	// cairn verify --url, first run: nothing remembered yet.
	stateFile := filepath.Join(t.TempDir(), "remote-state.json")
	verifyArgs := []string{"verify", "--url", s.url, "--system", sys, "--vkey", vkey, "--state", stateFile, "--entries"}
	tokenEnv := []string{"CAIRN_TOKEN=" + s.token}
	out, code := runCairn(t, tokenEnv, verifyArgs...)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("checkpoint size %d", cp.size)) {
		t.Fatalf("first cairn verify --url: exit %d\n%s", code, out)
	}
	if !strings.Contains(out, fmt.Sprintf("%d leaves checked", cp.size)) {
		t.Errorf("first cairn verify --url did not check every leaf:\n%s", out)
	}

	// Ingest more, crossing the level-0 tile boundary at 70,144, and check the log only grew.
	rs := s.ingest(t, sys, inferenceEvents(total, 700), false)
	rs = append(rs, s.ingest(t, sys, inferenceEvents(total+700, more-700), true)...)
	for _, r := range rs {
		ids[r.Index] = r.ID
	}
	cp2, _ := fetchCheckpoint(t, s, sys, vkey, total+1+more)
	if cp2.size != total+1+more {
		t.Fatalf("second checkpoint size %d, want %d", cp2.size, total+1+more)
	}
	tr2 := &tpTileReader{base: s.url + "/logs/" + sys, cache: map[string][]byte{}}
	thr2 := tlog.TileHashReader(tlog.Tree{N: cp2.size, Hash: cp2.root}, tr2)

	t.Run("Consistency", func(t *testing.T) {
		// Between the two signed checkpoints.
		st, b, _ := s.do(t, "GET", fmt.Sprintf("/v1/systems/%s/proofs/consistency?from=%d&to=%d", sys, cp.size, cp2.size), nil, true)
		if st != http.StatusOK {
			t.Fatalf("consistency proof: %d %s", st, b)
		}
		sp := decodeProof(t, b)
		if err := proof.VerifyConsistency(rfc6962.DefaultHasher, uint64(cp.size), uint64(cp2.size), sp, cp.root[:], cp2.root[:]); err != nil {
			t.Errorf("merkle/proof.VerifyConsistency of the server's proof: %v", err)
		}
		tp, err := tlog.ProveTree(cp2.size, cp.size, thr2)
		if err != nil {
			t.Fatalf("ProveTree over tiles: %v", err)
		}
		if err := tlog.CheckTree(tp, cp2.size, cp2.root, cp.size, cp.root); err != nil {
			t.Errorf("tlog.CheckTree with a proof from tiles: %v", err)
		}
		if !slices.Equal(toTlog(sp), tp) {
			t.Error("the server's consistency proof differs from the one built from tiles")
		}
		for k := range sp {
			bad := flipped(sp, k)
			if proof.VerifyConsistency(rfc6962.DefaultHasher, uint64(cp.size), uint64(cp2.size), bad, cp.root[:], cp2.root[:]) == nil {
				t.Errorf("consistency proof with hash %d flipped verifies (merkle)", k)
			}
			if tlog.CheckTree(toTlog(bad), cp2.size, cp2.root, cp.size, cp.root) == nil {
				t.Errorf("consistency proof with hash %d flipped verifies (tlog)", k)
			}
		}
		trunc := sp[:len(sp)-1]
		if proof.VerifyConsistency(rfc6962.DefaultHasher, uint64(cp.size), uint64(cp2.size), trunc, cp.root[:], cp2.root[:]) == nil ||
			tlog.CheckTree(toTlog(trunc), cp2.size, cp2.root, cp.size, cp.root) == nil {
			t.Error("truncated consistency proof verifies")
		}
		badOld := cp.root
		badOld[31] ^= 1
		if proof.VerifyConsistency(rfc6962.DefaultHasher, uint64(cp.size), uint64(cp2.size), sp, badOld[:], cp2.root[:]) == nil {
			t.Error("consistency proof verifies against a different old root")
		}

		// From other sizes, whose roots the third party computes from the new tree's verified tiles; among
		// them the level-2 boundary 65,536 and a size whose old tree is a single leaf.
		for _, old := range []int64{1, 2, 255, 256, 257, 65535, 65536, 65537, cp.size - 1, cp.size, cp2.size - 1, cp2.size} {
			oldRoot, err := tlog.TreeHash(old, thr2)
			if err != nil {
				t.Fatalf("TreeHash(%d) over tiles: %v", old, err)
			}
			if old <= cp.size {
				if want := compactRoot(t, leafHashes[:old]); want != oldRoot {
					t.Fatalf("root of size %d from tiles differs from the root recomputed from the leaves", old)
				}
			}
			st, b, _ := s.do(t, "GET", fmt.Sprintf("/v1/systems/%s/proofs/consistency?from=%d&to=%d", sys, old, cp2.size), nil, true)
			if st != http.StatusOK {
				t.Fatalf("consistency proof from %d: %d %s", old, st, b)
			}
			sp := decodeProof(t, b)
			if err := proof.VerifyConsistency(rfc6962.DefaultHasher, uint64(old), uint64(cp2.size), sp, oldRoot[:], cp2.root[:]); err != nil {
				t.Errorf("consistency %d → %d (merkle): %v", old, cp2.size, err)
			}
			if err := tlog.CheckTree(toTlog(sp), cp2.size, cp2.root, old, oldRoot); err != nil {
				t.Errorf("consistency %d → %d (tlog): %v", old, cp2.size, err)
			}
		}
		for _, q := range []string{
			fmt.Sprintf("from=0&to=%d", cp2.size),
			fmt.Sprintf("from=%d&to=%d", cp2.size, cp.size),
			fmt.Sprintf("from=1&to=%d", cp2.size+1),
		} {
			if st, b, _ := s.do(t, "GET", "/v1/systems/"+sys+"/proofs/consistency?"+q, nil, true); st < 400 || st >= 500 {
				t.Errorf("consistency proof ?%s: %d %s, want a 4xx", q, st, b)
			}
		}
	})

	// The new leaves also verify against the new tree, and the old tiles are unchanged where full.
	t.Run("NewLeaves", func(t *testing.T) {
		for n := int64(273); n*256 < cp2.size; n++ {
			w := int(min(256, cp2.size-n*256))
			st, b, _ := s.do(t, "GET", "/logs/"+sys+"/tile/"+tpTilePath(-1, n, w), nil, true)
			if st != http.StatusOK {
				t.Fatalf("bundle %d: %d %s", n, st, b)
			}
			leaves, err := tpSplitBundle(b)
			if err != nil || len(leaves) != w {
				t.Fatalf("bundle %d: %d leaves, %v", n, len(leaves), err)
			}
			idx := make([]int64, w)
			for i := range idx {
				idx[i] = tlog.StoredHashIndex(0, n*256+int64(i))
			}
			hs, err := thr2.ReadHashes(idx)
			if err != nil {
				t.Fatal(err)
			}
			for i, leaf := range leaves {
				if tpLeafHash(leaf) != hs[i] {
					t.Fatalf("leaf %d does not match the new tree", n*256+int64(i))
				}
				if index := n*256 + int64(i); index < cp.size && hs[i] != leafHashes[index] {
					t.Fatalf("leaf %d changed between checkpoints", index)
				}
			}
		}
		if !bytes.Equal(tr.cache["0/000"], tr2.cache["0/000"]) && tr2.cache["0/000"] != nil {
			t.Error("full tile 0/000 changed")
		}
	})

	// cairn verify --url, second run: consistent with what the first remembered.
	out, code = runCairn(t, tokenEnv, verifyArgs...)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("consistent with remembered size %d", cp.size)) {
		t.Fatalf("second cairn verify --url: exit %d\n%s", code, out)
	}

	t.Run("VerifyURLNegative", func(t *testing.T) {
		// A remembered checkpoint the log is not consistent with: a different root at the same size.
		var rem remoteState
		b, err := os.ReadFile(stateFile)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &rem); err != nil {
			t.Fatal(err)
		}
		if rem.Size != uint64(cp2.size) || rem.Root != cp2.root {
			t.Errorf("remembered state is size %d root %v, want the second checkpoint", rem.Size, rem.Root)
		}
		forkState := filepath.Join(t.TempDir(), "fork.json")
		fork := rem
		fork.Size, fork.Root = uint64(cp.size), cp2.root // a root that is not the tree of size cp.size
		b, _ = json.Marshal(fork)
		os.WriteFile(forkState, b, 0o600)
		out, code := runCairn(t, tokenEnv, "verify", "--url", s.url, "--system", sys, "--vkey", vkey, "--state", forkState)
		if code == 0 || !strings.Contains(out, "not consistent") {
			t.Errorf("verify --url against a forked remembered tree: exit %d\n%s", code, out)
		}
		// A remembered checkpoint larger than the log: the log shrank.
		shrink := rem
		shrink.Size++
		b, _ = json.Marshal(shrink)
		os.WriteFile(forkState, b, 0o600)
		out, code = runCairn(t, tokenEnv, "verify", "--url", s.url, "--system", sys, "--vkey", vkey, "--state", forkState)
		if code == 0 || !strings.Contains(out, "shrank") {
			t.Errorf("verify --url against a larger remembered tree: exit %d\n%s", code, out)
		}
		// Another key with the same origin.
		_, otherVkey, _ := note.GenerateKey(nil, cp.origin)
		out, code = runCairn(t, tokenEnv, "verify", "--url", s.url, "--system", sys, "--vkey", otherVkey, "--state", filepath.Join(t.TempDir(), "s.json"))
		if code == 0 {
			t.Errorf("verify --url with a wrong key: exit 0\n%s", out)
		}
	})
	t.Logf("total %v", time.Since(start))
}

// compactRoot computes the RFC 6962 root of leaf hashes with merkle/compact.
func compactRoot(t testing.TB, leaves []tlog.Hash) tlog.Hash {
	t.Helper()
	rf := compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
	r := rf.NewEmptyRange(0)
	for i := range leaves {
		if err := r.Append(leaves[i][:], nil); err != nil {
			t.Fatal(err)
		}
	}
	root, err := r.GetRootHash(nil)
	if err != nil {
		t.Fatal(err)
	}
	var h tlog.Hash
	copy(h[:], root)
	return h
}

// TestTilePath checks the C2SP tile path formatter and parser against hand-written paths, including indexes of
// more than three digits, which a 70,000-leaf log does not reach.
func TestTilePath(t *testing.T) {
	for _, tc := range []struct {
		level   int
		entries bool
		n       int64
		w       int
		path    string
	}{
		{0, false, 0, 256, "0/000"},
		{0, false, 1, 256, "0/001"},
		{0, false, 67, 256, "0/067"},
		{0, false, 256, 256, "0/256"},
		{0, false, 999, 256, "0/999"},
		{0, false, 1000, 256, "0/x001/000"},
		{0, false, 1234, 256, "0/x001/234"},
		{1, false, 1234067, 256, "1/x001/x234/067"},
		{2, false, 1234067, 8, "2/x001/x234/067.p/8"},
		{0, true, 1234067, 256, "entries/x001/x234/067"},
		{0, true, 273, 113, "entries/273.p/113"},
		{0, true, 0, 1, "entries/000.p/1"},
		{3, false, 1000000, 255, "3/x001/x000/000.p/255"},
		{0, false, 999999999, 256, "0/x999/x999/999"},
		{63, false, 5, 256, "63/005"},
	} {
		if got := ledger.TilePath(tc.level, tc.entries, tc.n, tc.w); got != tc.path {
			t.Errorf("ledger.TilePath(%d, %v, %d, %d) = %q, want %q", tc.level, tc.entries, tc.n, tc.w, got, tc.path)
		}
		level := tc.level
		if tc.entries {
			level = -1
		}
		if got := tpTilePath(level, tc.n, tc.w); got != tc.path {
			t.Errorf("tpTilePath(%d, %d, %d) = %q, want %q", level, tc.n, tc.w, got, tc.path)
		}
		l, e, n, w, err := ledger.ParseTilePath(tc.path)
		if err != nil || e != tc.entries || n != tc.n || w != tc.w || (!e && l != tc.level) {
			t.Errorf("ledger.ParseTilePath(%q) = %d, %v, %d, %d, %v", tc.path, l, e, n, w, err)
		}
	}
	for _, p := range []string{
		"", "0", "0/", "/000", "0/1234", "0/x1234/067", "0/x001/x234/67", "0/x001/x234/0677", "0/x000/001",
		"0/x001/x234/067.p/256", "0/x001/x234/067.p/0", "0/001.p/", "0/001.p/08", "0/001.p/+8", "0/001.p/-1",
		"0/001.p/8/", "0/001/", "00/001", "+0/001", "-1/001", "64/001", "abc/001", "0/0x1", "0/1e2", "0/-01", "0/+01",
		"0/ 01", "0/x001", "0/x00a/001", "0/y001/001", "entries/", "entries/x001/x234/67", "entries/001.p/256",
		"0/x999/x999/x999/x999/x999/x999/x999/999", // overflows int64
	} {
		if l, e, n, w, err := ledger.ParseTilePath(p); err == nil {
			t.Errorf("ledger.ParseTilePath(%q) = %d, %v, %d, %d; want an error", p, l, e, n, w)
		}
	}
}
