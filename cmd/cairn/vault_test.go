package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestReidentifyAndEraseCLI goes through the whole dpo workflow with the binary: a system whose policy vaults the
// subject and asks for two approvals; one dpo asks with `cairn reidentify`, a second approves, the first collects;
// then `cairn vault erase` forgets the subject, and the pseudonym no longer reverses.
func TestReidentifyAndEraseCLI(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	s := startServer(t, data)
	def := `{"id":"credit","name":"Credit","intended_purpose":"creditworthiness","provider":"Acme",
	  "field_policy":{"domain":"customers","reidentify":{"approvals":2},"fields":{"subject":{"action":"vault"}}}}`
	if st, b, _ := s.do(t, "POST", "/v1/systems", []byte(def), true); st != 201 {
		t.Fatalf("register: %d %s", st, b)
	}
	ev := `[{"type":"inference","model":{"name":"m","version":"1"},"payload":{"subject":"Jane Roe","output":1}}]`
	if st, b, _ := s.do(t, "POST", "/v1/systems/credit/events", []byte(ev), true); st != 200 {
		t.Fatalf("ingest: %d %s", st, b)
	}
	st, b, _ := s.do(t, "GET", "/v1/systems/credit/events/1?payload=true", nil, true)
	pn := regexp.MustCompile(`pn:[A-Za-z0-9_-]{22}`).FindString(string(b))
	if st != 200 || pn == "" {
		t.Fatalf("read: %d %s", st, b)
	}
	tokenFile := func(name string, systems ...string) string {
		args := []string{"token", "create", "--data", data, "--principal", name, "--role", "dpo"}
		for _, sys := range systems {
			args = append(args, "--system", sys)
		}
		out, code := runCairn(t, nil, args...)
		if code != 0 {
			t.Fatalf("token create: %s", out)
		}
		tok := regexp.MustCompile(`cairn_[a-z0-9]+`).FindString(out)
		f := filepath.Join(dir, name+".token")
		os.WriteFile(f, []byte(tok+"\n"), 0o600)
		return f
	}
	a, b2 := tokenFile("dpo-a", "credit"), tokenFile("dpo-b")
	cli := func(tok string, args ...string) (string, int) {
		return runCairn(t, nil, append(append([]string{}, args...), "--url", s.url, "--token-file", tok)...)
	}
	// Flags after the pseudonyms are not parsed by Go's flag package, so they go first.
	out, code := runCairn(t, nil, "reidentify", "--url", s.url, "--token-file", a, "--system", "credit", "--purpose", "complaint 17", pn)
	id := regexp.MustCompile(`rq-[0-9a-f]+`).FindString(out)
	if code != 0 || id == "" || !strings.Contains(out, "pending (2 approvals needed)") || strings.Contains(out, "Jane") {
		t.Fatalf("reidentify: %d %s", code, out)
	}
	if out, code := cli(a, "reidentify", "approve", id); code == 0 || !strings.Contains(out, "another dpo principal") {
		t.Errorf("self-approval: %d %s", code, out)
	}
	if out, code := cli(b2, "reidentify", "approve", id); code != 0 || !strings.Contains(out, "approved") {
		t.Fatalf("approve: %d %s", code, out)
	}
	out, code = cli(a, "reidentify", "get", id)
	if code != 0 || !strings.Contains(out, pn+"\t\"Jane Roe\"") {
		t.Fatalf("collect: %d %s", code, out)
	}
	if out, code := cli(a, "reidentify", "get", id); code == 0 || !strings.Contains(out, "already collected") {
		t.Errorf("second collection: %d %s", code, out)
	}
	if out, code := cli(b2, "vault", "erase", "--domain", "customers", "--value", "Jane Roe"); code != 0 || !strings.Contains(out, "erased 1 vault entries") {
		t.Fatalf("erase: %d %s", code, out)
	}
	// A fresh request, approved: the vault no longer holds the subject.
	out, _ = runCairn(t, nil, "reidentify", "--url", s.url, "--token-file", a, "--system", "credit", "--purpose", "after erasure", pn)
	id = regexp.MustCompile(`rq-[0-9a-f]+`).FindString(out)
	cli(b2, "reidentify", "approve", id)
	if out, code := cli(a, "reidentify", "get", id); code != 0 || !strings.Contains(out, "(not in the vault)") || strings.Contains(out, "Jane") {
		t.Errorf("after erasure: %d %s", code, out)
	}
	// Everything was recorded: the token creations and the erasure in _admin, each step in the system's log.
	s.stop()
	if out, code := runCairn(t, nil, "verify", "--data", data, "--full", "--state", filepath.Join(dir, "state")); code != 0 {
		t.Fatalf("verify: %s", out)
	}
	var log bytes.Buffer
	for _, f := range []string{"vault", "keys"} {
		entries, _ := os.ReadDir(filepath.Join(data, f))
		for _, e := range entries {
			log.WriteString(e.Name() + " ")
		}
	}
	if !strings.Contains(log.String(), "vault.db") || !strings.Contains(log.String(), "vault.key") {
		t.Errorf("vault files: %s", log.String())
	}
}

