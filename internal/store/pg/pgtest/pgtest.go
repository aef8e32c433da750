// Package pgtest gives tests a PostgreSQL to run against: the server named by CAIRN_TEST_PG (see
// .ci/postgres.sh) and a fresh schema in it per test.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"

	"github.com/cairn-ai/cairn/internal/store/pg"
)

// URL returns the PostgreSQL the tests run against (env CAIRN_TEST_PG). Without it the test skips, except
// under CI, where a skip would hide that PostgreSQL went untested.
func URL(tb testing.TB) string {
	tb.Helper()
	url := os.Getenv("CAIRN_TEST_PG")
	if url == "" {
		if os.Getenv("CI") != "" {
			tb.Fatal("CAIRN_TEST_PG is not set under CI: run .ci/postgres.sh and export the line it prints")
		}
		tb.Skip("CAIRN_TEST_PG is not set: run .ci/postgres.sh for a local PostgreSQL to test against")
	}
	return url
}

// Schema creates an empty schema named prefix + random hex for one test and drops it, with everything in it,
// when the test ends. It returns the server's URL, the schema, and a URL whose search_path is the schema.
func Schema(tb testing.TB, prefix string) (url, schema, schemaURL string) {
	tb.Helper()
	url = URL(tb)
	b := make([]byte, 6)
	rand.Read(b)
	schema = prefix + hex.EncodeToString(b)
	if err := pg.CreateSchema(context.Background(), url, schema); err != nil {
		tb.Fatalf("create schema in CAIRN_TEST_PG: %v", err)
	}
	tb.Cleanup(func() {
		if err := pg.DropSchema(context.Background(), url, schema); err != nil {
			tb.Errorf("drop schema %s: %v", schema, err)
		}
	})
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	return url, schema, url + sep + "search_path=" + schema
}
