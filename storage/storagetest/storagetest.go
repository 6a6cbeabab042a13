// Package storagetest is the conformance suite every storage.Storage passes.
//
// A backend's tests call Run with a Harness that creates fresh, migrated
// storages:
//
//	func TestConformance(t *testing.T) {
//		storagetest.Run(t, storagetest.Harness[*sql.Tx]{
//			New: func(t *testing.T) storage.Storage[*sql.Tx] { return newSchema(t) },
//		})
//	}
//
// The suite only uses the Storage interface (and, when implemented,
// storage.Notifier and storage.Namer), so it runs unchanged against every
// backend. It tolerates storages that serialise writers (SQLite): work that
// might block behind an open transaction runs in its own goroutine, and the
// orders the suite would like to force fall back to what the storage allows.
//
// It checks, each in a subtest of its own:
//   - inserts: the values written back (Added, NextAttemptAt, ExpiresAt),
//     atomic batches, rows of a rolled-back transaction never claimed, rows
//     of a committed one claimed once and not before the commit;
//   - transactions committed out of order and rolled back while a claimer
//     runs (three in a fixed order, then Concurrent in a random one): every
//     committed row claimed exactly once, nothing else;
//   - Concurrent claimers over 2,000 rows never share a row and get them all;
//   - Claim by Version, Limit and NextAttemptAt order, per table; leases;
//     Reschedule; delayed rows;
//   - outcomes (SetOutcomes, SetOutcomesTx with commit, rollback, ErrStale,
//     ErrNotFound, and concurrent transactions racing to succeed);
//   - Received de-duplication on (MessageID, Group), also under concurrency,
//     one row at a time and in batches (atomic, first duplicate wins);
//   - DeleteExpired; List paging, filters and order; Get; Counts; Delete;
//   - Migrate run again concurrently; Content round trips (non-ASCII,
//     quotes, 1 MB); Notifier and Namer when implemented;
//   - Leaser (one owner at a time, renewal, release, a lease that ran out
//     taken over), BacklogReader (due and Failed rows per group) and Pinger,
//     when implemented.
//
// Time checks allow 2 ms between values a storage derives from one "now"
// and 2 s between the database's clock and the test's, so the database must
// run on a clock close to this machine's (loopback in practice). The whole
// suite takes a few seconds; the longest subtest waits for a 1 s delay.
package storagetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/storage"
)

// Harness tells Run how to get storages to test.
type Harness[TTx any] struct {
	// New returns a migrated storage whose tables are empty and private to this call (a fresh database,
	// schema or table prefix), so subtests can run in parallel.
	New func(t *testing.T) storage.Storage[TTx]
	// Concurrent is the number of goroutines the concurrency tests use (0 means 8).
	Concurrent int
	// ClaimRows is the number of rows ConcurrentClaimers races over (0
	// means DefaultClaimRows), for a test server too slow to claim 2,000
	// rows within the subtest's deadline; at least 8.
	ClaimRows int
	// NoTransactions, when not empty, says why the storages cannot run
	// multi-document transactions (for example a MongoDB server that is no
	// replica set). The subtests that need Begin are then skipped with this
	// reason, and those that only use a transaction for some of their rows
	// store them without one.
	NoTransactions string
	// Skip names subtests (as in Storage/<name>) to skip, with the reason,
	// for a test server that cannot run them (too slow for their
	// deadlines, for example).
	Skip map[string]string
}

// DefaultConcurrent is the number of goroutines of the concurrency tests
// when Harness.Concurrent is zero.
const DefaultConcurrent = 8

// DefaultClaimRows is the number of rows of ConcurrentClaimers when
// Harness.ClaimRows is zero.
const DefaultClaimRows = 2000