// TestSharedVaultOnPostgres runs two nodes over one PostgreSQL store and one vault in PostgreSQL (its own schema):
// a value vaulted through one node is re-identified through the other.
func TestSharedVaultOnPostgres(t *testing.T) {
	url := os.Getenv("CAIRN_TEST_PG")
	if url == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("CAIRN_TEST_PG is not set in CI")
		}
		t.Skip("CAIRN_TEST_PG not set")
	}
	dir := t.TempDir()
	storeURL, vaultURL := pgSchemaURL(t, url, "cairn_nodes_"), pgSchemaURL(t, url, "cairn_vault_")
	if out, code := runCairn(t, nil, "migrate", "--store", storeURL); code != 0 {
		t.Fatalf("migrate: %s", out)
	}
	shared := []string{"--store", storeURL, "--vault-store", vaultURL, "--origin", "nodes.test/cairn",
		"--signing-key", filepath.Join(dir, "signing.key"), "--kek", filepath.Join(dir, "kek"),
		"--vault-key", filepath.Join(dir, "vault.key"), "--keyring", filepath.Join(dir, "keyring")}
	a := startServer(t, filepath.Join(dir, "a"), shared...)
	b := startServer(t, filepath.Join(dir, "b"), shared...)
	def := `{"id":"credit","name":"Credit","intended_purpose":"creditworthiness","provider":"Acme",
	  "field_policy":{"domain":"customers","fields":{"subject":{"action":"vault"}}}}`
	if st, body, _ := a.do(t, "POST", "/v1/systems", []byte(def), true); st != 201 {
		t.Fatalf("register: %d %s", st, body)
	}
	ev := `[{"type":"inference","model":{"name":"m","version":"1"},"payload":{"subject":"Jane Roe","output":1}}]`
	if st, body, _ := a.do(t, "POST", "/v1/systems/credit/events", []byte(ev), true); st != 200 {
		t.Fatalf("ingest on a: %d %s", st, body)
	}
	st, body, _ := b.do(t, "GET", "/v1/systems/credit/events/1?payload=true", nil, true)
	pn := regexp.MustCompile(`pn:[A-Za-z0-9_-]{22}`).FindString(string(body))
	if st != 200 || pn == "" {
		t.Fatalf("read on b: %d %s", st, body)
	}
	req := `{"pseudonyms":["` + pn + `"],"purpose":"shared vault test"}`
	if st, body, _ := b.do(t, "POST", "/v1/systems/credit/reidentify", []byte(req), true); st != 200 || !strings.Contains(string(body), `"Jane Roe"`) {
		t.Errorf("re-identify on b: %d %s", st, body)
	}
}

// pgSchemaURL creates a fresh schema (dropped when the test ends) and returns url with it as search_path.
func pgSchemaURL(t *testing.T, url, prefix string) string {
	t.Helper()
	ctx := context.Background()
	b := make([]byte, 6)
	rand.Read(b)
	schema := prefix + hex.EncodeToString(b)
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c, err := pgx.Connect(ctx, url); err == nil {
			c.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
			c.Close(ctx)
		}
	})
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	return url + sep + "search_path=" + schema
}
