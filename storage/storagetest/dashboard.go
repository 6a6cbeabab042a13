package storagetest

import (
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage"
)

// list runs List and returns the ids of the page and the total.
func (e *env[TTx]) list(t storage.Table, q storage.ListQuery) ([]int64, int64) {
	e.t.Helper()
	page, total, err := e.s.List(e.ctx, t, q)
	require.NoError(e.t, err, "List(%s, %+v)", t, q)
	require.LessOrEqual(e.t, int64(len(page)), total, "a page longer than the total")
	return idsOf(page), total
}

// insertEach inserts recs one call after the other, so each is Added no
// earlier than the one before.
func (e *env[TTx]) insertEach(recs ...*storage.Record) {
	e.t.Helper()
	for _, r := range recs {
		e.insert(r)
	}
}

// newestFirst returns the ids of recs, inserted in that order, as List
// orders them (Added DESC, Id DESC).
func newestFirst(recs ...*storage.Record) []int64 {
	ids := idsOf(recs)
	slices.Reverse(ids)
	return ids
}

func succeededRec[TTx any](e *env[TTx], name string) *storage.Record {
	r := e.rec(name)
	r.Status = storage.StatusSucceeded
	r.Terminal = true
	r.ExpiresIn = time.Hour
	return r
}

// testListPaging: List pages through rows of a status, newest first, with
// the total of matching rows; Limit 0 means 20.
func testListPaging[TTx any](t *testing.T, e *env[TTx]) {
	ids, total := e.list(storage.Published, storage.ListQuery{})
	require.Empty(t, ids)
	require.Zero(t, total)

	bulk := make([]*storage.Record, 25)
	for i := range bulk {
		bulk[i] = succeededRec(e, "bulk.item")
	}
	e.insert(bulk...) // one call: the same Added, ordered by Id DESC
	later := succeededRec(e, "late.item")
	sched := e.rec("sched.item")
	e.insertEach(later, sched)
	want := newestFirst(append(bulk, later)...)

	var paged []int64
	for off := 0; off < 30; off += 10 {
		ids, total := e.list(storage.Published, storage.ListQuery{Status: storage.StatusSucceeded, Offset: off, Limit: 10})
		require.EqualValues(t, 26, total, "total at offset %d", off)
		require.Len(t, ids, min(10, 26-off), "page at offset %d", off)
		paged = append(paged, ids...)
	}
	require.Equal(t, want, paged, "pages of Succeeded rows, Added DESC, Id DESC")

	ids, total = e.list(storage.Published, storage.ListQuery{Status: storage.StatusSucceeded})
	require.EqualValues(t, 26, total)
	require.Equal(t, want[:20], ids, "Limit 0 means 20")

	ids, total = e.list(storage.Published, storage.ListQuery{Status: storage.StatusSucceeded, Offset: 30, Limit: 10})
	require.Empty(t, ids, "a page past the end")
	require.EqualValues(t, 26, total)

	ids, total = e.list(storage.Published, storage.ListQuery{Limit: 3})
	require.EqualValues(t, 27, total, "all rows")
	require.Equal(t, newestFirst(bulk[24], later, sched), ids)

	page, _, err := e.s.List(e.ctx, storage.Published, storage.ListQuery{Limit: 1})
	require.NoError(t, err)
	require.Len(t, page, 1)
	requireSameRow(t, sched, page[0])
}

