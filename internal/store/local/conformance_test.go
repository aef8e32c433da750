package local_test

import (
	"testing"

	"github.com/cairn-ai/cairn/internal/store"
	"github.com/cairn-ai/cairn/internal/store/local"
	"github.com/cairn-ai/cairn/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) (store.Store, func() store.Store) {
		dir := t.TempDir()
		opts := local.Options{HistoryInterval: 1} // keep every checkpoint in the history
		s, err := local.Open(dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s, func() store.Store {
			s2, err := local.Open(dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			return s2
		}
	})
}
