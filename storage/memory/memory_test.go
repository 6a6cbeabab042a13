package memory_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/memory"
	"github.com/go-cap/cap/storage/storagetest"
)

func TestConformance(t *testing.T) {
	storagetest.Run(t, storagetest.Harness[*memory.Tx]{
		New: func(t *testing.T) storage.Storage[*memory.Tx] { return memory.New() },
	})
}

var nextID atomic.Int64

func rec(name string) *storage.Record {
	return &storage.Record{ID: nextID.Add(1), Version: "v1", Name: name, Content: []byte(`{}`)}
}

func TestTxOnCommit(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := memory.New()
	r := rec("oncommit")

	tx, err := s.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, s.InsertPublishedTx(ctx, tx, []*storage.Record{r}))
	var order []string
	tx.OnCommit(func() {
		// The writes are visible when the callbacks run.
		_, err := s.Get(ctx, storage.Published, r.ID)
		require.NoError(t, err)
		order = append(order, "first")
	})
	tx.OnCommit(func() { order = append(order, "second") })
	_, err = s.Get(ctx, storage.Published, r.ID)
	require.ErrorIs(t, err, storage.ErrNotFound, "an uncommitted row is visible")
	require.Empty(t, order)

	require.NoError(t, s.Commit(ctx, tx))
	require.Equal(t, []string{"first", "second"}, order)
	tx.OnCommit(func() { order = append(order, "late") })
	require.Equal(t, []string{"first", "second"}, order, "a callback registered after Commit ran")
}

func TestTxRollbackDropsOnCommit(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := memory.New()
	tx, err := s.Begin(ctx)
	require.NoError(t, err)
	r := rec("rollback")
	require.NoError(t, s.InsertPublishedTx(ctx, tx, []*storage.Record{r}))
	ran := false
	tx.OnCommit(func() { ran = true })
	require.NoError(t, s.Rollback(ctx, tx))
	require.NoError(t, tx.Rollback(), "Rollback twice")
	require.ErrorIs(t, s.Commit(ctx, tx), memory.ErrTxDone, "Commit after Rollback")
	require.False(t, ran)
	_, err = s.Get(ctx, storage.Published, r.ID)
	require.ErrorIs(t, err, storage.ErrNotFound)
	require.ErrorIs(t, s.InsertPublishedTx(ctx, tx, []*storage.Record{rec("late")}), memory.ErrTxDone)
}

func TestTxFinishedStates(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := memory.New()
	tx, err := s.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, tx.Commit())
	require.NoError(t, s.Rollback(ctx, tx), "Rollback after Commit")
	require.ErrorIs(t, s.Commit(ctx, tx), memory.ErrTxDone, "Commit twice")
	require.ErrorIs(t, s.SetOutcomesTx(ctx, tx, storage.Published, nil), memory.ErrTxDone)

	other, err := memory.New().Begin(ctx)
	require.NoError(t, err)
	require.ErrorIs(t, s.Commit(ctx, other), memory.ErrForeignTx)
	require.ErrorIs(t, s.InsertPublishedTx(ctx, other, nil), memory.ErrForeignTx)
	require.ErrorIs(t, s.Commit(ctx, nil), memory.ErrForeignTx)
}

// TestTxCommitConflict: of two transactions that mark the same row
// Succeeded, the second fails at Commit with ErrStale and its OnCommit
// functions do not run.
func TestTxCommitConflict(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := memory.New()
	r := rec("conflict")
	r.Group, r.MessageID = "g", "m"
	ok, err := s.InsertReceived(ctx, r)
	require.NoError(t, err)
	require.True(t, ok)

	out := []storage.Outcome{{ID: r.ID, Status: storage.StatusSucceeded}}
	tx1, _ := s.Begin(ctx)
	tx2, _ := s.Begin(ctx)
	require.NoError(t, s.SetOutcomesTx(ctx, tx1, storage.Received, out))
	require.NoError(t, s.SetOutcomesTx(ctx, tx2, storage.Received, out))
	ran := false
	tx2.OnCommit(func() { ran = true })
	require.NoError(t, s.Commit(ctx, tx1))
	require.ErrorIs(t, s.Commit(ctx, tx2), storage.ErrStale)
	require.False(t, ran, "OnCommit ran after a failed commit")
	require.NoError(t, s.Rollback(ctx, tx2), "Rollback after a failed Commit")

	// Ids taken between insert and commit fail the commit too.
	a := rec("dup")
	tx3, _ := s.Begin(ctx)
	require.NoError(t, s.InsertPublishedTx(ctx, tx3, []*storage.Record{a}))
	b := *a
	require.NoError(t, s.InsertPublished(ctx, []*storage.Record{&b}))
	require.ErrorIs(t, s.Commit(ctx, tx3), memory.ErrDuplicateID)
}

// TestTxOutcomeOnOwnInsert: a transaction may write the outcome of a row it
// inserted itself.
func TestTxOutcomeOnOwnInsert(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := memory.New()
	r := rec("own")
	tx, _ := s.Begin(ctx)
	require.NoError(t, s.InsertPublishedTx(ctx, tx, []*storage.Record{r}))
	require.NoError(t, s.SetOutcomesTx(ctx, tx, storage.Published, []storage.Outcome{{ID: r.ID, Status: storage.StatusSucceeded, ExpiresIn: time.Hour}}))
	err := s.SetOutcomesTx(ctx, tx, storage.Published, []storage.Outcome{{ID: r.ID, Status: storage.StatusFailed}})
	require.ErrorIs(t, err, storage.ErrStale, "the transaction sees its own Succeeded outcome")
	require.NoError(t, s.Commit(ctx, tx))
	got, err := s.Get(ctx, storage.Published, r.ID)
	require.NoError(t, err)
	require.Equal(t, storage.StatusSucceeded, got.Status)
	require.Nil(t, got.NextAttemptAt)
}

