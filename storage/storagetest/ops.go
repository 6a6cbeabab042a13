package storagetest

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage"
)

// testLeaser checks storage.Leaser: one owner at a time, renewal, release
// handing the lease over at once, and a lease that ran out taken over.
func testLeaser[TTx any](t *testing.T, e *env[TTx]) {
	l, ok := e.s.(storage.Leaser)
	if !ok {
		t.Skip("the storage does not implement storage.Leaser")
	}
	name := "storagetest-" + t.Name()
	acquire := func(owner string, ttl time.Duration) bool {
		t.Helper()
		got, err := l.AcquireLease(e.ctx, name, owner, ttl)
		require.NoError(t, err, "AcquireLease(%s)", owner)
		return got
	}
	require.True(t, acquire("a", time.Hour), "a free lease is taken")
	require.False(t, acquire("b", time.Hour), "a lease held by a is refused to b")
	require.True(t, acquire("a", time.Hour), "the holder renews its lease")
	require.False(t, acquire("a2", time.Hour), "a lease is held by one owner only")
	require.NoError(t, l.ReleaseLease(e.ctx, name, "b"), "releasing a lease not held is not an error")
	require.False(t, acquire("b", time.Hour), "a release by another owner leaves the lease alone")
	require.NoError(t, l.ReleaseLease(e.ctx, name, "a"))
	require.True(t, acquire("b", time.Hour), "a released lease is taken at once")

	// A lease that runs out is taken over; other names are independent.
	other := name + "-short"
	got, err := l.AcquireLease(e.ctx, other, "a", 300*time.Millisecond)
	require.NoError(t, err)
	require.True(t, got, "a lease of another name is free")
	got, err = l.AcquireLease(e.ctx, other, "b", 300*time.Millisecond)
	require.NoError(t, err)
	require.False(t, got, "the short lease is held")
	deadline := time.Now().Add(waitFor)
	for {
		got, err = l.AcquireLease(e.ctx, other, "b", time.Hour)
		require.NoError(t, err)
		if got {
			break
		}
		require.True(t, time.Now().Before(deadline), "a lease that ran out was not taken over within %s", waitFor)
		time.Sleep(20 * time.Millisecond)
	}
	got, err = l.AcquireLease(e.ctx, other, "a", time.Hour)
	require.NoError(t, err)
	require.False(t, got, "the former holder cannot take back a lease taken over")
}

// testBacklog checks storage.BacklogReader against rows of known states.
func testBacklog[TTx any](t *testing.T, e *env[TTx]) {
	br, ok := e.s.(storage.BacklogReader)
	if !ok {
		t.Skip("the storage does not implement storage.BacklogReader")
	}
	before := time.Now()
	due := e.recs(3, "backlog.due")
	later := e.rec("backlog.later")
	later.Status, later.DueIn = storage.StatusDelayed, time.Hour
	failed := e.recs(2, "backlog.failed")
	for _, r := range failed {
		r.Status, r.Terminal = storage.StatusFailed, true
	}
	done := e.rec("backlog.done")
	done.Status, done.Terminal = storage.StatusSucceeded, true
	other := e.rec("backlog.other")
	other.Version = "v2"
	e.insert(append(append(due, later, done, other), failed...)...)

	for _, g := range []string{"g1", "g1", "g2"} {
		e.insertReceived(e.received("backlog.r", g, "m-"+strconv.FormatInt(e.ids.Next(), 10)))
	}
	f := e.received("backlog.r", "g2", "m-failed")
	f.Status, f.Terminal = storage.StatusFailed, true
	e.insertReceived(f)

	pub, err := br.Backlog(e.ctx, storage.Published, version)
	require.NoError(t, err)
	require.Len(t, pub, 1, "the Published table has one backlog, with no group: %+v", pub)
	require.Equal(t, "", pub[0].Group)
	require.EqualValues(t, 3, pub[0].Due, "due Published rows")
	require.EqualValues(t, 2, pub[0].Failed, "Failed Published rows")
	requireNear(t, pub[0].Now, time.Now(), clockSlack, "Backlog.Now is the database's clock")
	require.False(t, pub[0].OldestDue.After(pub[0].Now), "the oldest due row is due")
	requireNear(t, pub[0].OldestDue, before, clockSlack, "OldestDue")

	rcv, err := br.Backlog(e.ctx, storage.Received, version)
	require.NoError(t, err)
	by := map[string]storage.Backlog{}
	for _, b := range rcv {
		by[b.Group] = b
	}
	require.Len(t, by, 2, "one backlog per group: %+v", rcv)
	require.EqualValues(t, 2, by["g1"].Due)
	require.EqualValues(t, 0, by["g1"].Failed)
	require.EqualValues(t, 1, by["g2"].Due)
	require.EqualValues(t, 1, by["g2"].Failed)

	// Claimed rows are being worked on: not due.
	e.claim(storage.Published, 10, longLease)
	pub, err = br.Backlog(e.ctx, storage.Published, version)
	require.NoError(t, err)
	require.Len(t, pub, 1)
	require.EqualValues(t, 0, pub[0].Due, "claimed rows are not due")
	require.True(t, pub[0].OldestDue.IsZero(), "no OldestDue without due rows")
	require.EqualValues(t, 2, pub[0].Failed)
}

// testPinger checks storage.Pinger on a reachable database.
func testPinger[TTx any](t *testing.T, e *env[TTx]) {
	p, ok := e.s.(storage.Pinger)
	if !ok {
		t.Skip("the storage does not implement storage.Pinger")
	}
	require.NoError(t, p.Ping(e.ctx))
}

func requireNear(t *testing.T, got, want time.Time, within time.Duration, what string) {
	t.Helper()
	d := got.Sub(want)
	require.True(t, d <= within && d >= -within, "%s: %v is not within %v of %v", what, got, within, want)
}