const (
	// version is the Version of the rows the suite writes.
	version = "v1"
	// precision bounds the difference between two times a storage derived
	// from the same "now" (rounding to milliseconds or microseconds).
	precision = 2 * time.Millisecond
	// clockSlack bounds the difference between the database's clock and
	// this process's clock when the suite checks "now + x".
	clockSlack = 2 * time.Second
	// longLease is a lease no test outlives, so a claimed row stays claimed.
	longLease = time.Hour
	// waitFor is the deadline of the polling helpers.
	waitFor = 10 * time.Second
	// pollEvery is the interval of the polling helpers.
	pollEvery = 5 * time.Millisecond
	// softWait is how long the suite waits for something that a storage
	// serialising writers cannot do yet (a second transaction, a claim behind
	// an open transaction) before it goes on without it.
	softWait = 300 * time.Millisecond
	// testTimeout bounds each subtest, so a storage that deadlocks fails
	// instead of hanging.
	testTimeout = time.Minute
)

// Run runs the conformance suite against the storages h.New returns. Every
// subtest calls h.New once and runs in parallel with the others, so h.New
// must be safe for concurrent use. Run returns when all subtests have
// finished, so the caller may release shared resources right after it.
// Subtests are named Storage/<name>, for go test -run.
func Run[TTx any](t *testing.T, h Harness[TTx]) {
	t.Helper()
	if h.New == nil {
		t.Fatal("storagetest: Harness.New is nil")
	}
	if h.Concurrent <= 0 {
		h.Concurrent = DefaultConcurrent
	}
	if h.ClaimRows == 0 {
		h.ClaimRows = DefaultClaimRows
	}
	if h.ClaimRows < 8 {
		t.Fatalf("storagetest: Harness.ClaimRows is %d, less than 8", h.ClaimRows)
	}
	ids, err := message.NewIDGenerator(rand.Int64N(message.MaxWorkerID + 1))
	require.NoError(t, err)

	tests := []struct {
		name string
		fn   func(*testing.T, *env[TTx])
		tx   bool // needs transactions
	}{
		{name: "InsertPublished", fn: testInsertPublished[TTx]},
		{name: "InsertPublishedOne", fn: testInsertPublishedOne[TTx]},
		{name: "InsertTxCommitRollback", fn: testInsertTx[TTx], tx: true},
		{name: "OutOfOrderCommits", fn: testOutOfOrderCommits[TTx], tx: true},
		{name: "OutOfOrderCommitsRandom", fn: testOutOfOrderCommitsRandom[TTx], tx: true},
		{name: "ConcurrentClaimers", fn: testConcurrentClaimers[TTx]},
		{name: "ClaimVersionLimitOrder", fn: testClaimVersionLimitOrder[TTx]},
		{name: "ClaimTables", fn: testClaimTables[TTx]},
		{name: "Lease", fn: testLease[TTx]},
		{name: "Reschedule", fn: testReschedule[TTx]},
		{name: "Outcomes", fn: testOutcomes[TTx]},
		{name: "OutcomeRetry", fn: testOutcomeRetry[TTx]},
		{name: "SetOutcomesTx", fn: testSetOutcomesTx[TTx], tx: true},
		{name: "SetOutcomesTxConcurrent", fn: testSetOutcomesTxConcurrent[TTx], tx: true},
		{name: "Delayed", fn: testDelayed[TTx]},
		{name: "ReceivedDedup", fn: testReceivedDedup[TTx]},
		{name: "ReceivedDedupConcurrent", fn: testReceivedDedupConcurrent[TTx]},
		{name: "ReceivedBatch", fn: testReceivedBatch[TTx]},
		{name: "ReceivedBatchAtomic", fn: testReceivedBatchAtomic[TTx]},
		{name: "ReceivedBatchConcurrent", fn: testReceivedBatchConcurrent[TTx]},
		{name: "DeleteExpired", fn: testDeleteExpired[TTx]},
		{name: "ListPaging", fn: testListPaging[TTx]},
		{name: "ListFilters", fn: testListFilters[TTx]},
		{name: "ListLiteralPatterns", fn: testListLiteralPatterns[TTx]},
		{name: "GetRoundTrip", fn: testGetRoundTrip[TTx]},
		{name: "GetNotFound", fn: testGetNotFound[TTx]},
		{name: "Counts", fn: testCounts[TTx]},
		{name: "Delete", fn: testDelete[TTx]},
		{name: "Migrate", fn: testMigrate[TTx]},
		{name: "Content", fn: testContent[TTx]},
		{name: "Notifier", fn: testNotifier[TTx]},
		{name: "Namer", fn: testNamer[TTx]},
		{name: "Leaser", fn: testLeaser[TTx]},
		{name: "Backlog", fn: testBacklog[TTx]},
		{name: "Pinger", fn: testPinger[TTx]},
		{name: "ReceivedExists", fn: testReceivedExists[TTx]},
		{name: "ReceivedWithOutcome", fn: testReceivedWithOutcome[TTx]},
		{name: "NodeRegistry", fn: testNodeRegistry[TTx]},
		{name: "HistoryReader", fn: testHistoryReader[TTx]},
	}
	// The group makes Run wait for its parallel subtests.
	t.Run("Storage", func(t *testing.T) {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				if reason, ok := h.Skip[tc.name]; ok {
					t.Skip(reason)
				}
				if tc.tx && h.NoTransactions != "" {
					t.Skip("needs transactions: " + h.NoTransactions)
				}
				t.Parallel()
				ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
				defer cancel()
				s := h.New(t)
				require.NotNil(t, s, "Harness.New returned nil")
				tc.fn(t, &env[TTx]{t: t, ctx: ctx, s: s, ids: ids, concurrent: h.Concurrent, claimRows: h.ClaimRows, noTx: h.NoTransactions != ""})
			})
		}
	})
}

