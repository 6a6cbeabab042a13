package postgres_test

import (
	"context"
	"database/sql"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/postgres"
)

var nextID atomic.Int64

func init() { nextID.Store(time.Now().UnixNano()) }

func rec(name string) *storage.Record {
	return &storage.Record{
		ID:      nextID.Add(1),
		Version: "v1",
		Name:    name,
		Content: []byte(`{"Headers":{"cap-msg-name":"` + name + `"},"Value":1}`),
	}
}

// TestStore runs the focused checks on both constructors.
func TestStore(t *testing.T) {
	t.Parallel()
	t.Run("pgx", func(t *testing.T) {
		t.Parallel()
		exerciseStore(t, func(t *testing.T) *postgres.Store[pgx.Tx] { return newPgx(t, postgres.Options{}) })
	})
	t.Run("sql", func(t *testing.T) {
		t.Parallel()
		exerciseStore(t, func(t *testing.T) *postgres.Store[*sql.Tx] { return newSQL(t, postgres.Options{}) })
	})
}

func exerciseStore[TTx any](t *testing.T, newStore func(t *testing.T) *postgres.Store[TTx]) {
	ctx := context.Background()

	t.Run("InsertClaimOutcome", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		before := time.Now().UTC()
		plain, delayed, leased, terminal := rec("a"), rec("b"), rec("c"), rec("d")
		delayed.Status, delayed.DueIn = storage.StatusDelayed, time.Hour
		leased.DueIn, leased.ExpiresIn = time.Minute, 24*time.Hour
		terminal.Status, terminal.Terminal, terminal.ExpiresIn = storage.StatusFailed, true, time.Hour
		plain.Status = ""
		require.NoError(t, s.InsertPublished(ctx, []*storage.Record{plain, delayed, leased, terminal}))

		require.Equal(t, storage.StatusScheduled, plain.Status)
		require.WithinDuration(t, before, plain.Added, 5*time.Second)
		require.Equal(t, time.UTC, plain.Added.Location())
		require.NotNil(t, plain.NextAttemptAt)
		require.Equal(t, plain.Added, *plain.NextAttemptAt)
		require.Nil(t, plain.ExpiresAt)
		require.Equal(t, delayed.Added.Add(time.Hour), *delayed.NextAttemptAt)
		require.Equal(t, *delayed.NextAttemptAt, *delayed.ExpiresAt, "a Delayed row expires when due")
		require.Equal(t, leased.Added.Add(24*time.Hour), *leased.ExpiresAt)
		require.Nil(t, terminal.NextAttemptAt)
		require.Equal(t, terminal.Added.Add(time.Hour), *terminal.ExpiresAt)

		got, err := s.Get(ctx, storage.Published, plain.ID)
		require.NoError(t, err)
		require.Equal(t, plain.Content, got.Content)
		require.Equal(t, plain.Added, got.Added)

		// Only the plain row is due; other versions are not claimed.
		other := rec("other")
		other.Version = "v2"
		require.NoError(t, s.InsertPublished(ctx, []*storage.Record{other}))
		claimed, err := s.Claim(ctx, storage.Published, storage.ClaimRequest{Version: "v1", Limit: 10, Lease: time.Minute})
		require.NoError(t, err)
		require.Len(t, claimed, 1)
		require.Equal(t, plain.ID, claimed[0].ID)
		require.Equal(t, storage.StatusScheduled, claimed[0].Status)
		require.WithinDuration(t, plain.Added.Add(time.Minute), *claimed[0].NextAttemptAt, 5*time.Second)
		again, err := s.Claim(ctx, storage.Published, storage.ClaimRequest{Version: "v1", Limit: 10, Lease: time.Minute})
		require.NoError(t, err)
		require.Empty(t, again, "a leased row is not claimed again")

		// A failure to retry now, then a success.
		require.NoError(t, s.SetOutcomes(ctx, storage.Published, []storage.Outcome{{
			ID: plain.ID, Status: storage.StatusFailed, Retries: 1, Content: []byte("failed"),
			ExpiresIn: time.Hour, ExpiresFromAdded: true, Retry: true,
		}, {ID: 42, Status: storage.StatusSucceeded}}))
		got, err = s.Get(ctx, storage.Published, plain.ID)
		require.NoError(t, err)
		require.Equal(t, storage.StatusFailed, got.Status)
		require.Equal(t, 1, got.Retries)
		require.Equal(t, "failed", string(got.Content))
		require.Equal(t, plain.Added.Add(time.Hour), *got.ExpiresAt)
		claimed, err = s.Claim(ctx, storage.Published, storage.ClaimRequest{Version: "v1", Limit: 10, Lease: time.Minute})
		require.NoError(t, err)
		require.Len(t, claimed, 1, "a row to retry now is due again")

		require.NoError(t, s.SetOutcomes(ctx, storage.Published, []storage.Outcome{{
			ID: plain.ID, Status: storage.StatusSucceeded, Retries: 1, ExpiresIn: -time.Second,
		}}))
		got, err = s.Get(ctx, storage.Published, plain.ID)
		require.NoError(t, err)
		require.Equal(t, "failed", string(got.Content), "nil content keeps the stored one")
		require.Nil(t, got.NextAttemptAt)
		require.Nil(t, got.ExpiresAt)

		_, err = s.Get(ctx, storage.Published, 1)
		require.ErrorIs(t, err, storage.ErrNotFound)
	})

	t.Run("ClaimOrderAndReschedule", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		var recs []*storage.Record
		for i := range 5 {
			r := rec("order")
			r.DueIn = -time.Duration(i) * time.Minute // later rows fell due earlier
			recs = append(recs, r)
		}
		require.NoError(t, s.InsertPublished(ctx, recs))
		claimed, err := s.Claim(ctx, storage.Published, storage.ClaimRequest{Version: "v1", Limit: 3, Lease: time.Hour})
		require.NoError(t, err)
		require.Equal(t, []int64{recs[4].ID, recs[3].ID, recs[2].ID}, ids(claimed))

		require.NoError(t, s.Reschedule(ctx, storage.Published, []int64{recs[4].ID}, -time.Second))
		claimed, err = s.Claim(ctx, storage.Published, storage.ClaimRequest{Version: "v1", Limit: 10, Lease: time.Hour})
		require.NoError(t, err)
		require.ElementsMatch(t, []int64{recs[4].ID, recs[1].ID, recs[0].ID}, ids(claimed))
	})

	t.Run("Received", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		r := rec("recv")
		r.Group, r.MessageID = "g1", "m1"
		ok, err := s.InsertReceived(ctx, r)
		require.NoError(t, err)
		require.True(t, ok)
		require.NotNil(t, r.NextAttemptAt)
		dup := rec("recv")
		dup.Group, dup.MessageID = "g1", "m1"
		ok, err = s.InsertReceived(ctx, dup)
		require.NoError(t, err)
		require.False(t, ok, "same (MessageId, Group)")
		other := rec("recv")
		other.Group, other.MessageID = "g2", "m1"
		ok, err = s.InsertReceived(ctx, other)
		require.NoError(t, err)
		require.True(t, ok, "another group")
		noGroup := rec("recv")
		noGroup.MessageID = "m1"
		ok, err = s.InsertReceived(ctx, noGroup)
		require.NoError(t, err)
		require.True(t, ok)
		noGroup2 := rec("recv")
		noGroup2.MessageID = "m1"
		ok, err = s.InsertReceived(ctx, noGroup2)
		require.NoError(t, err)
		require.False(t, ok, "an empty group de-duplicates too")

		got, err := s.Get(ctx, storage.Received, r.ID)
		require.NoError(t, err)
		require.Equal(t, "g1", got.Group)
		require.Equal(t, "m1", got.MessageID)

		// SetOutcomesTx: written, then stale, then not found.
		tx, err := s.Begin(ctx)
		require.NoError(t, err)
		require.NoError(t, s.SetOutcomesTx(ctx, tx, storage.Received, []storage.Outcome{{ID: r.ID, Status: storage.StatusSucceeded}}))
		require.NoError(t, s.Commit(ctx, tx))
		tx, err = s.Begin(ctx)
		require.NoError(t, err)
		err = s.SetOutcomesTx(ctx, tx, storage.Received, []storage.Outcome{{ID: other.ID, Status: storage.StatusSucceeded}, {ID: r.ID, Status: storage.StatusFailed}})
		require.ErrorIs(t, err, storage.ErrStale)
		require.NoError(t, s.Rollback(ctx, tx))
		require.NoError(t, s.Rollback(ctx, tx), "rolling back twice")
		tx, err = s.Begin(ctx)
		require.NoError(t, err)
		err = s.SetOutcomesTx(ctx, tx, storage.Received, []storage.Outcome{{ID: 7, Status: storage.StatusSucceeded}})
		require.ErrorIs(t, err, storage.ErrNotFound)
		require.NoError(t, s.Rollback(ctx, tx))
		got, err = s.Get(ctx, storage.Received, other.ID)
		require.NoError(t, err)
		require.Equal(t, storage.StatusScheduled, got.Status, "rolled back")
	})

	t.Run("TxRollback", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		tx, err := s.Begin(ctx)
		require.NoError(t, err)
		r := rec("tx")
		require.NoError(t, s.InsertPublishedTx(ctx, tx, []*storage.Record{r}))
		require.NoError(t, s.Rollback(ctx, tx))
		_, err = s.Get(ctx, storage.Published, r.ID)
		require.ErrorIs(t, err, storage.ErrNotFound)
		claimed, err := s.Claim(ctx, storage.Published, storage.ClaimRequest{Version: "v1", Limit: 10, Lease: time.Hour})
		require.NoError(t, err)
		require.Empty(t, claimed)
	})

	t.Run("DashboardAndCleanup", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		var all []*storage.Record
		for i := range 30 {
			r := rec("list.one")
			if i%3 == 0 {
				r.Name = "list.TWO_%"
				r.Status = storage.StatusFailed
			}
			all = append(all, r)
		}
		require.NoError(t, s.InsertPublished(ctx, all))
		page, total, err := s.List(ctx, storage.Published, storage.ListQuery{})
		require.NoError(t, err)
		require.EqualValues(t, 30, total)
		require.Len(t, page, 20)
		require.Equal(t, all[29].ID, page[0].ID, "same Added: higher id first")
		page, total, err = s.List(ctx, storage.Published, storage.ListQuery{Name: "two_%", Offset: 8})
		require.NoError(t, err)
		require.EqualValues(t, 10, total)
		require.Len(t, page, 2)
		_, total, err = s.List(ctx, storage.Published, storage.ListQuery{Name: "tw_"})
		require.NoError(t, err)
		require.EqualValues(t, 0, total, "_ is not a wildcard")
		_, total, err = s.List(ctx, storage.Published, storage.ListQuery{Status: storage.StatusScheduled, Content: "LIST.ONE"})
		require.NoError(t, err)
		require.EqualValues(t, 20, total)
		counts, err := s.Counts(ctx, storage.Published)
		require.NoError(t, err)
		require.Equal(t, map[storage.Status]int64{storage.StatusScheduled: 20, storage.StatusFailed: 10}, counts)

		var outs []storage.Outcome
		for _, r := range all[:12] {
			outs = append(outs, storage.Outcome{ID: r.ID, Status: storage.StatusSucceeded, ExpiresIn: time.Millisecond})
		}
		require.NoError(t, s.SetOutcomes(ctx, storage.Published, outs))
		// The rows expire a millisecond after their outcome, so the first
		// deletes may find none of them: delete in batches of 5 until none
		// is left.
		var mu sync.Mutex // the condition runs on goroutines of its own
		var most int64
		var lastErr error
		ok := assert.Eventually(t, func() bool {
			n, err := s.DeleteExpired(ctx, storage.Published, 5)
			var counts map[storage.Status]int64
			if err == nil {
				counts, err = s.Counts(ctx, storage.Published)
			}
			mu.Lock()
			defer mu.Unlock()
			most, lastErr = max(most, n), err
			return err == nil && n == 0 && counts[storage.StatusSucceeded] == 0
		}, 5*time.Second, 10*time.Millisecond)
		mu.Lock()
		deleted, err := most, lastErr
		mu.Unlock()
		require.True(t, ok, "expired rows left; last error: %v", err)
		require.LessOrEqual(t, deleted, int64(5), "DeleteExpired deletes at most its limit")
		counts, err = s.Counts(ctx, storage.Published)
		require.NoError(t, err)
		require.Equal(t, map[storage.Status]int64{storage.StatusScheduled: 12, storage.StatusFailed: 6}, counts)

		require.NoError(t, s.Delete(ctx, storage.Published, []int64{all[29].ID, all[28].ID}))
		_, total, err = s.List(ctx, storage.Published, storage.ListQuery{})
		require.NoError(t, err)
		require.EqualValues(t, 16, total)
	})

	t.Run("ConcurrentClaims", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		const rows = 1000
		var recs []*storage.Record
		for range rows {
			recs = append(recs, rec("concurrent"))
		}
		require.NoError(t, s.InsertPublished(ctx, recs))
		var (
			mu   sync.Mutex
			seen = map[int64]int{}
			wg   sync.WaitGroup
		)
		for range 8 {
			wg.Go(func() {
				for {
					got, err := s.Claim(ctx, storage.Published, storage.ClaimRequest{Version: "v1", Limit: 17, Lease: time.Hour})
					if err != nil {
						t.Error(err)
						return
					}
					if len(got) == 0 {
						return
					}
					mu.Lock()
					for _, r := range got {
						seen[r.ID]++
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		require.Len(t, seen, rows)
		for id, n := range seen {
			require.Equal(t, 1, n, "row %d claimed %d times", id, n)
		}
	})
}

func ids(recs []*storage.Record) []int64 {
	out := make([]int64, len(recs))
	for i, r := range recs {
		out[i] = r.ID
	}
	return out
}

func TestOptions(t *testing.T) {
	t.Parallel()
	pool, db := connect(t)
	_, err := postgres.New(pool, postgres.Options{Schema: `cap"; DROP TABLE x; --`})
	require.ErrorIs(t, err, storage.ErrInvalidIdentifier)
	_, err = postgres.NewSQL(db, postgres.Options{Schema: "1cap"})
	require.ErrorIs(t, err, storage.ErrInvalidIdentifier)
	s, err := postgres.New(pool, postgres.Options{})
	require.NoError(t, err)
	require.Equal(t, "cap", s.Schema())
	require.Equal(t, "PostgreSql", s.Name())
}
