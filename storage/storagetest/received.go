package storagetest

import (
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage"
)

// testReceivedDedup: InsertReceived stores one row per (MessageID, Group);
// a duplicate changes nothing; a Terminal row has no NextAttemptAt.
func testReceivedDedup[TTx any](t *testing.T, e *env[TTx]) {
	first := e.received("dedup.first", "g1", "m-dedup")
	first.Retries = 1
	e.insertReceived(first)
	requireSameRow(t, first, e.get(storage.Received, first.ID))

	dup := e.received("dedup.second", "g1", "m-dedup")
	dup.Content = failedContent
	dup.Retries = 7
	dup.Status = storage.StatusFailed
	ok, err := e.s.InsertReceived(e.ctx, dup)
	require.NoError(t, err, "InsertReceived of a duplicate")
	require.False(t, ok, "InsertReceived of a duplicate reported inserted")
	requireSameRow(t, first, e.get(storage.Received, first.ID))
	e.requireGone(storage.Received, dup.ID)

	otherGroup := e.received("dedup.first", "g2", "m-dedup")
	e.insertReceived(otherGroup)
	otherMessage := e.received("dedup.first", "g1", "m-dedup-2")
	otherMessage.Status = ""
	e.insertReceived(otherMessage)
	requireSameRow(t, otherMessage, e.get(storage.Received, otherMessage.ID))

	// A message that failed for good on arrival.
	terminal := e.received("dedup.terminal", "g1", "m-dedup-3")
	terminal.Status = storage.StatusFailed
	terminal.Terminal = true
	terminal.ExpiresIn = 0
	e.insertReceived(terminal)
	got := e.get(storage.Received, terminal.ID)
	require.Nil(t, got.NextAttemptAt, "a Terminal row has a NextAttemptAt")
	require.Equal(t, storage.StatusFailed, got.Status)

	claimed := e.claim(storage.Received, 10, longLease)
	require.ElementsMatch(t, []int64{first.ID, otherGroup.ID, otherMessage.ID}, idsOf(claimed), "claimable Received rows")
	e.requireNothingDue(storage.Published)
	_, total, err := e.s.List(e.ctx, storage.Received, storage.ListQuery{})
	require.NoError(t, err)
	require.EqualValues(t, 4, total, "Received rows")
}

// testReceivedDedupConcurrent: of Concurrent inserts of the same
// (MessageID, Group), exactly one inserts and none fails.
func testReceivedDedupConcurrent[TTx any](t *testing.T, e *env[TTx]) {
	recs := make([]*storage.Record, e.concurrent)
	for i := range recs {
		recs[i] = e.received("dedup.race", "g", "m-race")
	}
	inserted := make([]bool, len(recs))
	errs := make([]error, len(recs))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, r := range recs {
		wg.Go(func() {
			<-start
			inserted[i], errs[i] = e.s.InsertReceived(e.ctx, r)
		})
	}
	close(start)
	wg.Wait()

	winners := 0
	for i, r := range recs {
		require.NoError(t, errs[i], "InsertReceived %d", i)
		if inserted[i] {
			winners++
			require.Equal(t, "m-race", e.get(storage.Received, r.ID).MessageID)
		} else {
			e.requireGone(storage.Received, r.ID)
		}
	}
	require.Equal(t, 1, winners, "inserts that reported inserted")
}

