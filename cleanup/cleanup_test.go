package cleanup_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/cleanup"
	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/memory"
)

// seed stores n rows in each table and gives them outcome st, expiring
// after exp.
func seed(t *testing.T, s *memory.Storage, first int64, n int, st storage.Status, exp time.Duration) {
	t.Helper()
	ctx := context.Background()
	for _, tb := range []storage.Table{storage.Published, storage.Received} {
		var outs []storage.Outcome
		for i := range n {
			id := first + int64(i)
			rec := &storage.Record{ID: id, Version: "v1", Name: "t", Content: []byte(`{"Headers":{},"Value":null}`)}
			if tb == storage.Published {
				require.NoError(t, s.InsertPublished(ctx, []*storage.Record{rec}))
			} else {
				rec.Group, rec.MessageID = "g", strconv.FormatInt(id, 10)
				_, err := s.InsertReceived(ctx, rec)
				require.NoError(t, err)
			}
			outs = append(outs, storage.Outcome{ID: id, Status: st, ExpiresIn: exp})
		}
		require.NoError(t, s.SetOutcomes(ctx, tb, outs))
	}
}

func TestCollectDeletesOnlyExpired(t *testing.T) {
	t.Parallel()
	s := memory.New()
	seed(t, s, 1, 25, storage.StatusSucceeded, time.Millisecond) // expire at once
	seed(t, s, 100, 7, storage.StatusFailed, time.Millisecond)
	seed(t, s, 200, 5, storage.StatusSucceeded, time.Hour) // kept
	seed(t, s, 300, 3, storage.StatusScheduled, time.Millisecond)
	// Time, not an event: the memory store reads the wall clock and takes
	// no expiry in the past, so the short expiries must pass.
	time.Sleep(10 * time.Millisecond)

	var calls int
	c := &cleanup.Collector{Store: countingDeleter{s, &calls}, BatchSize: 10}
	n, err := c.Collect(context.Background())
	require.NoError(t, err)
	require.EqualValues(t, 2*(25+7), n)
	// 32 rows per table in batches of 10: 10, 10, 10, 2 per table.
	require.Equal(t, 8, calls)
	for _, tb := range []storage.Table{storage.Published, storage.Received} {
		counts, err := s.Counts(context.Background(), tb)
		require.NoError(t, err)
		require.EqualValues(t, 5, counts[storage.StatusSucceeded], tb.String())
		require.Zero(t, counts[storage.StatusFailed], tb.String())
		require.EqualValues(t, 3, counts[storage.StatusScheduled], tb.String())
	}
}

type countingDeleter struct {
	d     cleanup.Deleter
	calls *int
}

func (c countingDeleter) DeleteExpired(ctx context.Context, t storage.Table, limit int) (int64, error) {
	*c.calls++
	return c.d.DeleteExpired(ctx, t, limit)
}

type failing struct{}

func (failing) DeleteExpired(context.Context, storage.Table, int) (int64, error) {
	return 0, errors.New("database down")
}

func TestCollectReportsErrorsAndRunStops(t *testing.T) {
	t.Parallel()
	c := &cleanup.Collector{Store: failing{}}
	_, err := c.Collect(context.Background())
	require.EqualError(t, err, "database down")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		(&cleanup.Collector{Store: memory.New(), Interval: time.Millisecond}).Run(ctx)
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop with its context")
	}
}
