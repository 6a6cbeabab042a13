package mysql_test

import (
	"database/sql"
	"testing"

	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/mysql"
	"github.com/go-cap/cap/storage/storagetest"
)

// TestConformance runs the storage suite with interpolated parameters (one
// round trip a statement) and with the driver's prepared statements, each
// call of New on tables of its own.
func TestConformance(t *testing.T) {
	t.Parallel()
	t.Run("interpolated", func(t *testing.T) {
		t.Parallel()
		storagetest.Run(t, storagetest.Harness[*sql.Tx]{
			New: func(t *testing.T) storage.Storage[*sql.Tx] { return newStore(t, nil, mysql.Options{}) },
		})
	})
	t.Run("prepared", func(t *testing.T) {
		t.Parallel()
		storagetest.Run(t, storagetest.Harness[*sql.Tx]{
			New: func(t *testing.T) storage.Storage[*sql.Tx] {
				connect(t)
				return newStore(t, preparedDB, mysql.Options{})
			},
		})
	})
}
