package postgres_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/postgres"
)

// A Received row with a value the database cannot hold fails with
// storage.ErrRefused, one after an outage would not: the bus fails the first
// kind of message for good and returns the second to the broker.
func TestInsertReceivedRefusedValue(t *testing.T) {
	t.Parallel()
	s := newPgx(t, postgres.Options{})
	ctx := context.Background()
	rec := &storage.Record{ID: 1, Version: "v1", Name: strings.Repeat("n", 201), Group: "g", MessageID: "m1",
		Content: []byte(`{"Headers":{},"Value":null}`)}
	_, err := s.InsertReceived(ctx, rec)
	require.ErrorIs(t, err, storage.ErrRefused, "a Name longer than its column")
	_, err = s.InsertReceivedBatch(ctx, []*storage.Record{rec})
	require.ErrorIs(t, err, storage.ErrRefused, "the same in a batch")

	rec.Name = "ok"
	ok, err := s.InsertReceived(ctx, rec)
	require.NoError(t, err)
	require.True(t, ok)
}
