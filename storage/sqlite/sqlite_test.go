package sqlite_test

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/sqlite"
)

// newStore opens a fresh file database in t.TempDir() and migrates it.
func newStore(t *testing.T) (*sqlite.Storage, *sql.DB) {
	t.Helper()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "cap.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	s, err := sqlite.New(db, sqlite.Options{})
	require.NoError(t, err)
	require.NoError(t, s.Migrate(t.Context()))
	return s, db
}

func TestNewRejectsInvalidPrefix(t *testing.T) {
	t.Parallel()
	db, err := sqlite.Open(":memory:")
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	for _, prefix := range []string{`cap"; DROP TABLE x; --`, "1cap", "cap.x", "cap-x", "ca p"} {
		_, err := sqlite.New(db, sqlite.Options{TablePrefix: prefix})
		require.ErrorIs(t, err, storage.ErrInvalidIdentifier, "prefix %q", prefix)
	}
	_, err = sqlite.New(nil, sqlite.Options{})
	require.Error(t, err)
}

func TestMigrateCreatesCAPTables(t *testing.T) {
	t.Parallel()
	s, db := newStore(t)
	// A second run, as by an instance starting later, changes nothing.
	require.NoError(t, s.Migrate(t.Context()))

	var names []string
	rows, err := db.QueryContext(t.Context(), `SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`)
	require.NoError(t, err)
	for rows.Next() {
		var n string
		require.NoError(t, rows.Scan(&n))
		names = append(names, n)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []string{"cap.lock", "cap.published", "cap.received"}, names)

	s2, err := sqlite.New(db, sqlite.Options{TablePrefix: "billing"})
	require.NoError(t, err)
	require.NoError(t, s2.Migrate(t.Context()))
	var n int
	require.NoError(t, db.QueryRowContext(t.Context(),
		`SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'billing.received'`).Scan(&n))
	require.Equal(t, 1, n)
	require.Equal(t, "SQLite", s.Name())
}

func TestOpenSettings(t *testing.T) {
	t.Parallel()
	_, db := newStore(t)
	var mode string
	var busy int
	require.NoError(t, db.QueryRowContext(t.Context(), `PRAGMA journal_mode`).Scan(&mode))
	require.Equal(t, "wal", mode)
	require.NoError(t, db.QueryRowContext(t.Context(), `PRAGMA busy_timeout`).Scan(&busy))
	require.EqualValues(t, sqlite.BusyTimeout.Milliseconds(), busy)

	_, err := sqlite.Open("")
	require.Error(t, err)
	_, err = sqlite.Open(filepath.Join(t.TempDir(), "db.sqlite") + "?_txlock=sometimes")
	require.Error(t, err)
}

