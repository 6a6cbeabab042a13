package storagetest

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage"
)

// failedContent is the Content an outcome writes after a failure.
var failedContent = []byte(`{"Headers":{"cap-exception":"System.Exception-->boom"},"Value":{"n":1}}`)

// testOutcomes: SetOutcomes writes Status, Retries, Content, ExpiresAt and
// NextAttemptAt of several rows at once, and ignores unknown ids.
func testOutcomes[TTx any](t *testing.T, e *env[TTx]) {
	succeeded := e.rec("outcome.succeeded")
	failed := e.rec("outcome.failed")
	retried := e.rec("outcome.retried")
	retried.ExpiresIn = time.Hour // the outcome clears it
	all := []*storage.Record{succeeded, failed, retried}
	e.insert(all...)
	require.Len(t, e.claim(storage.Published, 10, longLease), 3)

	before := time.Now()
	e.setOutcomes(storage.Published,
		storage.Outcome{ID: succeeded.ID, Status: storage.StatusSucceeded, ExpiresIn: 24 * time.Hour},
		storage.Outcome{ID: failed.ID, Status: storage.StatusFailed, Retries: 50, Content: failedContent,
			ExpiresIn: 15 * 24 * time.Hour, ExpiresFromAdded: true},
		storage.Outcome{ID: retried.ID, Status: storage.StatusFailed, Retries: 1, Content: failedContent,
			Retry: true, RetryIn: time.Hour},
		storage.Outcome{ID: e.ids.Next(), Status: storage.StatusSucceeded, ExpiresIn: time.Hour}, // unknown: ignored
	)
	after := time.Now()

	got := e.get(storage.Published, succeeded.ID)
	require.Equal(t, storage.StatusSucceeded, got.Status)
	require.Equal(t, 0, got.Retries)
	require.Equal(t, string(succeeded.Content), string(got.Content), "Content changed by an outcome without Content")
	require.Nil(t, got.NextAttemptAt, "a Succeeded outcome without Retry leaves no NextAttemptAt")
	require.NotNil(t, got.ExpiresAt)
	requireAround(t, *got.ExpiresAt, before, after, 24*time.Hour, "ExpiresAt = now + ExpiresIn")

	got = e.get(storage.Published, failed.ID)
	require.Equal(t, storage.StatusFailed, got.Status)
	require.Equal(t, 50, got.Retries)
	require.Equal(t, string(failedContent), string(got.Content))
	require.Nil(t, got.NextAttemptAt, "a Failed outcome without Retry leaves no NextAttemptAt")
	require.NotNil(t, got.ExpiresAt)
	require.WithinDuration(t, failed.Added.Add(15*24*time.Hour), *got.ExpiresAt, precision, "ExpiresAt = Added + ExpiresIn")

	got = e.get(storage.Published, retried.ID)
	require.Equal(t, storage.StatusFailed, got.Status)
	require.Equal(t, 1, got.Retries)
	require.Nil(t, got.ExpiresAt, "an outcome with ExpiresIn 0 leaves ExpiresAt NULL")
	require.NotNil(t, got.NextAttemptAt)
	requireAround(t, *got.NextAttemptAt, before, after, time.Hour, "NextAttemptAt = now + RetryIn")

	e.requireNothingDue(storage.Published)
	require.NoError(t, e.s.SetOutcomes(e.ctx, storage.Published, nil), "SetOutcomes of no outcomes")

	// The Received table, and an outcome on the other table's id.
	rcv := e.received("outcome.received", "g", "m-outcome")
	e.insertReceived(rcv)
	require.Len(t, e.claim(storage.Received, 10, longLease), 1)
	e.setOutcomes(storage.Received, storage.Outcome{ID: rcv.ID, Status: storage.StatusSucceeded, ExpiresIn: time.Hour})
	e.setOutcomes(storage.Published, storage.Outcome{ID: rcv.ID, Status: storage.StatusFailed, Retries: 9})
	got = e.get(storage.Received, rcv.ID)
	require.Equal(t, storage.StatusSucceeded, got.Status)
	require.Equal(t, 0, got.Retries)
	require.Nil(t, got.NextAttemptAt)
	e.requireNothingDue(storage.Received)
	e.requireGone(storage.Published, rcv.ID)

	// A success stands: the late Failed outcome of an instance whose lease
	// ended is ignored, next to an outcome that applies; a forced one
	// applies.
	other := e.received("outcome.other", "g", "m-outcome-other")
	e.insertReceived(other)
	e.setOutcomes(storage.Received,
		storage.Outcome{ID: rcv.ID, Status: storage.StatusFailed, Retries: 1, Retry: true, Content: []byte(`{"Headers":{},"Value":1}`)},
		storage.Outcome{ID: other.ID, Status: storage.StatusFailed, Retries: 1})
	got = e.get(storage.Received, rcv.ID)
	require.Equal(t, storage.StatusSucceeded, got.Status, "a late outcome undid a success")
	require.Equal(t, 0, got.Retries)
	require.Nil(t, got.NextAttemptAt)
	require.Equal(t, string(rcv.Content), string(got.Content))
	require.Equal(t, storage.StatusFailed, e.get(storage.Received, other.ID).Status)
	e.setOutcomes(storage.Received, storage.Outcome{ID: rcv.ID, Status: storage.StatusScheduled, Retry: true, Force: true})
	got = e.get(storage.Received, rcv.ID)
	require.Equal(t, storage.StatusScheduled, got.Status, "a forced outcome applies")
	require.NotNil(t, got.NextAttemptAt)
}

