package storagetest

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage"
)

// testInsertPublished: InsertPublished fills in Added, NextAttemptAt and
// ExpiresAt, stores every field, and makes fresh rows claimable.
func testInsertPublished[TTx any](t *testing.T, e *env[TTx]) {
	require.NoError(t, e.s.InsertPublished(e.ctx, nil), "InsertPublished of no rows")

	plain := e.rec("insert.plain")
	noStatus := e.rec("insert.nostatus")
	noStatus.Status = "" // means Scheduled
	expiring := e.rec("insert.expiring")
	expiring.ExpiresIn = time.Hour
	expiring.Retries = 2
	leased := e.rec("insert.leased") // the inserting instance sends it itself
	leased.DueIn = longLease
	terminal := e.rec("insert.terminal")
	terminal.Status = storage.StatusFailed
	terminal.Terminal = true
	all := []*storage.Record{plain, noStatus, expiring, leased, terminal}
	e.insert(all...)
	for _, r := range all {
		requireSameRow(t, r, e.get(storage.Published, r.ID))
	}

	got := e.claim(storage.Published, 100, longLease)
	require.ElementsMatch(t, idsOf([]*storage.Record{plain, noStatus, expiring}), idsOf(got), "claimable rows")
	for _, g := range got {
		for _, r := range all {
			if r.ID == g.ID {
				requireClaimed(t, r, g)
			}
		}
	}
	e.requireNothingDue(storage.Published)
	e.requireNothingDue(storage.Received)

	// A batch is stored atomically: a duplicate id fails it whole.
	fresh := e.rec("insert.fresh")
	dup := e.rec("insert.dup")
	dup.ID = plain.ID
	require.Error(t, e.s.InsertPublished(e.ctx, []*storage.Record{fresh, dup}), "InsertPublished with an existing id")
	e.requireGone(storage.Published, fresh.ID)
	require.Equal(t, "insert.plain", e.get(storage.Published, plain.ID).Name, "the existing row was changed")
}

// testInsertPublishedOne: rows stored one at a time, as PublishTx stores
// them (a storage may take a path of its own for a single row), get the
// same values as in a batch, in a transaction or not.
func testInsertPublishedOne[TTx any](t *testing.T, e *env[TTx]) {
	plain := e.rec("one.plain")
	plain.Status = ""
	expiring := e.rec("one.expiring")
	expiring.ExpiresIn = time.Hour
	expiring.Retries = 3
	leased := e.rec("one.leased")
	leased.DueIn = longLease
	delayed := e.rec("one.delayed")
	delayed.Status = storage.StatusDelayed
	delayed.DueIn = time.Hour
	terminal := e.rec("one.terminal")
	terminal.Status = storage.StatusFailed
	terminal.Terminal = true
	terminal.ExpiresIn = time.Hour
	all := []*storage.Record{plain, expiring, leased, delayed, terminal}
	for i, r := range all {
		if i%2 == 0 {
			e.insert(r)
			continue
		}
		e.insertTx(r)
	}
	for _, r := range all {
		requireSameRow(t, r, e.get(storage.Published, r.ID))
	}
	got := e.claim(storage.Published, 100, longLease)
	require.ElementsMatch(t, idsOf([]*storage.Record{plain, expiring}), idsOf(got), "claimable rows")
}

// requireClaimed compares a claimed row with the inserted one; only
// NextAttemptAt differs (the lease).
func requireClaimed(t *testing.T, inserted, claimed *storage.Record) {
	t.Helper()
	want := *inserted
	want.NextAttemptAt = claimed.NextAttemptAt
	requireSameRow(t, &want, claimed)
}