// testListFilters: List filters by Status, Name (case-insensitive
// substring), Content (case-insensitive substring) and, on Received, Group
// (exact).
func testListFilters[TTx any](t *testing.T, e *env[TTx]) {
	created := e.rec("order.created")
	shipped := e.rec("Order.Shipped")
	shipped.Status = storage.StatusFailed
	shipped.Terminal = true
	user := succeededRec(e, "user.CREATED")
	note := e.rec("note")
	note.Content = []byte(`{"Headers":{},"Value":"a NeedLE in the content"}`)
	e.insertEach(created, shipped, user, note)

	cases := []struct {
		q    storage.ListQuery
		want []int64
	}{
		{storage.ListQuery{Name: "order"}, newestFirst(created, shipped)},
		{storage.ListQuery{Name: "CREATED"}, newestFirst(created, user)},
		{storage.ListQuery{Name: "Order.Shipped"}, newestFirst(shipped)},
		{storage.ListQuery{Name: "order", Status: storage.StatusScheduled}, newestFirst(created)},
		{storage.ListQuery{Status: storage.StatusFailed}, newestFirst(shipped)},
		{storage.ListQuery{Status: storage.StatusScheduled}, newestFirst(created, note)},
		{storage.ListQuery{Content: "needle"}, newestFirst(note)},
		{storage.ListQuery{Content: "NEEDLE", Name: "not"}, newestFirst(note)},
		{storage.ListQuery{Content: "needle", Status: storage.StatusFailed}, nil},
		{storage.ListQuery{Name: "nomatch"}, nil},
		{storage.ListQuery{Status: storage.StatusDelayed}, nil},
	}
	for _, c := range cases {
		ids, total := e.list(storage.Published, c.q)
		require.Equal(t, c.want, nilIfEmpty(ids), "List(%+v)", c.q)
		require.EqualValues(t, len(c.want), total, "total of List(%+v)", c.q)
	}

	g1 := e.received("recv.one", "g1", "m-1")
	g1x := e.received("recv.one", "g1x", "m-1")
	g1b := e.received("recv.two", "g1", "m-2")
	g2 := e.received("recv.two", "g2", "m-2")
	for _, r := range []*storage.Record{g1, g1x, g1b, g2} {
		e.insertReceived(r)
	}
	rcases := []struct {
		q    storage.ListQuery
		want []int64
	}{
		{storage.ListQuery{Group: "g1"}, newestFirst(g1, g1b)},
		{storage.ListQuery{Group: "g1", Name: "TWO"}, newestFirst(g1b)},
		{storage.ListQuery{Group: "g"}, nil},
		{storage.ListQuery{Name: "recv"}, newestFirst(g1, g1x, g1b, g2)},
		{storage.ListQuery{Name: "order"}, nil},
	}
	for _, c := range rcases {
		ids, total := e.list(storage.Received, c.q)
		require.Equal(t, c.want, nilIfEmpty(ids), "List(received, %+v)", c.q)
		require.EqualValues(t, len(c.want), total, "total of List(received, %+v)", c.q)
	}
	page, _, err := e.s.List(e.ctx, storage.Received, storage.ListQuery{Group: "g2"})
	require.NoError(t, err)
	require.Len(t, page, 1)
	requireSameRow(t, g2, page[0])

	_, total := e.list(storage.Published, storage.ListQuery{})
	require.EqualValues(t, 4, total, "Published rows (Received rows are apart)")
}

