package postgres_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/postgres"
)

// quiet is how long a test waits to conclude that no signal comes.
const quiet = 300 * time.Millisecond

func requireSignal(t *testing.T, ch <-chan struct{}, msg string) {
	t.Helper()
	select {
	case _, ok := <-ch:
		require.True(t, ok, "channel closed: %s", msg)
	case <-time.After(5 * time.Second):
		t.Fatalf("no notification: %s", msg)
	}
}

func requireNoSignal(t *testing.T, ch <-chan struct{}, msg string) {
	t.Helper()
	select {
	case <-ch:
		t.Fatalf("unexpected notification: %s", msg)
	case <-time.After(quiet):
	}
}

func TestNotifications(t *testing.T) {
	t.Parallel()
	t.Run("pgx", func(t *testing.T) {
		t.Parallel()
		exerciseNotify(t, newPgx(t, postgres.Options{NotifyInterval: -1}))
	})
	t.Run("sql", func(t *testing.T) {
		t.Parallel()
		exerciseNotify(t, newSQL(t, postgres.Options{NotifyInterval: -1}))
	})
	t.Run("sql-ListenConnString", func(t *testing.T) {
		t.Parallel()
		exerciseNotify(t, newSQL(t, postgres.Options{NotifyInterval: -1, ListenConnString: dsn()}))
	})
}

func exerciseNotify[TTx any](t *testing.T, s *postgres.Store[TTx]) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := s.Notifications(ctx)
	require.NoError(t, err)
	requireSignal(t, ch, "after LISTEN")

	// Delivered on commit, not before.
	tx, err := s.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, s.InsertPublishedTx(ctx, tx, []*storage.Record{rec("n1")}))
	requireNoSignal(t, ch, "before commit")
	require.NoError(t, s.Commit(ctx, tx))
	requireSignal(t, ch, "after commit")

	// Not for a rolled back transaction.
	tx, err = s.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, s.InsertPublishedTx(ctx, tx, []*storage.Record{rec("n2")}))
	require.NoError(t, s.Rollback(ctx, tx))
	requireNoSignal(t, ch, "after rollback")

	// Not for rows that are not due yet or that the inserter sends itself.
	later := rec("n3")
	later.DueIn = time.Minute
	require.NoError(t, s.InsertPublished(ctx, []*storage.Record{later}))
	requireNoSignal(t, ch, "row leased to its inserter")

	// A plain insert of a due row notifies too.
	require.NoError(t, s.InsertPublished(ctx, []*storage.Record{rec("n4")}))
	requireSignal(t, ch, "after a plain insert")

	cancel()
	require.Eventually(t, func() bool {
		select {
		case _, ok := <-ch:
			return !ok
		default:
			return false
		}
	}, 5*time.Second, 10*time.Millisecond, "channel closed when ctx ends")
}

// listenerPID returns the backend of the connection listening on schema's
// channel, waiting for it to (re)appear and differ from not.
func listenerPID(t *testing.T, schema string, not int32) int32 {
	t.Helper()
	pool, _ := connect(t)
	var pid int32
	require.Eventually(t, func() bool {
		err := pool.QueryRow(context.Background(),
			`SELECT pid FROM pg_stat_activity WHERE query = $1 AND pid <> $2`,
			`LISTEN "`+schema+`_published"`, not).Scan(&pid)
		return err == nil
	}, 10*time.Second, 20*time.Millisecond, "listener connection")
	return pid
}

// TestNotificationsResumeAfterDisconnect kills the listener's backend and
// expects notifications to resume on a new connection.
func TestNotificationsResumeAfterDisconnect(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := newPgx(t, postgres.Options{NotifyInterval: -1})
	ch, err := s.Notifications(ctx)
	require.NoError(t, err)
	requireSignal(t, ch, "after LISTEN")
	pid := listenerPID(t, s.Schema(), 0)

	psql(t, `SELECT pg_terminate_backend($1)`, pid)
	// A commit while the listener is away is covered by the signal sent on
	// reconnecting.
	require.NoError(t, s.InsertPublished(ctx, []*storage.Record{rec("while.away")}))
	listenerPID(t, s.Schema(), pid)
	requireSignal(t, ch, "after reconnecting")
	for len(ch) > 0 {
		<-ch
	}
	require.NoError(t, s.InsertPublished(ctx, []*storage.Record{rec("after")}))
	requireSignal(t, ch, "on the new connection")
}