// env is what one subtest works with.
type env[TTx any] struct {
	t          *testing.T
	ctx        context.Context
	s          storage.Storage[TTx]
	ids        *message.IDGenerator
	concurrent int
	claimRows  int  // rows of ConcurrentClaimers
	noTx       bool // the storage has no transactions
}

// rec returns a fresh Published row with a unique id.
func (e *env[TTx]) rec(name string) *storage.Record {
	id := e.ids.Next()
	return &storage.Record{
		ID:      id,
		Version: version,
		Name:    name,
		Content: content(id, name),
		Status:  storage.StatusScheduled,
	}
}

// recs returns n fresh rows named name.
func (e *env[TTx]) recs(n int, name string) []*storage.Record {
	out := make([]*storage.Record, n)
	for i := range out {
		out[i] = e.rec(name)
	}
	return out
}

// received returns a fresh Received row of group with message id msgID.
func (e *env[TTx]) received(name, group, msgID string) *storage.Record {
	r := e.rec(name)
	r.Group = group
	r.MessageID = msgID
	return r
}

// content returns a Content column in CAP's form.
func content(id int64, name string) []byte {
	// Marshalling strings cannot fail.
	b, _ := json.Marshal(map[string]any{
		"Headers": map[string]string{
			message.HeaderMessageID:   strconv.FormatInt(id, 10),
			message.HeaderMessageName: name,
		},
		"Value": map[string]int{"n": 1},
	})
	return b
}

// insert stores recs with InsertPublished and checks what it wrote back.
func (e *env[TTx]) insert(recs ...*storage.Record) {
	e.t.Helper()
	before := time.Now()
	require.NoError(e.t, e.s.InsertPublished(e.ctx, recs))
	after := time.Now()
	for _, r := range recs {
		requireInserted(e.t, r, before, after)
	}
}

// insertReceived stores r with InsertReceived and requires it inserted.
func (e *env[TTx]) insertReceived(r *storage.Record) {
	e.t.Helper()
	before := time.Now()
	ok, err := e.s.InsertReceived(e.ctx, r)
	require.NoError(e.t, err)
	require.True(e.t, ok, "InsertReceived(%d) reported a duplicate", r.ID)
	requireInserted(e.t, r, before, time.Now())
}

