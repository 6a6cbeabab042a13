package postgres_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/postgres"
)

// statements records the SQL a pool runs.
type statements struct {
	mu  sync.Mutex
	sql []string
}

func (s *statements) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	s.mu.Lock()
	s.sql = append(s.sql, d.SQL)
	s.mu.Unlock()
	return ctx
}

func (s *statements) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// take returns what ran since the last take.
func (s *statements) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.sql
	s.sql = nil
	return out
}

// TestSyncCommit: the bus's bookkeeping statements (claims, leases,
// outcomes, expiry deletes) commit without waiting for the WAL unless
// Options.SyncCommit, each in its own transaction only: the session keeps
// its setting, and what must be durable (inserts, statements in the
// caller's transaction) always commits as the server is configured.
func TestSyncCommit(t *testing.T) {
	t.Parallel()
	for _, syncCommit := range []bool{false, true} {
		t.Run(map[bool]string{false: "default", true: "SyncCommit"}[syncCommit], func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			connect(t) // skips or fails when there is no server
			cfg, err := pgxpool.ParseConfig(dsn())
			require.NoError(t, err)
			cfg.MaxConns = 1 // one session: a setting that leaked would show
			trace := &statements{}
			cfg.ConnConfig.Tracer = trace
			pool, err := pgxpool.NewWithConfig(ctx, cfg)
			require.NoError(t, err)
			defer pool.Close()
			s, err := postgres.New(pool, postgres.Options{Schema: newSchema(t), SyncCommit: syncCommit, DisableNotify: true})
			require.NoError(t, err)
			require.NoError(t, s.Migrate(ctx))

			const async = "set_config('synchronous_commit', 'off', true)"
			session := func() string {
				var v string
				require.NoError(t, pool.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&v))
				return v
			}
			require.Equal(t, "on", session())
			check := func(what string, bookkeeping bool, run func() error) {
				t.Helper()
				trace.take()
				require.NoError(t, run(), what)
				ran := trace.take()
				require.NotEmpty(t, ran, what)
				for _, q := range ran {
					require.Equal(t, bookkeeping && !syncCommit, strings.Contains(q, async), "%s ran %s", what, q)
				}
				require.Equal(t, "on", session(), "the session's setting after %s", what)
			}

			pub, recv := rec("a"), rec("b")
			recv.MessageID, recv.Group = "m1", "g"
			check("InsertPublished", false, func() error { return s.InsertPublished(ctx, []*storage.Record{pub}) })
			check("InsertReceivedBatch", false, func() error {
				_, err := s.InsertReceivedBatch(ctx, []*storage.Record{recv})
				return err
			})
			check("Claim", true, func() error {
				got, err := s.Claim(ctx, storage.Published, storage.ClaimRequest{Version: "v1", Limit: 10, Lease: time.Minute})
				require.Len(t, got, 1)
				return err
			})
			check("Reschedule", true, func() error { return s.Reschedule(ctx, storage.Published, []int64{pub.ID}, time.Minute) })
			check("SetOutcomes", true, func() error {
				return s.SetOutcomes(ctx, storage.Published, []storage.Outcome{{ID: pub.ID, Status: storage.StatusSucceeded}})
			})
			check("DeleteExpired", true, func() error {
				_, err := s.DeleteExpired(ctx, storage.Published, 10)
				return err
			})
			check("SetOutcomesTx", false, func() error {
				tx, err := s.Begin(ctx)
				require.NoError(t, err)
				defer func() { _ = s.Rollback(ctx, tx) }()
				require.NoError(t, s.SetOutcomesTx(ctx, tx, storage.Received, []storage.Outcome{{ID: recv.ID, Status: storage.StatusSucceeded}}))
				var v string
				require.NoError(t, tx.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&v))
				require.Equal(t, "on", v, "the caller's transaction")
				return s.Commit(ctx, tx)
			})
			got, err := s.Get(ctx, storage.Published, pub.ID)
			require.NoError(t, err)
			require.Equal(t, storage.StatusSucceeded, got.Status, "the bookkeeping statements did their work")
			got, err = s.Get(ctx, storage.Received, recv.ID)
			require.NoError(t, err)
			require.Equal(t, storage.StatusSucceeded, got.Status)
		})
	}
}