// testListLiteralPatterns: the Name and Content filters are substrings,
// so LIKE wildcards and escapes in them match themselves only.
func testListLiteralPatterns[TTx any](t *testing.T, e *env[TTx]) {
	underscore := e.rec("a_b")
	x := e.rec("axb")
	percent := e.rec("100%")
	digits := e.rec("1000")
	backslash := e.rec(`c\d`)
	plain := e.rec("cd")
	bracket := e.rec("[ab]")
	e.insertEach(underscore, x, percent, digits, backslash, plain, bracket)
	cases := []struct {
		name string
		want []int64
	}{
		{"a_b", newestFirst(underscore)},
		{"0%", newestFirst(percent)},
		{"%", newestFirst(percent)},
		{`\`, newestFirst(backslash)},
		{`c\d`, newestFirst(backslash)},
		{"[ab]", newestFirst(bracket)},
		{"'", nil},
	}
	for _, c := range cases {
		ids, total := e.list(storage.Published, storage.ListQuery{Name: c.name})
		require.Equal(t, c.want, nilIfEmpty(ids), "List with Name %q", c.name)
		require.EqualValues(t, len(c.want), total, "total of List with Name %q", c.name)
	}
	ids, _ := e.list(storage.Published, storage.ListQuery{Content: `"cap-msg-name":"a_b"`})
	require.Equal(t, newestFirst(underscore), nilIfEmpty(ids), "List with a Content filter holding quotes and _")
}

func nilIfEmpty(ids []int64) []int64 {
	if len(ids) == 0 {
		return nil
	}
	return ids
}

// testGetRoundTrip: Get returns every field as stored.
func testGetRoundTrip[TTx any](t *testing.T, e *env[TTx]) {
	p := e.rec("roundtrip.published")
	p.Retries = 3
	p.Status = storage.StatusFailed
	p.ExpiresIn = time.Hour
	p.DueIn = 5 * time.Minute
	q := e.rec("roundtrip.queued")
	q.Status = storage.StatusQueued
	e.insert(p, q)
	requireSameRow(t, p, e.get(storage.Published, p.ID))
	requireSameRow(t, q, e.get(storage.Published, q.ID))

	r := e.received("roundtrip.received", "billing.service", "1234567890123456789")
	r.Retries = 1
	r.Version = "v7"
	r.ExpiresIn = 24 * time.Hour
	e.insertReceived(r)
	requireSameRow(t, r, e.get(storage.Received, r.ID))

	// Get reflects an outcome.
	before := time.Now()
	e.setOutcomes(storage.Received, storage.Outcome{ID: r.ID, Status: storage.StatusFailed, Retries: 2, Content: failedContent,
		Retry: true, RetryIn: time.Minute, ExpiresIn: time.Hour})
	after := time.Now()
	got := e.get(storage.Received, r.ID)
	want := *r
	want.Status, want.Retries, want.Content = storage.StatusFailed, 2, failedContent
	want.ExpiresAt, want.NextAttemptAt = got.ExpiresAt, got.NextAttemptAt
	requireSameRow(t, &want, got)
	require.NotNil(t, got.ExpiresAt)
	require.NotNil(t, got.NextAttemptAt)
	requireAround(t, *got.ExpiresAt, before, after, time.Hour, "ExpiresAt = now + ExpiresIn")
	requireAround(t, *got.NextAttemptAt, before, after, time.Minute, "NextAttemptAt = now + RetryIn")
}

// testGetNotFound: Get of a missing row, or of a row of the other table,
// wraps ErrNotFound.
func testGetNotFound[TTx any](t *testing.T, e *env[TTx]) {
	e.requireGone(storage.Published, e.ids.Next())
	e.requireGone(storage.Received, e.ids.Next())
	p := e.rec("notfound.published")
	e.insert(p)
	e.requireGone(storage.Received, p.ID)
	r := e.received("notfound.received", "g", "m-notfound")
	e.insertReceived(r)
	e.requireGone(storage.Published, r.ID)
}

// testCounts: Counts gives the number of rows per status of one table.
func testCounts[TTx any](t *testing.T, e *env[TTx]) {
	requireCounts := func(table storage.Table, want map[storage.Status]int64) {
		t.Helper()
		got, err := e.s.Counts(e.ctx, table)
		require.NoError(t, err)
		for st, n := range got {
			if n == 0 {
				delete(got, st)
			}
		}
		require.Equal(t, want, got, "Counts(%s)", table)
	}
	requireCounts(storage.Published, map[storage.Status]int64{})

	var recs []*storage.Record
	add := func(n int, st storage.Status, mod func(*storage.Record)) {
		for range n {
			r := e.rec("counts")
			r.Status = st
			if mod != nil {
				mod(r)
			}
			recs = append(recs, r)
		}
	}
	add(3, storage.StatusScheduled, nil)
	add(2, storage.StatusSucceeded, func(r *storage.Record) { r.Terminal = true })
	add(1, storage.StatusFailed, func(r *storage.Record) { r.Terminal = true })
	add(2, storage.StatusDelayed, func(r *storage.Record) { r.DueIn = time.Hour })
	add(1, storage.StatusQueued, nil)
	e.insert(recs...)
	for i := range 2 {
		r := e.received("counts", "g", "m-counts-"+strconv.Itoa(i))
		r.Status = storage.StatusSucceeded
		r.Terminal = true
		recs = append(recs, r)
		e.insertReceived(r)
	}
	requireCounts(storage.Published, map[storage.Status]int64{
		storage.StatusScheduled: 3, storage.StatusSucceeded: 2, storage.StatusFailed: 1,
		storage.StatusDelayed: 2, storage.StatusQueued: 1,
	})
	requireCounts(storage.Received, map[storage.Status]int64{storage.StatusSucceeded: 2})

	e.setOutcomes(storage.Published, storage.Outcome{ID: recs[0].ID, Status: storage.StatusSucceeded, ExpiresIn: time.Hour})
	require.NoError(t, e.s.Delete(e.ctx, storage.Published, []int64{recs[8].ID})) // the Queued row
	requireCounts(storage.Published, map[storage.Status]int64{
		storage.StatusScheduled: 2, storage.StatusSucceeded: 3, storage.StatusFailed: 1, storage.StatusDelayed: 2,
	})
}

// testDelete: Delete removes rows by id from one table.
func testDelete[TTx any](t *testing.T, e *env[TTx]) {
	a, b, c := e.rec("delete.a"), e.rec("delete.b"), e.rec("delete.c")
	e.insert(a, b, c)
	r := e.received("delete.received", "g", "m-delete")
	e.insertReceived(r)

	require.NoError(t, e.s.Delete(e.ctx, storage.Published, []int64{a.ID, c.ID}))
	e.requireGone(storage.Published, a.ID)
	e.requireGone(storage.Published, c.ID)
	require.Equal(t, b.Name, e.get(storage.Published, b.ID).Name)

	require.NoError(t, e.s.Delete(e.ctx, storage.Published, nil), "Delete of no ids")
	require.NoError(t, e.s.Delete(e.ctx, storage.Published, []int64{e.ids.Next()}), "Delete of a missing id")
	require.NoError(t, e.s.Delete(e.ctx, storage.Received, []int64{b.ID}), "Delete of an id of the other table")
	require.Equal(t, b.Name, e.get(storage.Published, b.ID).Name)

	require.Equal(t, []int64{b.ID}, idsOf(e.claim(storage.Published, 10, longLease)), "claimable after Delete")
	require.NoError(t, e.s.Delete(e.ctx, storage.Received, []int64{r.ID}))
	e.requireGone(storage.Received, r.ID)
	e.requireNothingDue(storage.Received)

	// The de-duplication key goes with the row.
	again := e.received("delete.received", "g", "m-delete")
	e.insertReceived(again)
}
