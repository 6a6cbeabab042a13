package sqlite_test

import (
	"database/sql"
	"testing"

	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/storagetest"
)

// TestConformance runs the shared storage suite, each subtest on a fresh
// file database.
func TestConformance(t *testing.T) {
	storagetest.Run(t, storagetest.Harness[*sql.Tx]{
		New: func(t *testing.T) storage.Storage[*sql.Tx] {
			s, _ := newStore(t)
			return s
		},
	})
}