// testOutcomeRetry: a Failed outcome with Retry makes the row due again
// after RetryIn, not before.
func testOutcomeRetry[TTx any](t *testing.T, e *env[TTx]) {
	const retryIn = 300 * time.Millisecond
	r := e.rec("outcome.retry")
	e.insert(r)
	require.Len(t, e.claim(storage.Published, 10, longLease), 1)
	// Let time pass, so an ExpiresAt from now would differ from one from Added.
	sleepUntil(r.Added.Add(50 * time.Millisecond))

	start := time.Now()
	e.setOutcomes(storage.Published, storage.Outcome{ID: r.ID, Status: storage.StatusFailed, Retries: 1, Content: failedContent,
		ExpiresIn: 15 * 24 * time.Hour, ExpiresFromAdded: true, Retry: true, RetryIn: retryIn})

	var again []*storage.Record
	eventually(t, "the failed row to be claimed again", func() bool {
		again = e.claim(storage.Published, 10, longLease)
		if len(again) > 0 {
			require.GreaterOrEqual(t, time.Since(start), retryIn-precision, "row claimed again before RetryIn passed")
		}
		return len(again) > 0
	})
	require.Equal(t, []int64{r.ID}, idsOf(again))
	require.Equal(t, storage.StatusFailed, again[0].Status)
	require.Equal(t, 1, again[0].Retries)
	require.Equal(t, string(failedContent), string(again[0].Content))
	require.NotNil(t, again[0].ExpiresAt)
	require.WithinDuration(t, r.Added.Add(15*24*time.Hour), *again[0].ExpiresAt, precision, "ExpiresAt = Added + ExpiresIn")
	e.requireNothingDue(storage.Published)
}