// testReceivedBatch: InsertReceivedBatch stores the rows whose (MessageID,
// Group) is new, the first of duplicates within the batch, writes back the
// values of those it stored, and reports which.
func testReceivedBatch[TTx any](t *testing.T, e *env[TTx]) {
	none, err := e.s.InsertReceivedBatch(e.ctx, nil)
	require.NoError(t, err, "InsertReceivedBatch of no rows")
	require.Empty(t, none)

	stored := e.received("batch.a", "g1", "m-batch-1")
	e.insertReceived(stored)

	dupOfStored := e.received("batch.a", "g1", "m-batch-1")
	first := e.received("batch.b", "g1", "m-batch-2")
	first.Retries = 2
	first.ExpiresIn = time.Hour
	otherGroup := e.received("batch.b", "g2", "m-batch-2")
	otherGroup.Status = ""
	delayed := e.received("batch.c", "g1", "m-batch-3")
	delayed.Status = storage.StatusDelayed
	delayed.DueIn = time.Hour
	dupInBatch := e.received("batch.b", "g1", "m-batch-2")
	terminal := e.received("batch.d", "g1", "m-batch-4")
	terminal.Status = storage.StatusFailed
	terminal.Terminal = true
	terminal.ExpiresIn = time.Hour
	batch := []*storage.Record{dupOfStored, first, otherGroup, delayed, dupInBatch, terminal}

	before := time.Now()
	inserted, err := e.s.InsertReceivedBatch(e.ctx, batch)
	require.NoError(t, err, "InsertReceivedBatch")
	after := time.Now()
	require.Equal(t, []bool{false, true, true, true, false, true}, inserted, "rows reported inserted")
	for i, r := range batch {
		if !inserted[i] {
			require.True(t, r.Added.IsZero(), "Added written back into skipped row %d", r.ID)
			e.requireGone(storage.Received, r.ID)
			continue
		}
		requireInserted(t, r, before, after)
		requireSameRow(t, r, e.get(storage.Received, r.ID))
	}
	requireSameRow(t, stored, e.get(storage.Received, stored.ID))

	claimed := e.claim(storage.Received, 10, longLease)
	require.ElementsMatch(t, []int64{stored.ID, first.ID, otherGroup.ID}, idsOf(claimed), "claimable Received rows")
}

// testReceivedBatchAtomic: a batch that fails (a row id already taken)
// stores none of its rows.
func testReceivedBatchAtomic[TTx any](t *testing.T, e *env[TTx]) {
	taken := e.received("atomic.a", "g", "m-atomic-1")
	e.insertReceived(taken)
	fresh := e.received("atomic.b", "g", "m-atomic-2")
	clash := e.received("atomic.c", "g", "m-atomic-3")
	clash.ID = taken.ID
	_, err := e.s.InsertReceivedBatch(e.ctx, []*storage.Record{fresh, clash})
	require.Error(t, err, "InsertReceivedBatch with a row id already stored")
	e.requireGone(storage.Received, fresh.ID)
	require.Nil(t, fresh.NextAttemptAt, "values written back by a failed batch")
	requireSameRow(t, taken, e.get(storage.Received, taken.ID))
}

// testReceivedBatchConcurrent: Concurrent batches holding the same keys in
// different orders neither fail nor store a key twice.
func testReceivedBatchConcurrent[TTx any](t *testing.T, e *env[TTx]) {
	const keys = 20
	batches := make([][]*storage.Record, e.concurrent)
	for i := range batches {
		for _, k := range rand.Perm(keys) {
			batches[i] = append(batches[i], e.received("batch.race", "g", "m-race-"+strconv.Itoa(k)))
		}
	}
	results := make([][]bool, len(batches))
	errs := make([]error, len(batches))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, b := range batches {
		wg.Go(func() {
			<-start
			results[i], errs[i] = e.s.InsertReceivedBatch(e.ctx, b)
		})
	}
	close(start)
	wg.Wait()

	winners := map[string]int64{}
	for i, b := range batches {
		require.NoError(t, errs[i], "InsertReceivedBatch %d", i)
		require.Len(t, results[i], len(b))
		for j, r := range b {
			if !results[i][j] {
				e.requireGone(storage.Received, r.ID)
				continue
			}
			require.NotContains(t, winners, r.MessageID, "%s inserted twice", r.MessageID)
			winners[r.MessageID] = r.ID
			require.Equal(t, r.MessageID, e.get(storage.Received, r.ID).MessageID)
		}
	}
	require.Len(t, winners, keys, "keys stored")
}
