package pg_test

import (
	"context"
	"testing"

	"github.com/cairn-ai/cairn/internal/seal"
	"github.com/cairn-ai/cairn/internal/seal/keystoretest"
	"github.com/cairn-ai/cairn/internal/store/pg"
)

// TestKeyStore runs the KeyStore conformance suite over two stores (two nodes) sharing one schema.
func TestKeyStore(t *testing.T) {
	keystoretest.Run(t, func(t *testing.T) (seal.KeyStore, seal.KeyStore) {
		a, _, opts := openStore(t, pg.Options{})
		opts.Migrate = false
		b, err := pg.Open(context.Background(), testURL(t), opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return a.Keys(), b.Keys()
	})
}