// claim claims due rows of version v1 and checks their new NextAttemptAt.
func (e *env[TTx]) claim(t storage.Table, limit int, lease time.Duration) []*storage.Record {
	e.t.Helper()
	return e.claimVersion(t, version, limit, lease)
}

func (e *env[TTx]) claimVersion(t storage.Table, v string, limit int, lease time.Duration) []*storage.Record {
	e.t.Helper()
	before := time.Now()
	got, err := e.s.Claim(e.ctx, t, storage.ClaimRequest{Version: v, Limit: limit, Lease: lease})
	require.NoError(e.t, err, "Claim(%s, %s)", t, v)
	after := time.Now()
	require.LessOrEqual(e.t, len(got), limit, "Claim returned more rows than Limit")
	for _, r := range got {
		require.Equal(e.t, v, r.Version, "Claim returned a row of another Version")
		require.NotNil(e.t, r.NextAttemptAt, "claimed row %d has no NextAttemptAt", r.ID)
		requireUTC(e.t, *r.NextAttemptAt, "NextAttemptAt of claimed row")
		requireAround(e.t, *r.NextAttemptAt, before, after, lease, "NextAttemptAt of claimed row = now + Lease")
	}
	return got
}

// get returns a row that must exist.
func (e *env[TTx]) get(t storage.Table, id int64) *storage.Record {
	e.t.Helper()
	r, err := e.s.Get(e.ctx, t, id)
	require.NoError(e.t, err, "Get(%s, %d)", t, id)
	require.NotNil(e.t, r)
	require.Equal(e.t, id, r.ID)
	return r
}

// requireGone requires that no row id exists in t.
func (e *env[TTx]) requireGone(t storage.Table, id int64) {
	e.t.Helper()
	r, err := e.s.Get(e.ctx, t, id)
	require.ErrorIs(e.t, err, storage.ErrNotFound, "Get(%s, %d) = %+v", t, id, r)
}

// requireNothingDue requires that a claim of t finds no row.
func (e *env[TTx]) requireNothingDue(t storage.Table) {
	e.t.Helper()
	got := e.claim(t, 100, longLease)
	require.Empty(e.t, idsOf(got), "rows claimed from %s where none should be due", t)
}

// setOutcomes writes outs with SetOutcomes.
func (e *env[TTx]) setOutcomes(t storage.Table, outs ...storage.Outcome) {
	e.t.Helper()
	require.NoError(e.t, e.s.SetOutcomes(e.ctx, t, outs))
}

// inTx runs fn in a transaction it commits when fn succeeds.
func (e *env[TTx]) inTx(fn func(tx TTx) error) error {
	tx, err := e.s.Begin(e.ctx)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		return errors.Join(err, e.s.Rollback(e.ctx, tx))
	}
	return e.s.Commit(e.ctx, tx)
}

// insertTx stores r with InsertPublishedTx in a transaction of its own and
// checks the values stored, or with InsertPublished when the storage has no
// transactions.
func (e *env[TTx]) insertTx(r *storage.Record) {
	e.t.Helper()
	if e.noTx {
		e.insert(r)
		return
	}
	before := time.Now()
	require.NoError(e.t, e.inTx(func(tx TTx) error { return e.s.InsertPublishedTx(e.ctx, tx, []*storage.Record{r}) }))
	e.requireInsertedTx(r, before, time.Now())
}

// requireInsertedTx checks the values the storage filled in for a row
// stored by InsertPublishedTx, which need not write them back: it reads
// them from the stored row into r.
func (e *env[TTx]) requireInsertedTx(r *storage.Record, before, after time.Time) {
	e.t.Helper()
	got := e.get(storage.Published, r.ID)
	r.Added, r.ExpiresAt, r.NextAttemptAt = got.Added, got.ExpiresAt, got.NextAttemptAt
	requireInserted(e.t, r, before, after)
}