// testSetOutcomesTx: outcomes written in a transaction commit with it and
// vanish on rollback; a row already Succeeded gives ErrStale, a missing row
// ErrNotFound.
func testSetOutcomesTx[TTx any](t *testing.T, e *env[TTx]) {
	a, b, c := e.rec("outcometx.a"), e.rec("outcometx.b"), e.rec("outcometx.c")
	e.insert(a, b, c)
	claimed := e.claim(storage.Published, 10, longLease)
	require.Len(t, claimed, 3)
	leaseOf := map[int64]time.Time{}
	for _, r := range claimed {
		leaseOf[r.ID] = *r.NextAttemptAt
	}

	// Commit: two outcomes in one transaction.
	require.NoError(t, e.inTx(func(tx TTx) error {
		return e.s.SetOutcomesTx(e.ctx, tx, storage.Published, []storage.Outcome{
			{ID: a.ID, Status: storage.StatusSucceeded, ExpiresIn: time.Hour},
			{ID: b.ID, Status: storage.StatusFailed, Retries: 1, Content: failedContent, Retry: true, RetryIn: time.Hour},
		})
	}))
	got := e.get(storage.Published, a.ID)
	require.Equal(t, storage.StatusSucceeded, got.Status)
	require.Nil(t, got.NextAttemptAt)
	require.NotNil(t, got.ExpiresAt)
	got = e.get(storage.Published, b.ID)
	require.Equal(t, storage.StatusFailed, got.Status)
	require.Equal(t, 1, got.Retries)
	require.Equal(t, string(failedContent), string(got.Content))

	// Rollback: nothing of it stays.
	tx, err := e.s.Begin(e.ctx)
	require.NoError(t, err)
	require.NoError(t, e.s.SetOutcomesTx(e.ctx, tx, storage.Published, []storage.Outcome{
		{ID: c.ID, Status: storage.StatusSucceeded, Content: failedContent, ExpiresIn: time.Hour},
	}))
	require.NoError(t, e.s.Rollback(e.ctx, tx))
	e.requireUntouched(c, leaseOf[c.ID])

	// A row already Succeeded is stale, also next to a valid outcome.
	tx, err = e.s.Begin(e.ctx)
	require.NoError(t, err)
	err = e.s.SetOutcomesTx(e.ctx, tx, storage.Published, []storage.Outcome{
		{ID: c.ID, Status: storage.StatusSucceeded, ExpiresIn: time.Hour},
		{ID: a.ID, Status: storage.StatusFailed, Retries: 1},
	})
	require.ErrorIs(t, err, storage.ErrStale, "outcome on a Succeeded row")
	require.NoError(t, e.s.Rollback(e.ctx, tx))
	require.Equal(t, storage.StatusSucceeded, e.get(storage.Published, a.ID).Status)
	e.requireUntouched(c, leaseOf[c.ID])

	// A missing row, and a row of the other table.
	for _, id := range []int64{e.ids.Next(), a.ID} {
		table := storage.Published
		if id == a.ID {
			table = storage.Received
		}
		tx, err = e.s.Begin(e.ctx)
		require.NoError(t, err)
		err = e.s.SetOutcomesTx(e.ctx, tx, table, []storage.Outcome{{ID: id, Status: storage.StatusSucceeded}})
		require.ErrorIs(t, err, storage.ErrNotFound, "outcome on a missing row")
		require.NoError(t, e.s.Rollback(e.ctx, tx))
	}

	// A Failed row is not stale: it can still succeed.
	require.NoError(t, e.inTx(func(tx TTx) error {
		return e.s.SetOutcomesTx(e.ctx, tx, storage.Published, []storage.Outcome{{ID: b.ID, Status: storage.StatusSucceeded, Retries: 1}})
	}))
	require.Equal(t, storage.StatusSucceeded, e.get(storage.Published, b.ID).Status)

	// The inbox: a Received row succeeds once.
	rcv := e.received("outcometx.received", "g", "m-outcometx")
	e.insertReceived(rcv)
	require.NoError(t, e.inTx(func(tx TTx) error {
		return e.s.SetOutcomesTx(e.ctx, tx, storage.Received, []storage.Outcome{{ID: rcv.ID, Status: storage.StatusSucceeded, ExpiresIn: time.Hour}})
	}))
	err = e.inTx(func(tx TTx) error {
		return e.s.SetOutcomesTx(e.ctx, tx, storage.Received, []storage.Outcome{{ID: rcv.ID, Status: storage.StatusSucceeded, ExpiresIn: time.Hour}})
	})
	require.ErrorIs(t, err, storage.ErrStale, "second success of a Received row")
}

// requireUntouched requires r as inserted, with the lease of its claim.
func (e *env[TTx]) requireUntouched(r *storage.Record, lease time.Time) {
	e.t.Helper()
	want := *r
	want.NextAttemptAt = &lease
	requireSameRow(e.t, &want, e.get(storage.Published, r.ID))
}

// testSetOutcomesTxConcurrent: of Concurrent transactions that each mark the
// same row Succeeded, exactly one commits; the others fail with ErrStale,
// from SetOutcomesTx or from Commit.
func testSetOutcomesTxConcurrent[TTx any](t *testing.T, e *env[TTx]) {
	rcv := e.received("outcometx.race", "g", "m-race")
	e.insertReceived(rcv)

	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		committed int
		stale     int
		others    []error
	)
	start := make(chan struct{})
	for range e.concurrent {
		wg.Go(func() {
			<-start
			err := e.inTx(func(tx TTx) error {
				return e.s.SetOutcomesTx(e.ctx, tx, storage.Received, []storage.Outcome{
					{ID: rcv.ID, Status: storage.StatusSucceeded, ExpiresIn: time.Hour},
				})
			})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				committed++
			case errors.Is(err, storage.ErrStale):
				stale++
			default:
				others = append(others, err)
			}
		})
	}
	close(start)
	wg.Wait()
	require.Empty(t, others, "errors other than ErrStale")
	require.Equal(t, 1, committed, "transactions that marked the row Succeeded")
	require.Equal(t, e.concurrent-1, stale, "transactions that got ErrStale")
	require.Equal(t, storage.StatusSucceeded, e.get(storage.Received, rcv.ID).Status)
}
