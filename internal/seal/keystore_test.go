package seal_test

import (
	"testing"

	"github.com/cairn-ai/cairn/internal/seal"
	"github.com/cairn-ai/cairn/internal/seal/keystoretest"
)

func TestFileKeyStore(t *testing.T) {
	keystoretest.Run(t, func(t *testing.T) (seal.KeyStore, seal.KeyStore) {
		dir := t.TempDir()
		a, err := seal.NewFileKeyStore(dir)
		if err != nil {
			t.Fatal(err)
		}
		b, err := seal.NewFileKeyStore(dir)
		if err != nil {
			t.Fatal(err)
		}
		return a, b
	})
}