// requireInserted checks the values a storage writes back on insert.
func requireInserted(t *testing.T, r *storage.Record, before, after time.Time) {
	t.Helper()
	require.False(t, r.Added.IsZero(), "Added of row %d not written back", r.ID)
	requireUTC(t, r.Added, "Added")
	requireAround(t, r.Added, before, after, 0, "Added = now")
	if r.Terminal {
		require.Nil(t, r.NextAttemptAt, "Terminal row %d has a NextAttemptAt", r.ID)
	} else {
		require.NotNil(t, r.NextAttemptAt, "NextAttemptAt of row %d not written back", r.ID)
		requireUTC(t, *r.NextAttemptAt, "NextAttemptAt")
		require.WithinDuration(t, r.Added.Add(r.DueIn), *r.NextAttemptAt, precision, "NextAttemptAt = Added + DueIn")
	}
	switch {
	case r.Status == storage.StatusDelayed && r.NextAttemptAt != nil:
		require.NotNil(t, r.ExpiresAt, "ExpiresAt of Delayed row %d not written back", r.ID)
		require.WithinDuration(t, *r.NextAttemptAt, *r.ExpiresAt, precision, "ExpiresAt of a Delayed row = NextAttemptAt")
	case r.ExpiresIn > 0:
		require.NotNil(t, r.ExpiresAt, "ExpiresAt of row %d not written back", r.ID)
		requireUTC(t, *r.ExpiresAt, "ExpiresAt")
		require.WithinDuration(t, r.Added.Add(r.ExpiresIn), *r.ExpiresAt, precision, "ExpiresAt = Added + ExpiresIn")
	default:
		require.Nil(t, r.ExpiresAt, "row %d inserted with ExpiresIn 0 has an ExpiresAt", r.ID)
	}
}

// requireAround requires got = now + d, now being some instant between
// before and after on the database's clock.
func requireAround(t *testing.T, got, before, after time.Time, d time.Duration, what string) {
	t.Helper()
	require.WithinRange(t, got, before.Add(d-clockSlack), after.Add(d+clockSlack), what)
}

func requireUTC(t *testing.T, tm time.Time, what string) {
	t.Helper()
	require.Equal(t, time.UTC, tm.Location(), "%s is not in UTC", what)
}

// requireSameRow compares every stored field of got with want.
func requireSameRow(t *testing.T, want, got *storage.Record) {
	t.Helper()
	require.Equal(t, want.ID, got.ID, "ID")
	require.Equal(t, want.Version, got.Version, "Version of row %d", want.ID)
	require.Equal(t, want.Name, got.Name, "Name of row %d", want.ID)
	require.Equal(t, want.Group, got.Group, "Group of row %d", want.ID)
	require.Equal(t, want.MessageID, got.MessageID, "MessageID of row %d", want.ID)
	require.Equal(t, string(want.Content), string(got.Content), "Content of row %d", want.ID)
	require.Equal(t, want.Retries, got.Retries, "Retries of row %d", want.ID)
	wantStatus := want.Status
	if wantStatus == "" {
		wantStatus = storage.StatusScheduled
	}
	require.Equal(t, wantStatus, got.Status, "Status of row %d", want.ID)
	requireUTC(t, got.Added, "Added")
	require.WithinDuration(t, want.Added, got.Added, precision, "Added of row %d", want.ID)
	requireSameTime(t, want.ExpiresAt, got.ExpiresAt, "ExpiresAt of row %d", want.ID)
	requireSameTime(t, want.NextAttemptAt, got.NextAttemptAt, "NextAttemptAt of row %d", want.ID)
}

func requireSameTime(t *testing.T, want, got *time.Time, msg string, args ...any) {
	t.Helper()
	what := fmt.Sprintf(msg, args...)
	if want == nil {
		require.Nil(t, got, what)
		return
	}
	require.NotNil(t, got, what)
	requireUTC(t, *got, what)
	require.WithinDuration(t, *want, *got, precision, what)
}

