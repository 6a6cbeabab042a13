package storagetest

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage"
)

// testConcurrentClaimers: Concurrent claimers over ClaimRows rows (2,000 by
// default), half of them inserted while the claims run, never receive the
// same row and together receive all of them.
func testConcurrentClaimers[TTx any](t *testing.T, e *env[TTx]) {
	rows := e.claimRows
	batch := min(100, rows/8)
	all := e.recs(rows, "concurrent.claim")
	insert := func(from, to int) error {
		for i := from; i < to; i += batch {
			if err := e.s.InsertPublished(e.ctx, all[i:min(i+batch, to)]); err != nil {
				return err
			}
		}
		return nil
	}
	require.NoError(t, insert(0, rows/2))
	inserted := map[int64]bool{}
	for _, r := range all {
		inserted[r.ID] = true
	}

	var (
		mu      sync.Mutex
		owner   = map[int64]int{}
		dups    []string
		foreign []int64
		errs    []error
		total   atomic.Int64
		wg      sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	start := make(chan struct{})
	deadline := time.Now().Add(waitFor)
	for w := range e.concurrent {
		wg.Go(func() {
			<-start
			req := storage.ClaimRequest{Version: version, Limit: 7 + w*5%40, Lease: longLease}
			for total.Load() < int64(rows) {
				if time.Now().After(deadline) {
					fail(fmt.Errorf("claimer %d: only %d of %d rows claimed within %s", w, total.Load(), rows, waitFor))
					return
				}
				got, err := e.s.Claim(e.ctx, storage.Published, req)
				if err != nil {
					fail(fmt.Errorf("claimer %d: %w", w, err))
					return
				}
				mu.Lock()
				for _, r := range got {
					if prev, ok := owner[r.ID]; ok {
						dups = append(dups, fmt.Sprintf("row %d to claimers %d and %d", r.ID, prev, w))
					}
					if !inserted[r.ID] {
						foreign = append(foreign, r.ID)
					}
					owner[r.ID] = w
				}
				mu.Unlock()
				total.Add(int64(len(got)))
				if len(got) == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		})
	}
	wg.Go(func() {
		<-start
		if err := insert(rows/2, rows); err != nil {
			fail(fmt.Errorf("InsertPublished while claiming: %w", err))
		}
	})
	close(start)
	wg.Wait()

	require.Empty(t, errs)
	require.Empty(t, dups, "rows claimed twice")
	require.Empty(t, foreign, "claimed rows that were never inserted")
	require.Len(t, owner, rows, "rows claimed")
	e.requireNothingDue(storage.Published)
}

// testClaimVersionLimitOrder: Claim takes due rows of its Version only, at
// most Limit of them, earliest NextAttemptAt first.
func testClaimVersionLimitOrder[TTx any](t *testing.T, e *env[TTx]) {
	dues := []time.Duration{80, 0, 40, 120, 20, 60}
	v1 := make([]*storage.Record, len(dues))
	for i, d := range dues {
		v1[i] = e.rec(fmt.Sprintf("order.%d", i))
		v1[i].DueIn = d * time.Millisecond
	}
	v2 := e.recs(2, "other.version")
	for _, r := range v2 {
		r.Version = "v2"
	}
	e.insert(append(slices.Clone(v1), v2...)...)

	byDue := slices.Clone(v1)
	slices.SortFunc(byDue, func(a, b *storage.Record) int { return a.NextAttemptAt.Compare(*b.NextAttemptAt) })
	sleepUntil(byDue[len(byDue)-1].NextAttemptAt.Add(20 * time.Millisecond)) // all due
	want := idsOf(byDue)

	// Limit 1 shows the order; then batches of 2 show which rows a limited
	// claim takes (the order inside a batch is not specified).
	first := e.claim(storage.Published, 1, longLease)
	second := e.claim(storage.Published, 1, longLease)
	require.Equal(t, want[:2], append(idsOf(first), idsOf(second)...), "claim order by NextAttemptAt")
	third := e.claim(storage.Published, 2, longLease)
	require.ElementsMatch(t, want[2:4], idsOf(third), "the next two due rows")
	rest := e.claim(storage.Published, 5, longLease)
	require.ElementsMatch(t, want[4:], idsOf(rest), "the remaining rows, fewer than Limit")
	for _, g := range slices.Concat(first, second, third, rest) {
		for _, r := range v1 {
			if r.ID == g.ID {
				requireClaimed(t, r, g)
			}
		}
	}
	e.requireNothingDue(storage.Published)

	other := e.claimVersion(storage.Published, "v2", 10, longLease)
	require.ElementsMatch(t, idsOf(v2), idsOf(other), "rows of Version v2")
	require.Empty(t, e.claimVersion(storage.Published, "v3", 10, longLease), "rows of Version v3")
}

// testClaimTables: the Published and Received tables are claimed apart.
func testClaimTables[TTx any](t *testing.T, e *env[TTx]) {
	p := e.rec("tables.published")
	e.insert(p)
	r := e.received("tables.received", "g", "m-tables")
	e.insertReceived(r)

	gotR := e.claim(storage.Received, 10, longLease)
	require.Equal(t, []int64{r.ID}, idsOf(gotR), "claim of Received")
	requireClaimed(t, r, gotR[0])
	gotP := e.claim(storage.Published, 10, longLease)
	require.Equal(t, []int64{p.ID}, idsOf(gotP), "claim of Published")
	e.requireNothingDue(storage.Received)
	e.requireNothingDue(storage.Published)
	testClaimGroups(t, e)
}

// testClaimGroups: a Received claim with Groups takes only rows of those
// groups, and leaves the others due; a Published claim ignores Groups.
func testClaimGroups[TTx any](t *testing.T, e *env[TTx]) {
	a := e.received("groups.a", "ga", "m-groups")
	b := e.received("groups.b", "gb", "m-groups")
	c := e.received("groups.c", "gc", "m-groups")
	for _, r := range []*storage.Record{a, b, c} {
		e.insertReceived(r)
	}
	p := e.rec("groups.published")
	e.insert(p)
	claim := func(tb storage.Table, groups ...string) []int64 {
		t.Helper()
		got, err := e.s.Claim(e.ctx, tb, storage.ClaimRequest{Version: version, Limit: 10, Lease: longLease, Groups: groups})
		require.NoError(t, err)
		return idsOf(got)
	}
	require.ElementsMatch(t, []int64{a.ID, c.ID}, claim(storage.Received, "ga", "gc", "nobody"), "claim of groups ga, gc")
	require.Empty(t, claim(storage.Received, "ga"), "ga's row is leased")
	require.Equal(t, []int64{p.ID}, claim(storage.Published, "ga"), "Published ignores Groups")
	require.Equal(t, []int64{b.ID}, claim(storage.Received), "no Groups: every group")
}

// testLease: a claimed row is not claimed again while its lease runs; a row
// whose lease ended is claimed again. The Status is not changed by claims.
func testLease[TTx any](t *testing.T, e *env[TTx]) {
	const lease = 200 * time.Millisecond
	long := e.rec("lease.long")
	e.insert(long)
	require.Equal(t, []int64{long.ID}, idsOf(e.claim(storage.Published, 10, longLease)))

	short := e.rec("lease.short")
	e.insert(short)
	start := time.Now()
	require.Equal(t, []int64{short.ID}, idsOf(e.claim(storage.Published, 10, lease)))

	var again []*storage.Record
	eventually(t, "the row to be claimed again after its lease", func() bool {
		again = e.claim(storage.Published, 10, longLease)
		if len(again) > 0 {
			require.GreaterOrEqual(t, time.Since(start), lease-precision, "row claimed again before its lease ended")
		}
		return len(again) > 0
	})
	require.Equal(t, []int64{short.ID}, idsOf(again), "only the row whose lease ended")
	e.requireNothingDue(storage.Published)
	for _, r := range []*storage.Record{long, short} {
		got := e.get(storage.Published, r.ID)
		require.Equal(t, storage.StatusScheduled, got.Status, "a claim changed the Status")
		require.Equal(t, 0, got.Retries, "a claim changed Retries")
	}
}

// testReschedule: Reschedule sets NextAttemptAt = now + in for rows that
// still await an attempt: 0 makes a row due at once, a long delay postpones
// it; a finished row is left alone, and an outcome with Retry re-drives it.
func testReschedule[TTx any](t *testing.T, e *env[TTx]) {
	redrive := e.rec("reschedule.redrive")
	postpone := e.rec("reschedule.postpone")
	done := e.rec("reschedule.succeeded")
	e.insert(redrive, postpone, done)
	require.Len(t, e.claim(storage.Published, 10, longLease), 3)

	require.NoError(t, e.s.Reschedule(e.ctx, storage.Published, []int64{redrive.ID}, 0))
	e.requireClaimedSoon(storage.Published, redrive.ID)

	before := time.Now()
	require.NoError(t, e.s.Reschedule(e.ctx, storage.Published, []int64{postpone.ID}, time.Hour))
	got := e.get(storage.Published, postpone.ID)
	require.NotNil(t, got.NextAttemptAt)
	requireAround(t, *got.NextAttemptAt, before, time.Now(), time.Hour, "NextAttemptAt = now + 1h")

	e.setOutcomes(storage.Published, storage.Outcome{ID: done.ID, Status: storage.StatusSucceeded, ExpiresIn: time.Hour})
	require.Nil(t, e.get(storage.Published, done.ID).NextAttemptAt)
	require.NoError(t, e.s.Reschedule(e.ctx, storage.Published, []int64{done.ID, postpone.ID}, 0))
	e.requireClaimedSoon(storage.Published, postpone.ID)
	got = e.get(storage.Published, done.ID)
	require.Nil(t, got.NextAttemptAt, "Reschedule made a finished row due")
	require.Equal(t, storage.StatusSucceeded, got.Status, "Reschedule changed the Status")
	// Re-driving a finished row is a forced outcome with Retry.
	e.setOutcomes(storage.Published, storage.Outcome{ID: done.ID, Status: storage.StatusScheduled, Retry: true, Force: true})
	e.requireClaimedSoon(storage.Published, done.ID)

	require.NoError(t, e.s.Reschedule(e.ctx, storage.Published, nil, 0), "Reschedule of no rows")
	require.NoError(t, e.s.Reschedule(e.ctx, storage.Published, []int64{e.ids.Next()}, 0), "Reschedule of a missing row")

	rcv := e.received("reschedule.received", "g", "m-reschedule")
	e.insertReceived(rcv)
	require.Len(t, e.claim(storage.Received, 10, longLease), 1)
	require.NoError(t, e.s.Reschedule(e.ctx, storage.Published, []int64{rcv.ID}, 0))
	e.requireNothingDue(storage.Received) // the other table was asked
	require.NoError(t, e.s.Reschedule(e.ctx, storage.Received, []int64{rcv.ID}, 0))
	e.requireClaimedSoon(storage.Received, rcv.ID)
	e.requireNothingDue(storage.Published)
}

// requireClaimedSoon polls claims until exactly ids have been claimed.
func (e *env[TTx]) requireClaimedSoon(t storage.Table, ids ...int64) {
	e.t.Helper()
	got := map[int64]bool{}
	eventually(e.t, fmt.Sprintf("rows %v of %s to be claimed", ids, t), func() bool {
		for _, r := range e.claim(t, 100, longLease) {
			require.Contains(e.t, ids, r.ID, "an unexpected row was claimed")
			require.False(e.t, got[r.ID], "row %d claimed twice", r.ID)
			got[r.ID] = true
		}
		return len(got) == len(ids)
	})
}
