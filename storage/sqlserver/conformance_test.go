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

// TestOptionalInterfaces: the storage the conformance suite gets, as a
// storage.Storage, has the optional interfaces, so that their subtests run
// instead of being skipped. It needs no server.
func TestOptionalInterfaces(t *testing.T) {
	db, err := sql.Open("sqlserver", "sqlserver://sa:x@127.0.0.1:1?database=test")
	require.NoError(t, err)
	defer db.Close()
	s, err := sqlserver.New(db, sqlserver.Options{})
	require.NoError(t, err)
	var st storage.Storage[*sql.Tx] = s
	for name, ok := range map[string]bool{
		"Namer":           is[storage.Namer](st),
		"Leaser":          is[storage.Leaser](st),
		"Pinger":          is[storage.Pinger](st),
		"BacklogReader":   is[storage.BacklogReader](st),
		"ReceivedChecker": is[storage.ReceivedChecker](st),
		"NodeRegistry":    is[storage.NodeRegistry](st),
		"HistoryReader":   is[storage.HistoryReader](st),
	} {
		require.True(t, ok, "storage.%s", name)
	}
	require.False(t, is[storage.Notifier](st), "no notifications: the bus polls")
}

func is[I any](v any) bool {
	_, ok := v.(I)
	return ok
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