// TestDisableNotify: no LISTEN, and inserts send no NOTIFY that another
// listener could hear.
func TestDisableNotify(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pool, db := connect(t)
	listening := newPgx(t, postgres.Options{NotifyInterval: -1})
	ch, err := listening.Notifications(ctx)
	require.NoError(t, err)
	requireSignal(t, ch, "after LISTEN")

	quietPgx, err := postgres.New(pool, postgres.Options{Schema: listening.Schema(), DisableNotify: true})
	require.NoError(t, err)
	quietSQL, err := postgres.NewSQL(db, postgres.Options{Schema: listening.Schema(), DisableNotify: true})
	require.NoError(t, err)
	// No listener: a channel that stays silent until ctx ends.
	qctx, qcancel := context.WithCancel(ctx)
	quietCh, err := quietSQL.Notifications(qctx)
	require.NoError(t, err)

	require.NoError(t, quietPgx.InsertPublished(ctx, []*storage.Record{rec("quiet")}))
	tx, err := quietSQL.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, quietSQL.InsertPublishedTx(ctx, tx, []*storage.Record{rec("quiet")}))
	require.NoError(t, quietSQL.Commit(ctx, tx))
	requireNoSignal(t, ch, "with DisableNotify")
	select {
	case <-quietCh:
		t.Fatal("a storage with DisableNotify signalled")
	default:
	}
	qcancel()
	_, open := <-quietCh
	require.False(t, open, "closed when ctx ends")

	// The same insert through the notifying storage is heard: the check
	// above could have failed.
	require.NoError(t, listening.InsertPublished(ctx, []*storage.Record{rec("loud")}))
	requireSignal(t, ch, "without DisableNotify")
}

// TestNotifyInterval: within the interval only the first transaction runs
// NOTIFY, as a plain LISTEN connection sees.
func TestNotifyInterval(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newPgx(t, postgres.Options{NotifyInterval: time.Hour})
	conn, err := pgx.Connect(ctx, dsn())
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `LISTEN "`+s.Schema()+`_published"`)
	require.NoError(t, err)
	heard := func() bool {
		wctx, cancel := context.WithTimeout(ctx, quiet)
		defer cancel()
		return conn.PgConn().WaitForNotification(wctx) == nil
	}
	publish := func() {
		tx, err := s.Begin(ctx)
		require.NoError(t, err)
		require.NoError(t, s.InsertPublishedTx(ctx, tx, []*storage.Record{rec("limited")}))
		require.NoError(t, s.Commit(ctx, tx))
	}
	publish()
	require.True(t, heard(), "the first transaction notifies")
	publish()
	publish()
	require.False(t, heard(), "later ones within the interval do not")
}

// TestNotifyTrailingWake: a transaction that skipped its NOTIFY because
// another had just sent one is still heard, through the listener's
// trailing wake-ups.
func TestNotifyTrailingWake(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := newPgx(t, postgres.Options{NotifyInterval: 100 * time.Millisecond})
	ch, err := s.Notifications(ctx)
	require.NoError(t, err)
	requireSignal(t, ch, "after LISTEN")
	require.NoError(t, s.InsertPublished(ctx, []*storage.Record{rec("first")}))
	requireSignal(t, ch, "first commit")
	require.NoError(t, s.InsertPublished(ctx, []*storage.Record{rec("second")}))
	requireSignal(t, ch, "trailing wake-up")
	// The trailing wake-ups stop after 7 intervals.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-ch:
		case <-time.After(time.Until(deadline)):
		}
	}
	requireNoSignal(t, ch, "trailing wake-ups end")
}

func TestListenConnStringInvalid(t *testing.T) {
	t.Parallel()
	_, db := connect(t)
	s, err := postgres.NewSQL(db, postgres.Options{Schema: "cap_unused", ListenConnString: "postgres://:badport"})
	require.NoError(t, err)
	_, err = s.Notifications(context.Background())
	require.ErrorIs(t, err, postgres.ErrNoListenConfig)
}

var (
	_ storage.Notifier = (*postgres.Store[*sql.Tx])(nil)
	_ storage.Notifier = (*postgres.Store[pgx.Tx])(nil)
)
