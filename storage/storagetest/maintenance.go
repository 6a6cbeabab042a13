package storagetest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage"
)

// testDeleteExpired: DeleteExpired deletes expired Succeeded and Failed
// rows only, at most limit per call, and returns how many it deleted.
func testDeleteExpired[TTx any](t *testing.T, e *env[TTx]) {
	const soon = time.Millisecond
	mk := func(name string, st storage.Status, expiresIn time.Duration, terminal bool) *storage.Record {
		r := e.rec(name)
		r.Status, r.ExpiresIn, r.Terminal = st, expiresIn, terminal
		return r
	}
	var expired, kept []*storage.Record
	for range 5 {
		expired = append(expired, mk("expired.succeeded", storage.StatusSucceeded, soon, true))
	}
	for range 3 {
		expired = append(expired, mk("expired.failed", storage.StatusFailed, soon, true))
	}
	kept = append(kept,
		mk("kept.succeeded.later", storage.StatusSucceeded, time.Hour, true),
		mk("kept.failed.later", storage.StatusFailed, time.Hour, true),
		mk("kept.succeeded.never", storage.StatusSucceeded, 0, true),
		mk("kept.scheduled", storage.StatusScheduled, soon, false),
		mk("kept.queued", storage.StatusQueued, soon, false),
	)
	delayed := mk("kept.delayed", storage.StatusDelayed, 0, false)
	delayed.DueIn = soon // expires when due, but it is not done
	kept = append(kept, delayed)
	e.insert(append(expired, kept...)...)

	var rcv []*storage.Record
	for _, id := range []string{"m-expired-1", "m-expired-2"} {
		r := e.received("expired.received", "g", id)
		r.Status, r.ExpiresIn, r.Terminal = storage.StatusSucceeded, soon, true
		e.insertReceived(r)
		rcv = append(rcv, r)
	}

	// Wait for the expiries to pass.
	var last time.Time
	for _, r := range append(append(expired, kept...), rcv...) {
		if r.ExpiresAt != nil && r.ExpiresAt.Before(r.Added.Add(time.Minute)) && r.ExpiresAt.After(last) {
			last = *r.ExpiresAt
		}
	}
	sleepUntil(last.Add(20 * time.Millisecond))

	for i, want := range []int64{3, 3, 2, 0} {
		n, err := e.s.DeleteExpired(e.ctx, storage.Published, 3)
		require.NoError(t, err)
		require.Equal(t, want, n, "rows deleted by call %d with limit 3", i+1)
	}
	for _, r := range expired {
		e.requireGone(storage.Published, r.ID)
	}
	for _, r := range kept {
		requireSameRow(t, r, e.get(storage.Published, r.ID))
	}
	for _, r := range rcv {
		e.get(storage.Received, r.ID) // the other table is untouched
	}
	n, err := e.s.DeleteExpired(e.ctx, storage.Received, 10)
	require.NoError(t, err)
	require.EqualValues(t, 2, n, "expired Received rows deleted")
	for _, r := range rcv {
		e.requireGone(storage.Received, r.ID)
	}
	_, total := e.list(storage.Published, storage.ListQuery{})
	require.EqualValues(t, len(kept), total, "rows left")
}

// testMigrate: Migrate may run again, concurrently, on a migrated storage
// holding data, without error or loss.
func testMigrate[TTx any](t *testing.T, e *env[TTx]) {
	p := e.rec("migrate.published")
	e.insert(p)
	r := e.received("migrate.received", "g", "m-migrate")
	e.insertReceived(r)

	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() { errs[i] = e.s.Migrate(e.ctx) })
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "concurrent Migrate %d", i)
	}
	require.NoError(t, e.s.Migrate(e.ctx), "Migrate once more")

	requireSameRow(t, p, e.get(storage.Published, p.ID))
	requireSameRow(t, r, e.get(storage.Received, r.ID))
	ok, err := e.s.InsertReceived(e.ctx, e.received("migrate.received", "g", "m-migrate"))
	require.NoError(t, err)
	require.False(t, ok, "the (MessageID, Group) key survives Migrate")
	require.Equal(t, []int64{p.ID}, idsOf(e.claim(storage.Published, 10, longLease)))
}

// testNotifier: a storage.Notifier signals committed Published rows and
// closes its channel when the context ends.
func testNotifier[TTx any](t *testing.T, e *env[TTx]) {
	n, ok := e.s.(storage.Notifier)
	if !ok {
		t.Skip("the storage does not implement storage.Notifier")
	}
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	ch, err := n.Notifications(ctx)
	require.NoError(t, err)
	drain := func() {
		for {
			select {
			case <-ch:
			default:
				return
			}
		}
	}
	await := func(what string) {
		t.Helper()
		select {
		case _, open := <-ch:
			require.True(t, open, "notification channel closed early")
		case <-time.After(waitFor):
			t.Fatalf("no notification within %s after %s", waitFor, what)
		}
	}

	// A listener may need a moment to be set up: insert until it hears.
	deadline := time.Now().Add(waitFor)
	for heard := false; !heard; {
		e.insert(e.rec("notify.first"))
		select {
		case _, open := <-ch:
			require.True(t, open, "notification channel closed early")
			heard = true
		case <-time.After(100 * time.Millisecond):
			require.True(t, time.Now().Before(deadline), "no notification within %s of InsertPublished", waitFor)
		}
	}

	drain()
	e.insert(e.rec("notify.own"))
	await("InsertPublished")

	drain()
	require.NoError(t, e.inTx(func(tx TTx) error {
		return e.s.InsertPublishedTx(e.ctx, tx, []*storage.Record{e.rec("notify.tx")})
	}))
	await("the commit of InsertPublishedTx")

	cancel()
	closeBy := time.After(waitFor)
	for {
		select {
		case _, open := <-ch:
			if !open {
				return
			}
		case <-closeBy:
			t.Fatalf("notification channel not closed within %s after its context ended", waitFor)
		}
	}
}

// testNamer: a storage.Namer has a name for the dashboard.
func testNamer[TTx any](t *testing.T, e *env[TTx]) {
	n, ok := e.s.(storage.Namer)
	if !ok {
		t.Skip("the storage does not implement storage.Namer")
	}
	require.NotEmpty(t, n.Name())
}
