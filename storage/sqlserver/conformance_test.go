package sqlserver_test

import (
	"context"
	"database/sql"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/sqlserver"
	"github.com/go-cap/cap/storage/storagetest"
)

// TestConformance runs the storage suite, each call of New in a fresh
// schema. It needs CAP_TEST_SQLSERVER.
func TestConformance(t *testing.T) {
	connect(t)
	storagetest.Run(t, storagetest.Harness[*sql.Tx]{
		New: func(t *testing.T) storage.Storage[*sql.Tx] { return newStore(t, sqlserver.Options{}) },
	})
}

// TestInsertRefusedValue: a value longer than its column fails with
// storage.ErrRefused and stores nothing.
func TestInsertRefusedValue(t *testing.T) {
	s := newStore(t, sqlserver.Options{})
	ctx := context.Background()
	r := &storage.Record{ID: 1, Version: "v1", Name: strings.Repeat("n", 300), Group: "g", MessageID: "m"}
	_, err := s.InsertReceived(ctx, r)
	require.ErrorIs(t, err, storage.ErrRefused)
	_, total, err := s.List(ctx, storage.Received, storage.ListQuery{})
	require.NoError(t, err)
	require.Zero(t, total)
}

// TestReceivedMessageIDIsExact: message ids differing only in case are two
// messages, whatever the database's collation.
func TestReceivedMessageIDIsExact(t *testing.T) {
	s := newStore(t, sqlserver.Options{})
	ctx := context.Background()
	for i, id := range []string{"a1", "A1", "a1"} {
		ok, err := s.InsertReceived(ctx, &storage.Record{ID: int64(i + 1), Version: "v1", Name: "n", Group: "g", MessageID: id})
		require.NoError(t, err)
		require.Equal(t, i < 2, ok, id)
	}
}
