package postgres_test

import (
	"database/sql"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/postgres"
	"github.com/go-cap/cap/storage/storagetest"
)

// TestConformance runs the storage suite on both constructors, each call
// of New in a fresh schema.
func TestConformance(t *testing.T) {
	t.Parallel()
	t.Run("pgx", func(t *testing.T) {
		t.Parallel()
		storagetest.Run(t, storagetest.Harness[pgx.Tx]{
			New: func(t *testing.T) storage.Storage[pgx.Tx] { return newPgx(t, postgres.Options{}) },
		})
	})
	t.Run("sql", func(t *testing.T) {
		t.Parallel()
		storagetest.Run(t, storagetest.Harness[*sql.Tx]{
			New: func(t *testing.T) storage.Storage[*sql.Tx] { return newSQL(t, postgres.Options{}) },
		})
	})
}
