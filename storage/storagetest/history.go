package storagetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage"
)

// testHistoryReader checks storage.HistoryReader: rows of a status counted
// by the hour they were added, rows added before since left out, only
// Succeeded and Failed counted.
func testHistoryReader[TTx any](t *testing.T, e *env[TTx]) {
	hr, ok := e.s.(storage.HistoryReader)
	if !ok {
		t.Skip("the storage does not implement storage.HistoryReader")
	}
	failed := func(name string) *storage.Record {
		r := e.rec(name)
		r.Status, r.Terminal, r.ExpiresIn = storage.StatusFailed, true, time.Hour
		return r
	}
	before := time.Now().UTC()
	e.insertEach(succeededRec(e, "h.ok"), succeededRec(e, "h.ok"), succeededRec(e, "h.ok"),
		failed("h.bad"), failed("h.bad"), e.rec("h.pending"))
	r1 := e.received("h.ok", "g", "h1-"+e.uniq())
	r1.Status, r1.Terminal, r1.ExpiresIn = storage.StatusSucceeded, true, time.Hour
	e.insertReceived(r1)
	e.insertReceived(e.received("h.pending", "g", "h2-"+e.uniq()))
	after := time.Now().UTC()

	count := func(tbl storage.Table, s storage.Status, since time.Time) int64 {
		t.Helper()
		got, err := hr.CountByHour(e.ctx, tbl, s, since)
		require.NoError(t, err, "CountByHour(%s, %s)", tbl, s)
		var n int64
		for i, c := range got {
			require.Equal(t, time.UTC, c.Hour.Location(), "hours are UTC")
			require.True(t, c.Hour.Equal(before.Truncate(time.Hour)) || c.Hour.Equal(after.Truncate(time.Hour)),
				"hour %v is not the hour the rows were added in (%v to %v)", c.Hour, before, after)
			if i > 0 {
				require.True(t, c.Hour.After(got[i-1].Hour), "hours oldest first, each once")
			}
			n += c.Count
		}
		return n
	}
	dayAgo := before.Add(-24 * time.Hour)
	require.EqualValues(t, 3, count(storage.Published, storage.StatusSucceeded, dayAgo))
	require.EqualValues(t, 2, count(storage.Published, storage.StatusFailed, dayAgo))
	require.EqualValues(t, 1, count(storage.Received, storage.StatusSucceeded, dayAgo))
	require.EqualValues(t, 0, count(storage.Received, storage.StatusFailed, dayAgo))
	require.EqualValues(t, 0, count(storage.Published, storage.StatusSucceeded, after.Add(time.Hour)),
		"rows added before since are left out")
	_, err := hr.CountByHour(e.ctx, storage.Published, storage.StatusScheduled, dayAgo)
	require.Error(t, err, "Scheduled rows are not counted")
}