// TestConcurrentWriters: with Open's settings, writers in their own
// transactions and claimers never fail with SQLITE_BUSY, and every row is
// claimed exactly once.
func TestConcurrentWriters(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ctx := t.Context()
	const writers, perWriter, claimers = 8, 200, 2
	const total = writers * perWriter

	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		claimed  = make(map[int64]int)
		nClaimed atomic.Int64
		errs     = make(chan error, writers+claimers)
	)
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				id := int64(w*perWriter + i + 1)
				err := func() error {
					tx, err := s.Begin(ctx)
					if err != nil {
						return err
					}
					defer func() { _ = s.Rollback(ctx, tx) }()
					// Read first, as business code does: a transaction that
					// upgrades a read to a write is the one that gets SQLITE_BUSY
					// without BEGIN IMMEDIATE.
					var n int
					if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM "cap.published"`).Scan(&n); err != nil {
						return err
					}
					err = s.InsertPublishedTx(ctx, tx, []*storage.Record{{
						ID: id, Version: "v1", Name: "order.created", Content: []byte(`{}`),
					}})
					if err != nil {
						return err
					}
					return s.Commit(ctx, tx)
				}()
				if err != nil {
					errs <- fmt.Errorf("writer %d row %d: %w", w, i, err)
					return
				}
			}
		})
	}
	deadline := time.Now().Add(60 * time.Second)
	for range claimers {
		wg.Go(func() {
			for nClaimed.Load() < total && time.Now().Before(deadline) {
				recs, err := s.Claim(ctx, storage.Published, storage.ClaimRequest{Version: "v1", Limit: 50, Lease: time.Hour})
				if err != nil {
					errs <- fmt.Errorf("claim: %w", err)
					return
				}
				mu.Lock()
				for _, r := range recs {
					claimed[r.ID]++
				}
				mu.Unlock()
				nClaimed.Add(int64(len(recs)))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Len(t, claimed, total)
	for id, n := range claimed {
		require.Equal(t, 1, n, "row %d claimed %d times", id, n)
	}
}

func TestMemoryDatabase(t *testing.T) {
	t.Parallel()
	for _, path := range []string{":memory:", "file:memtest?mode=memory&cache=shared"} {
		db, err := sqlite.Open(path)
		require.NoError(t, err, path)
		s, err := sqlite.New(db, sqlite.Options{})
		require.NoError(t, err)
		ctx := t.Context()
		require.NoError(t, s.Migrate(ctx))

		// Statements from several goroutines all see the one database.
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Go(func() {
				assertNoErr(t, s.InsertPublished(ctx, []*storage.Record{{ID: int64(i + 1), Version: "v1", Name: "n"}}))
			})
		}
		wg.Wait()
		recs, err := s.Claim(ctx, storage.Published, storage.ClaimRequest{Version: "v1", Limit: 10, Lease: time.Minute})
		require.NoError(t, err, path)
		require.Len(t, recs, 4, path)
		require.NoError(t, db.Close())
	}
}

// assertNoErr reports err from a goroutine other than the test's.
func assertNoErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Error(err)
	}
}

func TestInsertWritesBackStoredValues(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ctx := t.Context()
	before := time.Now().UTC().Truncate(time.Millisecond)
	recs := []*storage.Record{
		{ID: 1, Version: "v1", Name: "a", Content: []byte(`{"Headers":{},"Value":1}`), ExpiresIn: time.Hour},
		{ID: 2, Version: "v1", Name: "b", Status: storage.StatusDelayed, DueIn: 30 * time.Second, ExpiresIn: time.Hour},
		{ID: 3, Version: "v1", Name: "c", Status: storage.StatusFailed, Terminal: true, Retries: 50},
	}
	require.NoError(t, s.InsertPublished(ctx, recs))
	after := time.Now().UTC()

	require.Equal(t, storage.StatusScheduled, recs[0].Status)
	require.False(t, recs[0].Added.Before(before))
	require.False(t, recs[0].Added.After(after))
	require.Equal(t, recs[0].Added, *recs[0].NextAttemptAt)
	require.Equal(t, recs[0].Added.Add(time.Hour), *recs[0].ExpiresAt)
	require.Equal(t, recs[1].Added.Add(30*time.Second), *recs[1].NextAttemptAt)
	require.Equal(t, *recs[1].NextAttemptAt, *recs[1].ExpiresAt, "a Delayed row expires when due")
	require.Nil(t, recs[2].NextAttemptAt)
	require.Nil(t, recs[2].ExpiresAt)

	for _, want := range recs {
		got, err := s.Get(ctx, storage.Published, want.ID)
		require.NoError(t, err)
		require.Equal(t, want.Added, got.Added)
		require.Equal(t, want.NextAttemptAt, got.NextAttemptAt)
		require.Equal(t, want.ExpiresAt, got.ExpiresAt)
		require.Equal(t, want.Status, got.Status)
		require.Equal(t, want.Retries, got.Retries)
		require.Equal(t, want.Content, got.Content)
	}
	_, err := s.Get(ctx, storage.Published, 99)
	require.ErrorIs(t, err, storage.ErrNotFound)

	// A failed batch stores nothing and leaves the records untouched.
	dup := []*storage.Record{{ID: 10, Version: "v1", Name: "x"}, {ID: 1, Version: "v1", Name: "dup"}}
	require.Error(t, s.InsertPublished(ctx, dup))
	require.True(t, dup[0].Added.IsZero())
	_, err = s.Get(ctx, storage.Published, 10)
	require.ErrorIs(t, err, storage.ErrNotFound)
}

func TestClaimOrderAndLease(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ctx := t.Context()
	// Ids in the opposite order of due times, so an order by id would show.
	require.NoError(t, s.InsertPublished(ctx, []*storage.Record{
		{ID: 1, Version: "v1", Name: "a", DueIn: -1 * time.Second},
		{ID: 2, Version: "v1", Name: "b", DueIn: -2 * time.Second},
		{ID: 3, Version: "v1", Name: "c", DueIn: -3 * time.Second},
		{ID: 4, Version: "v2", Name: "other version"},
		{ID: 5, Version: "v1", Name: "later", DueIn: time.Hour},
		{ID: 6, Version: "v1", Name: "done", Terminal: true},
	}))
	recs, err := s.Claim(ctx, storage.Published, storage.ClaimRequest{Version: "v1", Limit: 2, Lease: time.Minute})
	require.NoError(t, err)
	require.Len(t, recs, 2)
	require.Equal(t, int64(3), recs[0].ID)
	require.Equal(t, int64(2), recs[1].ID)
	require.Equal(t, storage.StatusScheduled, recs[0].Status, "a claim leaves the status")
	require.WithinDuration(t, time.Now().Add(time.Minute), *recs[0].NextAttemptAt, 5*time.Second)
	got, err := s.Get(ctx, storage.Published, 3)
	require.NoError(t, err)
	require.Equal(t, recs[0].NextAttemptAt, got.NextAttemptAt)

	recs, err = s.Claim(ctx, storage.Published, storage.ClaimRequest{Version: "v1", Limit: 10, Lease: time.Minute})
	require.NoError(t, err)
	require.Len(t, recs, 1)
	require.Equal(t, int64(1), recs[0].ID)

	// Releasing a lease makes the row due again.
	require.NoError(t, s.Reschedule(ctx, storage.Published, []int64{2, 3}, -time.Second))
	recs, err = s.Claim(ctx, storage.Published, storage.ClaimRequest{Version: "v1", Limit: 10, Lease: time.Minute})
	require.NoError(t, err)
	require.Len(t, recs, 2)
}

func TestOutcomes(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ctx := t.Context()
	rec := &storage.Record{ID: 1, Version: "v1", Name: "a", Group: "g", MessageID: "m1", Content: []byte("old")}
	ok, err := s.InsertReceived(ctx, rec)
	require.NoError(t, err)
	require.True(t, ok)
	dup := &storage.Record{ID: 2, Version: "v1", Name: "a", Group: "g", MessageID: "m1"}
	ok, err = s.InsertReceived(ctx, dup)
	require.NoError(t, err)
	require.False(t, ok)
	require.True(t, dup.Added.IsZero())

	// Failed with a retry; ExpiresAt counts from Added.
	require.NoError(t, s.SetOutcomes(ctx, storage.Received, []storage.Outcome{{
		ID: 1, Status: storage.StatusFailed, Retries: 1, Content: []byte("new"),
		ExpiresIn: 15 * 24 * time.Hour, ExpiresFromAdded: true, Retry: true, RetryIn: time.Minute,
	}, {ID: 42, Status: storage.StatusFailed}}))
	got, err := s.Get(ctx, storage.Received, 1)
	require.NoError(t, err)
	require.Equal(t, storage.StatusFailed, got.Status)
	require.Equal(t, 1, got.Retries)
	require.Equal(t, []byte("new"), got.Content)
	require.Equal(t, "g", got.Group)
	require.Equal(t, "m1", got.MessageID)
	require.Equal(t, rec.Added.Add(15*24*time.Hour), *got.ExpiresAt)
	require.WithinDuration(t, time.Now().Add(time.Minute), *got.NextAttemptAt, 5*time.Second)

	// Succeeded in a caller's transaction; content kept, ExpiresAt from now.
	tx, err := s.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, s.SetOutcomesTx(ctx, tx, storage.Received, []storage.Outcome{{
		ID: 1, Status: storage.StatusSucceeded, Retries: 1, ExpiresIn: 24 * time.Hour,
	}}))
	require.NoError(t, s.Commit(ctx, tx))
	require.NoError(t, s.Rollback(ctx, tx), "rolling back a finished tx")
	got, err = s.Get(ctx, storage.Received, 1)
	require.NoError(t, err)
	require.Equal(t, storage.StatusSucceeded, got.Status)
	require.Equal(t, []byte("new"), got.Content)
	require.Nil(t, got.NextAttemptAt)
	require.WithinDuration(t, time.Now().Add(24*time.Hour), *got.ExpiresAt, 5*time.Second)

	tx, err = s.Begin(ctx)
	require.NoError(t, err)
	err = s.SetOutcomesTx(ctx, tx, storage.Received, []storage.Outcome{{ID: 1, Status: storage.StatusSucceeded}})
	require.ErrorIs(t, err, storage.ErrStale)
	err = s.SetOutcomesTx(ctx, tx, storage.Received, []storage.Outcome{{ID: 7, Status: storage.StatusSucceeded}})
	require.ErrorIs(t, err, storage.ErrNotFound)
	require.NoError(t, s.Rollback(ctx, tx))
}

func TestListCountsDelete(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ctx := t.Context()
	for i := range 25 {
		name := "order.created"
		if i%5 == 0 {
			name = "Invoice.Paid"
		}
		_, err := s.InsertReceived(ctx, &storage.Record{
			ID: int64(i + 1), Version: "v1", Name: name, Group: fmt.Sprintf("g%d", i%2),
			MessageID: fmt.Sprint(i), Content: fmt.Appendf(nil, `{"Value":"Item-%d"}`, i),
		})
		require.NoError(t, err)
	}
	page, total, err := s.List(ctx, storage.Received, storage.ListQuery{})
	require.NoError(t, err)
	require.EqualValues(t, 25, total)
	require.Len(t, page, 20)
	require.Equal(t, int64(25), page[0].ID, "newest first; same Added falls back to Id")

	page, total, err = s.List(ctx, storage.Received, storage.ListQuery{Name: "INVOICE", Group: "g0"})
	require.NoError(t, err)
	require.EqualValues(t, 3, total) // i = 0, 10, 20
	require.Len(t, page, 3)

	page, total, err = s.List(ctx, storage.Received, storage.ListQuery{Content: "item-1", Offset: 2, Limit: 5})
	require.NoError(t, err)
	require.EqualValues(t, 11, total) // 1, 10..19
	require.Len(t, page, 5)

	_, total, err = s.List(ctx, storage.Received, storage.ListQuery{Status: storage.StatusFailed})
	require.NoError(t, err)
	require.Zero(t, total)

	require.NoError(t, s.SetOutcomes(ctx, storage.Received, []storage.Outcome{
		{ID: 1, Status: storage.StatusSucceeded, ExpiresIn: -time.Second},
		{ID: 2, Status: storage.StatusSucceeded, ExpiresIn: time.Millisecond},
		{ID: 3, Status: storage.StatusFailed, ExpiresIn: time.Hour},
	}))
	counts, err := s.Counts(ctx, storage.Received)
	require.NoError(t, err)
	require.Equal(t, map[storage.Status]int64{
		storage.StatusScheduled: 22, storage.StatusSucceeded: 2, storage.StatusFailed: 1,
	}, counts)

	// Row 2 expires one millisecond after its outcome; row 1 has no ExpiresAt.
	require.Eventually(t, func() bool {
		n, err := s.DeleteExpired(ctx, storage.Received, 10)
		return err == nil && n == 1
	}, 5*time.Second, 5*time.Millisecond)
	_, err = s.Get(ctx, storage.Received, 2)
	require.ErrorIs(t, err, storage.ErrNotFound)

	require.NoError(t, s.Delete(ctx, storage.Received, []int64{1, 3, 1000}))
	_, total, err = s.List(ctx, storage.Received, storage.ListQuery{})
	require.NoError(t, err)
	require.EqualValues(t, 22, total)
}
