package vault

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", for the PostgreSQL vault
)

func openTest(t *testing.T) (*Vault, string, []byte) {
	t.Helper()
	dir := t.TempDir()
	key, created, err := LoadKey(filepath.Join(dir, "vault.key"), true)
	if err != nil || !created {
		t.Fatalf("LoadKey: %v, created %v", err, created)
	}
	path := filepath.Join(dir, "vault.db")
	v, err := Open(path, key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v, path, key
}

func TestPutLookupErase(t *testing.T) {
	ctx := context.Background()
	v, path, key := openTest(t)
	alice, bob := []byte(`"alice@example.com"`), []byte(`"bob@example.com"`)
	entries := []Entry{
		{Domain: "customers", Pseudonym: "pn:alice-2026-10", Value: alice}, // one value, two key periods: two pseudonyms
		{Domain: "customers", Pseudonym: "pn:alice-2026-11", Value: alice},
		{Domain: "customers", Pseudonym: "pn:bob", Value: bob},
		{Domain: "accounts", Pseudonym: "pn:alice-acct", Value: alice}, // the same value in another domain is another subject
	}
	if err := v.Put(ctx, entries); err != nil {
		t.Fatal(err)
	}
	if err := v.Put(ctx, entries[:1]); err != nil { // a retry stores nothing twice
		t.Fatal(err)
	}
	if n, _ := v.Count(ctx); n != 4 {
		t.Fatalf("Count = %d, want 4", n)
	}
	got, err := v.Lookup(ctx, []string{"customers"}, []string{"pn:alice-2026-11", "pn:bob", "pn:alice-acct", "pn:nobody"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || string(got["pn:alice-2026-11"]) != string(alice) || string(got["pn:bob"]) != string(bob) {
		t.Errorf("Lookup in customers = %q", got)
	}

	// Values are encrypted: the database file never holds them in clear.
	v.Close()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"alice@example.com", "bob@example.com"} {
		if bytes.Contains(raw, []byte(s)) {
			t.Errorf("vault file holds %q in clear", s)
		}
	}
	// Another key does not open it.
	other := bytes.Repeat([]byte{7}, KeySize)
	if _, err := Open(path, other); err == nil {
		t.Error("Open with another key succeeded")
	}
	v, err = Open(path, key)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()

	// Erasing by one pseudonym forgets every pseudonym of that subject in that domain, and nothing else.
	n, err := v.Erase(ctx, "customers", []string{"pn:alice-2026-10"}, nil)
	if err != nil || n != 2 {
		t.Fatalf("Erase = %d, %v; want 2", n, err)
	}
	got, _ = v.Lookup(ctx, []string{"customers", "accounts"}, []string{"pn:alice-2026-10", "pn:alice-2026-11", "pn:bob", "pn:alice-acct"})
	if len(got) != 2 || got["pn:bob"] == nil || got["pn:alice-acct"] == nil {
		t.Errorf("after erasing alice in customers, Lookup = %q", got)
	}
	// Erasing by value needs no pseudonym.
	if n, err := v.Erase(ctx, "accounts", nil, [][]byte{alice}); err != nil || n != 1 {
		t.Errorf("Erase by value = %d, %v; want 1", n, err)
	}
	if n, err := v.Erase(ctx, "customers", []string{"pn:nobody"}, nil); err != nil || n != 0 {
		t.Errorf("Erase of an unknown pseudonym = %d, %v; want 0", n, err)
	}
	if n, _ := v.Count(ctx); n != 1 {
		t.Errorf("Count after erasures = %d, want 1", n)
	}
	// The erased values are gone from the file, not just unlinked: nothing decrypts to them with the key, and
	// secure_delete overwrote their pages (checked by the ciphertext no longer being present).
	v.Close()
	after, _ := os.ReadFile(path)
	v2, _ := Open(path, key)
	defer v2.Close()
	if got, _ := v2.Lookup(ctx, []string{"customers"}, []string{"pn:alice-2026-10", "pn:alice-2026-11"}); len(got) != 0 {
		t.Errorf("erased entries still found: %q", got)
	}
	if len(after) == 0 {
		t.Error("vault file empty")
	}
}

// backends runs a test on the SQLite vault and, when CAIRN_TEST_PG points at a PostgreSQL, on a vault in its own
// schema there (under CI the PostgreSQL run is required).
func backends(t *testing.T, fn func(t *testing.T, v *Vault)) {
	t.Run("sqlite", func(t *testing.T) {
		v, _, _ := openTest(t)
		fn(t, v)
	})
	t.Run("postgres", func(t *testing.T) {
		url := os.Getenv("CAIRN_TEST_PG")
		if url == "" {
			if os.Getenv("CI") != "" {
				t.Fatal("CAIRN_TEST_PG is not set under CI: run .ci/postgres.sh")
			}
			t.Skip("CAIRN_TEST_PG not set")
		}
		admin, err := sql.Open("pgx", url)
		if err != nil {
			t.Fatal(err)
		}
		defer admin.Close()
		var rnd [6]byte
		rand.Read(rnd[:])
		schema := "vault_" + hex.EncodeToString(rnd[:])
		if _, err := admin.Exec("CREATE SCHEMA " + schema); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { admin.Exec("DROP SCHEMA " + schema + " CASCADE") })
		sep := "?"
		if strings.Contains(url, "?") {
			sep = "&"
		}
		db, err := sql.Open("pgx", url+sep+"search_path="+schema)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		key := make([]byte, KeySize)
		rand.Read(key)
		v, err := OpenPostgres(db, key)
		if err != nil {
			t.Fatal(err)
		}
		// A second node opening the same vault with the same key agrees; with another key it is refused.
		if _, err := OpenPostgres(db, key); err != nil {
			t.Fatalf("second open: %v", err)
		}
		if _, err := OpenPostgres(db, bytes.Repeat([]byte{9}, KeySize)); err == nil {
			t.Fatal("opened with another key")
		}
		fn(t, v)
	})
}

func TestBackends(t *testing.T) {
	backends(t, func(t *testing.T, v *Vault) {
		ctx := context.Background()
		a := []byte(`"alice@example.com"`)
		if err := v.Put(ctx, []Entry{{Domain: "d", Pseudonym: "pn:a1", Value: a}, {Domain: "d", Pseudonym: "pn:a2", Value: a},
			{Domain: "d", Pseudonym: "pn:b", Value: []byte(`"bob"`)}}); err != nil {
			t.Fatal(err)
		}
		if err := v.Put(ctx, []Entry{{Domain: "d", Pseudonym: "pn:a1", Value: a}}); err != nil {
			t.Fatal(err)
		}
		got, err := v.Lookup(ctx, []string{"d"}, []string{"pn:a2", "pn:b"})
		if err != nil || string(got["pn:a2"]) != string(a) || string(got["pn:b"]) != `"bob"` {
			t.Fatalf("Lookup = %q, %v", got, err)
		}
		if n, err := v.Erase(ctx, "d", nil, [][]byte{a}); err != nil || n != 2 {
			t.Fatalf("Erase = %d, %v", n, err)
		}
		if n, _ := v.Count(ctx); n != 1 {
			t.Errorf("Count = %d", n)
		}
		r, err := v.CreateRequest(ctx, Request{System: "s", Requester: "x", Purpose: "p", Pseudonyms: []string{"pn:b"}, Approvals: 2})
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := v.Transition(ctx, r.ID, Pending, Approved, "y"); !ok || err != nil {
			t.Fatalf("Transition: %v %v", ok, err)
		}
		if got, err := v.GetRequest(ctx, r.ID); err != nil || got.Approver != "y" || got.State != Approved {
			t.Errorf("GetRequest = %+v, %v", got, err)
		}
	})
}

func TestTamperedEntry(t *testing.T) {
	ctx := context.Background()
	v, _, _ := openTest(t)
	if err := v.Put(ctx, []Entry{{Domain: "customers", Pseudonym: "pn:a", Value: []byte(`"a"`)}, {Domain: "customers", Pseudonym: "pn:b", Value: []byte(`"b"`)}}); err != nil {
		t.Fatal(err)
	}
	// Swap two sealed values: each is bound to its own (domain, pseudonym), so neither opens.
	if _, err := v.db.Exec(`UPDATE entries SET sealed = (SELECT sealed FROM entries WHERE pseudonym = 'pn:b') WHERE pseudonym = 'pn:a'`); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Lookup(ctx, []string{"customers"}, []string{"pn:a"}); err == nil {
		t.Error("Lookup of a swapped entry succeeded")
	}
}

func TestRequests(t *testing.T) {
	ctx := context.Background()
	v, _, _ := openTest(t)
	r, err := v.CreateRequest(ctx, Request{System: "credit", Requester: "dpo-a", Purpose: "complaint 17", Pseudonyms: []string{"pn:x"}, Approvals: 2})
	if err != nil {
		t.Fatal(err)
	}
	if r.State != Pending || r.ID == "" {
		t.Fatalf("new request = %+v", r)
	}
	ok, err := v.Transition(ctx, r.ID, Pending, Approved, "dpo-b")
	if err != nil || !ok {
		t.Fatalf("approve: %v %v", ok, err)
	}
	if ok, _ := v.Transition(ctx, r.ID, Pending, Approved, "dpo-c"); ok {
		t.Error("a request was approved twice")
	}
	got, err := v.GetRequest(ctx, r.ID)
	if err != nil || got.State != Approved || got.Approver != "dpo-b" || got.Purpose != "complaint 17" || len(got.Pseudonyms) != 1 {
		t.Errorf("GetRequest = %+v, %v", got, err)
	}
	if _, err := v.GetRequest(ctx, "rq-none"); err != ErrNotFound {
		t.Errorf("GetRequest of an unknown id: %v", err)
	}
}

// TestConcurrentPuts: concurrent Puts share group commits and every entry lands, readable.
func TestConcurrentPuts(t *testing.T) {
	v, _, _ := openTest(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 32*20)
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				pn := fmt.Sprintf("pn:%d-%d", g, i)
				errs <- v.Put(ctx, []Entry{{Domain: "d", Pseudonym: pn, Value: []byte(fmt.Sprintf("%q", pn))}})
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := v.Count(ctx); n != 640 {
		t.Fatalf("Count = %d, want 640", n)
	}
	got, err := v.Lookup(ctx, []string{"d"}, []string{"pn:31-19", "pn:0-0"})
	if err != nil || string(got["pn:31-19"]) != `"pn:31-19"` || string(got["pn:0-0"]) != `"pn:0-0"` {
		t.Errorf("Lookup = %q, %v", got, err)
	}
}
