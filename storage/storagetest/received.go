package storagetest

import (
	"sync"
	"testing"

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