func TestNotifications(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	s := memory.New()
	ch, err := s.Notifications(ctx)
	require.NoError(t, err)
	other, err := s.Notifications(t.Context())
	require.NoError(t, err)

	quiet := func(what string) {
		t.Helper()
		select {
		case <-ch:
			t.Fatalf("notification after %s", what)
		default:
		}
	}
	heard := func(what string) {
		t.Helper()
		select {
		case <-ch:
		default:
			t.Fatalf("no notification after %s", what)
		}
	}

	// Signals never block the writer: many inserts, one buffered value.
	for range 3 {
		require.NoError(t, s.InsertPublished(ctx, []*storage.Record{rec("n")}))
	}
	heard("InsertPublished")
	quiet("draining the buffer")
	<-other

	p := rec("n")
	tx, _ := s.Begin(ctx)
	require.NoError(t, s.InsertPublishedTx(ctx, tx, []*storage.Record{p}))
	quiet("an uncommitted insert")
	require.NoError(t, s.Commit(ctx, tx))
	heard("the commit of an insert")

	tx, _ = s.Begin(ctx)
	require.NoError(t, s.InsertPublishedTx(ctx, tx, []*storage.Record{rec("n")}))
	require.NoError(t, s.Rollback(ctx, tx))
	quiet("a rollback")

	r := rec("received")
	r.Group, r.MessageID = "g", "m"
	_, err = s.InsertReceived(ctx, r)
	require.NoError(t, err)
	quiet("InsertReceived")

	require.NoError(t, s.Reschedule(ctx, storage.Published, []int64{p.ID}, 0))
	heard("Reschedule")

	tx, _ = s.Begin(ctx)
	require.NoError(t, s.SetOutcomesTx(ctx, tx, storage.Published, []storage.Outcome{{ID: p.ID, Status: storage.StatusFailed, Retry: true}}))
	require.NoError(t, s.Commit(ctx, tx))
	heard("the commit of a retried outcome")

	cancel()
	require.Eventually(t, func() bool {
		select {
		case _, open := <-ch:
			return !open
		default:
			return false
		}
	}, 5*time.Second, time.Millisecond, "channel not closed after its context ended")
	// Writes after the subscriber left still work and reach the others.
	require.NoError(t, s.InsertPublished(t.Context(), []*storage.Record{rec("after")}))
	select {
	case <-other:
	case <-time.After(5 * time.Second):
		t.Fatal("the other subscriber heard nothing")
	}
}

func TestName(t *testing.T) {
	t.Parallel()
	require.Equal(t, "InMemory", memory.New().Name())
}

// TestDeleteExpiredFreesRows: expired rows leave every index, so the
// de-duplication key of a Received row is free again.
func TestDeleteExpiredFreesRows(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := memory.New()
	const n = 10000
	recs := make([]*storage.Record, n)
	for i := range recs {
		recs[i] = rec("bulk")
		recs[i].Status, recs[i].Terminal, recs[i].ExpiresIn = storage.StatusSucceeded, true, time.Nanosecond
	}
	require.NoError(t, s.InsertPublished(ctx, recs))
	r := rec("received")
	r.Group, r.MessageID = "g", "m"
	r.Status, r.Terminal, r.ExpiresIn = storage.StatusFailed, true, time.Nanosecond
	_, err := s.InsertReceived(ctx, r)
	require.NoError(t, err)

	require.Eventually(t, func() bool {
		d, err := s.DeleteExpired(ctx, storage.Published, 1000)
		require.NoError(t, err)
		return d == 0
	}, 5*time.Second, time.Millisecond)
	counts, err := s.Counts(ctx, storage.Published)
	require.NoError(t, err)
	require.Empty(t, counts)
	_, total, err := s.List(ctx, storage.Published, storage.ListQuery{})
	require.NoError(t, err)
	require.Zero(t, total)

	d, err := s.DeleteExpired(ctx, storage.Received, 10)
	require.NoError(t, err)
	require.EqualValues(t, 1, d)
	again := rec("received")
	again.Group, again.MessageID = "g", "m"
	ok, err := s.InsertReceived(ctx, again)
	require.NoError(t, err)
	require.True(t, ok, "the de-duplication key outlived its row")
}

// TestClaimZeroLease: a claim with no lease returns each row once.
func TestClaimZeroLease(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := memory.New()
	require.NoError(t, s.InsertPublished(ctx, []*storage.Record{rec("a"), rec("b")}))
	got, err := s.Claim(ctx, storage.Published, storage.ClaimRequest{Version: "v1", Limit: 10})
	require.NoError(t, err)
	require.Len(t, got, 2)
}

func TestClaimedRecordsAreCopies(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := memory.New()
	r := rec("copy")
	require.NoError(t, s.InsertPublished(ctx, []*storage.Record{r}))
	r.Content[0] = 'X' // the caller reuses its buffer
	got, err := s.Claim(ctx, storage.Published, storage.ClaimRequest{Version: "v1", Limit: 1, Lease: time.Hour})
	require.NoError(t, err)
	require.Equal(t, "{}", string(got[0].Content))
	got[0].Content[0] = 'Y'
	*got[0].NextAttemptAt = time.Time{}
	again, err := s.Get(ctx, storage.Published, r.ID)
	require.NoError(t, err)
	require.Equal(t, "{}", string(again.Content))
	require.False(t, again.NextAttemptAt.IsZero())
}
