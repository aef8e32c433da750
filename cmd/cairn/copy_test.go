package main

import (
	"bytes"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-ai/cairn/internal/store/pg/pgtest"
)

// TestCopyRoundTrip copies a log from the embedded store to PostgreSQL and back: every checkpoint stays valid,
// both copies verify, and the final latest checkpoint is byte-identical to the original's.
func TestCopyRoundTrip(t *testing.T) {
	url, schema, pgURL := pgtest.Schema(t, "cairn_copy_")
	bin := filepath.Join(cliBinary(t), "cairn")
	dir := t.TempDir()
	data1, data2 := filepath.Join(dir, "data1"), filepath.Join(dir, "data2")
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("cairn %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	// An embedded store with a few batches and several checkpoints.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	srv := exec.Command(bin, "serve", "--data", data1, "--listen", addr, "--origin", "copy.test/cairn", "--checkpoint-interval", "5ms")
	var slog bytes.Buffer
	srv.Stdout, srv.Stderr = &slog, &slog
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	post := func(path, body string) {
		t.Helper()
		tok, _ := os.ReadFile(filepath.Join(data1, "admin.token"))
		req, _ := http.NewRequest("POST", "http://"+addr+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode >= 300 {
			t.Fatalf("POST %s: %v %v", path, resp, err)
		}
		resp.Body.Close()
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not start:\n%s", slog.String())
		}
	}
	post("/v1/systems", `{"id":"credit","name":"Credit","intended_purpose":"scoring","provider":"Acme"}`)
	for b := 0; b < 6; b++ {
		var body strings.Builder
		for i := 0; i < 100; i++ {
			body.WriteString(`{"type":"inference","model":{"name":"m","version":"1"},"payload":{"subject":"s","output":1}}` + "\n")
		}
		post("/v1/systems/credit/events", body.String())
		time.Sleep(1100 * time.Millisecond / 4)
	}
	srv.Process.Signal(syscall.SIGINT)
	srv.Wait()
	orig, err := os.ReadFile(filepath.Join(data1, "logs", "credit", "checkpoint"))
	if err != nil {
		t.Fatal(err)
	}

	run("migrate", "--store", url, "--schema", schema)
	if out := run("copy", "--from", data1, "--to", pgURL); !strings.Contains(out, " key(s), still wrapped") || strings.Contains(out, "copied 0 key(s)") {
		t.Errorf("copy to PostgreSQL did not take the keyring along:\n%s", out)
	}
	// --decrypt opens every payload with the keys the copy put in the database (and the same KEK).
	kek := filepath.Join(data1, "keys", "kek")
	if out := run("verify", "--data", data1, "--store", pgURL, "--full", "--decrypt", "--kek", kek, "--state", filepath.Join(dir, "s1.json")); !strings.Contains(out, "verified: 602 entries checked") {
		t.Errorf("verify of the PostgreSQL copy:\n%s", out)
	}
	// Back into a second installation of the same origin and public key.
	os.MkdirAll(filepath.Join(data2, "keys"), 0o700)
	for _, f := range []string{"cairn.json", "keys/signing.pub"} {
		bs, _ := os.ReadFile(filepath.Join(data1, f))
		os.WriteFile(filepath.Join(data2, f), bs, 0o600)
	}
	run("copy", "--from", pgURL, "--to", data2)
	if out := run("verify", "--data", data2, "--full", "--decrypt", "--kek", kek, "--state", filepath.Join(dir, "s2.json")); !strings.Contains(out, "verified: 602 entries checked") {
		t.Errorf("verify of the round-tripped copy:\n%s", out)
	}
	back, err := os.ReadFile(filepath.Join(data2, "logs", "credit", "checkpoint"))
	if err != nil {
		t.Fatal(err)
	}
	// The local checkpoint file carries a size prefix before the note; compare the notes.
	if !bytes.HasSuffix(back, noteOf(orig)) || len(noteOf(orig)) == 0 {
		t.Errorf("the latest checkpoint changed in the round trip")
	}
}

// noteOf strips the embedded store's size prefix from a checkpoint file, if it has one.
func noteOf(b []byte) []byte {
	if i := bytes.Index(b, []byte("copy.test/cairn/")); i >= 0 {
		return b[i:]
	}
	return nil
}