// testInsertTx: rows inserted in a transaction are claimed only once it
// commits, never when it rolls back; rows of InsertPublished are claimed.
func testInsertTx[TTx any](t *testing.T, e *env[TTx]) {
	c := e.startClaimer(storage.Published, 10)
	rolled := e.recs(2, "tx.rolledback")
	committed := e.recs(2, "tx.committed")
	own := e.recs(2, "tx.own")

	tx, err := e.s.Begin(e.ctx)
	require.NoError(t, err)
	before := time.Now()
	require.NoError(t, e.s.InsertPublishedTx(e.ctx, tx, rolled))
	for _, r := range rolled {
		requireInserted(t, r, before, time.Now())
	}
	c.settle() // claims run while the transaction is open
	require.NoError(t, e.s.Rollback(e.ctx, tx))
	require.NoError(t, e.s.Rollback(e.ctx, tx), "Rollback of a rolled-back transaction")

	tx, err = e.s.Begin(e.ctx)
	require.NoError(t, err)
	before = time.Now()
	require.NoError(t, e.s.InsertPublishedTx(e.ctx, tx, committed))
	for _, r := range committed {
		requireInserted(t, r, before, time.Now())
	}
	c.settle()
	committedAt := map[int64]time.Time{}
	for _, r := range committed {
		committedAt[r.ID] = time.Now()
	}
	require.NoError(t, e.s.Commit(e.ctx, tx))
	require.NoError(t, e.s.Rollback(e.ctx, tx), "Rollback of a committed transaction")

	for _, r := range own {
		committedAt[r.ID] = time.Now()
	}
	e.insert(own...)

	c.waitClaimed(idsOf(append(committed, own...)))
	requireClaimedOnce(t, c.finish(), committedAt, idsOf(rolled))
	e.requireNothingDue(storage.Published)
	for _, r := range rolled {
		e.requireGone(storage.Published, r.ID)
	}
	for _, r := range append(committed, own...) {
		require.Equal(t, storage.StatusScheduled, e.get(storage.Published, r.ID).Status)
	}
}