func idsOf(recs []*storage.Record) []int64 {
	out := make([]int64, len(recs))
	for i, r := range recs {
		out[i] = r.ID
	}
	return out
}

// eventually polls cond until it holds or waitFor passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", waitFor, what)
		}
		time.Sleep(pollEvery)
	}
}

// sleepUntil waits until the local clock passes tm. Only for tests about
// time passing (a due time or expiry to reach).
func sleepUntil(tm time.Time) {
	if d := time.Until(tm); d > 0 {
		time.Sleep(d)
	}
}

// claimer claims rows of one table in a loop, in its own goroutine, the way
// a dispatcher does, and records when it received each row.
type claimer[TTx any] struct {
	e     *env[TTx]
	table storage.Table
	limit int

	mu     sync.Mutex
	got    map[int64][]time.Time // row id -> when each claim of it returned
	rounds int                   // finished Claim calls
	err    error

	stop chan struct{}
	done chan struct{}
}

func (e *env[TTx]) startClaimer(t storage.Table, limit int) *claimer[TTx] {
	c := &claimer[TTx]{
		e: e, table: t, limit: limit,
		got:  map[int64][]time.Time{},
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	go c.run()
	e.t.Cleanup(c.halt)
	return c
}

func (c *claimer[TTx]) run() {
	defer close(c.done)
	for {
		select {
		case <-c.stop:
			return
		default:
		}
		recs, err := c.e.s.Claim(c.e.ctx, c.table, storage.ClaimRequest{Version: version, Limit: c.limit, Lease: longLease})
		at := time.Now()
		c.mu.Lock()
		c.rounds++
		if err != nil && c.err == nil {
			c.err = err
		}
		for _, r := range recs {
			c.got[r.ID] = append(c.got[r.ID], at)
		}
		c.mu.Unlock()
		if err != nil {
			return
		}
		if len(recs) == 0 {
			time.Sleep(pollEvery)
		}
	}
}

// halt stops the loop and waits for it.
func (c *claimer[TTx]) halt() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	<-c.done
}

// finish stops the claimer and returns, per claimed row id, when each of
// its claims returned.
func (c *claimer[TTx]) finish() map[int64][]time.Time {
	c.e.t.Helper()
	c.halt()
	c.mu.Lock()
	defer c.mu.Unlock()
	require.NoError(c.e.t, c.err, "Claim in the claimer loop")
	return c.got
}

// settle waits, up to softWait, until a Claim that started after this call
// has returned. A storage that serialises writers may hold claims behind an
// open transaction; then settle gives up quietly.
func (c *claimer[TTx]) settle() {
	c.mu.Lock()
	target := c.rounds + 2
	c.mu.Unlock()
	deadline := time.Now().Add(softWait)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		n, err := c.rounds, c.err
		c.mu.Unlock()
		if n >= target || err != nil {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// waitClaimed waits until every id has been claimed, or fails.
func (c *claimer[TTx]) waitClaimed(ids []int64) {
	c.e.t.Helper()
	eventually(c.e.t, "the claimer to receive the committed rows", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		require.NoError(c.e.t, c.err, "Claim in the claimer loop")
		for _, id := range ids {
			if len(c.got[id]) == 0 {
				return false
			}
		}
		return true
	})
}

// softWaitClaimed waits up to softWait until every id has been claimed,
// and goes on quietly otherwise.
func (c *claimer[TTx]) softWaitClaimed(ids []int64) {
	deadline := time.Now().Add(softWait)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		all := true
		for _, id := range ids {
			if len(c.got[id]) == 0 {
				all = false
				break
			}
		}
		c.mu.Unlock()
		if all {
			return
		}
		time.Sleep(time.Millisecond)
	}
}