// testOutOfOrderCommits: three transactions begun in the order 1, 2, 3 end
// as 3 committed, 1 committed, 2 rolled back, while a claimer runs. Every
// committed row is claimed exactly once, and nothing else.
func testOutOfOrderCommits[TTx any](t *testing.T, e *env[TTx]) {
	c := e.startClaimer(storage.Published, 5)
	txs := make([]*openTx, 3)
	for i := range txs {
		txs[i] = e.openTxAsync(e.recs(3, fmt.Sprintf("ooo.tx%d", i+1)))
		// Begin them in order where the storage allows concurrent writers.
		deadline := time.Now().Add(softWait)
		for !txs[i].isReady(t) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	c.settle()
	committedAt := e.drive(c, txs, []step{{2, true}, {0, true}, {1, false}}, softWait)
	c.waitClaimed(idsOf(append(txs[2].recs, txs[0].recs...)))
	requireClaimedOnce(t, c.finish(), committedAt, idsOf(txs[1].recs))
	e.requireNothingDue(storage.Published)
	for _, r := range txs[1].recs {
		e.requireGone(storage.Published, r.ID)
	}
}

// testOutOfOrderCommitsRandom: Concurrent transactions end in a random
// order, some rolled back, while a claimer runs.
func testOutOfOrderCommitsRandom[TTx any](t *testing.T, e *env[TTx]) {
	c := e.startClaimer(storage.Published, 4)
	n := max(e.concurrent, 3)
	txs := make([]*openTx, n)
	plan := make([]step, n)
	for i := range txs {
		txs[i] = e.openTxAsync(e.recs(1+rand.IntN(3), fmt.Sprintf("ooo.random%d", i)))
		plan[i] = step{tx: i, commit: rand.IntN(3) > 0}
	}
	rand.Shuffle(n, func(i, j int) { plan[i], plan[j] = plan[j], plan[i] })
	plan[0].commit, plan[1].commit = true, false
	t.Logf("plan: %v", plan)

	committedAt := e.drive(c, txs, plan, 50*time.Millisecond)
	var committed, rolled []int64
	for _, s := range plan {
		if s.commit {
			committed = append(committed, idsOf(txs[s.tx].recs)...)
		} else {
			rolled = append(rolled, idsOf(txs[s.tx].recs)...)
		}
	}
	c.waitClaimed(committed)
	requireClaimedOnce(t, c.finish(), committedAt, rolled)
	e.requireNothingDue(storage.Published)
}

// testDelayed: a Delayed row is not claimed before it is due, and is
// claimed after; its ExpiresAt is its NextAttemptAt.
func testDelayed[TTx any](t *testing.T, e *env[TTx]) {
	const due = time.Second
	own := e.rec("delayed.own")
	inTx := e.rec("delayed.tx")
	for _, r := range []*storage.Record{own, inTx} {
		r.Status = storage.StatusDelayed
		r.DueIn = due
		r.ExpiresIn = time.Hour // a Delayed row expires when due, whatever ExpiresIn says
	}
	start := time.Now()
	e.insert(own)
	e.insertTx(inTx)
	for _, r := range []*storage.Record{own, inTx} {
		got := e.get(storage.Published, r.ID)
		requireSameRow(t, r, got)
		require.NotNil(t, got.ExpiresAt)
		require.WithinDuration(t, *got.NextAttemptAt, *got.ExpiresAt, precision, "ExpiresAt of a Delayed row = NextAttemptAt")
	}

	claimed := map[int64]bool{}
	eventually(t, "the delayed rows to be claimed", func() bool {
		for _, r := range e.claim(storage.Published, 10, longLease) {
			require.GreaterOrEqual(t, time.Since(start), due-precision, "Delayed row %d claimed before it was due", r.ID)
			require.False(t, claimed[r.ID], "row %d claimed twice", r.ID)
			require.Equal(t, storage.StatusDelayed, r.Status, "a claim changed the Status")
			claimed[r.ID] = true
		}
		return len(claimed) == 2
	})
	require.True(t, claimed[own.ID] && claimed[inTx.ID])
}

// testContent: Content with non-ASCII text, quotes and a 1 MB body round-trips
// byte for byte through inserts, claims, outcomes, Get and List.
func testContent[TTx any](t *testing.T, e *env[TTx]) {
	bodies := map[string][]byte{
		"unicode": []byte(`{"Headers":{"cap-msg-name":"ünïcødé.名前"},"Value":"héllo wörld ✓ 日本語 🎉 Ωμέγα العربية"}`),
		"quotes":  []byte(`{"Headers":{"x":"it's"},"Value":"\"quoted\" 'single' \\ back\\slash ` + "`tick`" + ` ; -- DROP TABLE x; /* */ % _ $1 ?"}`),
		"big":     []byte(`{"Headers":{},"Value":"` + strings.Repeat("0123456789abcdef", 1<<16) + `é"}`),
		"ws":      []byte("{\"Headers\":{},\n\t\"Value\" : \"  trailing  \" }  "),
	}
	var recs []*storage.Record
	for name, b := range bodies {
		r := e.rec("content." + name)
		r.Content = b
		recs = append(recs, r)
	}
	e.insert(recs...)
	for _, r := range recs {
		require.Equal(t, string(r.Content), string(e.get(storage.Published, r.ID).Content), "Content of %s after Get", r.Name)
	}
	claimed := e.claim(storage.Published, 10, longLease)
	require.Len(t, claimed, len(recs))
	for _, g := range claimed {
		for _, r := range recs {
			if r.ID == g.ID {
				require.Equal(t, string(r.Content), string(g.Content), "Content of %s after Claim", r.Name)
			}
		}
	}
	page, total, err := e.s.List(e.ctx, storage.Published, storage.ListQuery{Name: "content.big"})
	require.NoError(t, err)
	require.EqualValues(t, 1, total)
	require.Len(t, page, 1)
	require.Equal(t, string(bodies["big"]), string(page[0].Content), "Content after List")

	// Outcomes replace Content exactly.
	replaced := append([]byte(`{"Headers":{"cap-exception":"System.Exception-->ça a échoué \"deux fois\""},"Value":"`),
		append([]byte(strings.Repeat("ß", 1<<19)), `"}`...)...)
	e.setOutcomes(storage.Published, storage.Outcome{ID: recs[0].ID, Status: storage.StatusFailed, Retries: 1, Content: replaced})
	require.Equal(t, string(replaced), string(e.get(storage.Published, recs[0].ID).Content), "Content replaced by an outcome")

	rcv := e.received("content.received", "g", "m-content")
	rcv.Content = bodies["big"]
	e.insertReceived(rcv)
	require.Equal(t, string(bodies["big"]), string(e.get(storage.Received, rcv.ID).Content), "Content of a Received row")
}
