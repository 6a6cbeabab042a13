package mysql_test

import (
	"context"
	"database/sql"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/mysql"
	"github.com/go-cap/cap/storage/storagetest"
	memtr "github.com/go-cap/cap/transport/memory"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// busDB returns a *sql.DB of its own for a bus test, so the bus's workers
// and the test's publishers do not starve the other tests.
func busDB(t *testing.T, conns int) *sql.DB {
	t.Helper()
	connect(t) // skips or fails when the server is unreachable
	db, err := open(dsn(), conns)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// TestBus runs the shared bus suite on MariaDB/MySQL: 5,000 messages from
// 16 writers in business transactions (one in ten rolled back), the inbox,
// and three instances on one database with an abrupt stop.
func TestBus(t *testing.T) {
	db := busDB(t, 24)
	h := storagetest.BusHarness[*sql.Tx]{
		New: func(t *testing.T) (storage.Storage[*sql.Tx], func(*testing.T) storage.Storage[*sql.Tx]) {
			prefix := newPrefix(t)
			another := func(t *testing.T) storage.Storage[*sql.Tx] {
				s, err := mysql.New(db, mysql.Options{TableNamePrefix: prefix})
				require.NoError(t, err)
				return s
			}
			return newStore(t, db, mysql.Options{TableNamePrefix: prefix}), another
		},
		Orders: func(t *testing.T) (func(context.Context, *sql.Tx, int) error, func(context.Context) (int, error)) {
			table := businessTable(t, "orders", "n int PRIMARY KEY")
			insert := func(ctx context.Context, tx *sql.Tx, n int) error {
				_, err := tx.ExecContext(ctx, "INSERT INTO `"+table+"` (n) VALUES (?)", n)
				return err
			}
			count := func(ctx context.Context) (n int, err error) {
				err = db.QueryRowContext(ctx, "SELECT COUNT(*) FROM `"+table+"`").Scan(&n)
				return n, err
			}
			return insert, count
		},
		Ledger: func(t *testing.T) (func(context.Context, *sql.Tx, string, int) error, func(context.Context) (int, int, error)) {
			table := businessTable(t, "ledger", "msg varchar(64) NOT NULL, amount int NOT NULL")
			add := func(ctx context.Context, tx *sql.Tx, msg string, amount int) error {
				_, err := tx.ExecContext(ctx, "INSERT INTO `"+table+"` (msg, amount) VALUES (?, ?)", msg, amount)
				return err
			}
			sum := func(ctx context.Context) (rows, total int, err error) {
				err = db.QueryRowContext(ctx, "SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM `"+table+"`").Scan(&rows, &total)
				return rows, total, err
			}
			return add, sum
		},
	}
	h.Begin, h.Commit, h.Rollback = storagetest.SQLTransactions(db)
	storagetest.RunBus(t, h)
}

// businessTable creates a table of the test's own with the columns given,
// dropped when the test ends.
func businessTable(t *testing.T, name, columns string) string {
	t.Helper()
	table := newPrefix(t) + "_" + name
	t.Cleanup(func() { exec(t, "DROP TABLE IF EXISTS `"+table+"`") })
	exec(t, "CREATE TABLE `"+table+"` ("+columns+") ENGINE=InnoDB")
	return table
}

// TestBusNotificationsOff: with a negative NotifyInterval the bus starts
// and finds plainly committed messages by polling.
func TestBusNotificationsOff(t *testing.T) {
	ctx := context.Background()
	db := busDB(t, 8)
	store, err := mysql.New(db, mysql.Options{TableNamePrefix: newPrefix(t), NotifyInterval: -1})
	require.NoError(t, err)
	tr := memtr.New()
	t.Cleanup(func() { _ = tr.Close() })
	bus, err := cap.New(store, tr, cap.Options{Logger: quietLogger(), PollInterval: 100 * time.Millisecond})
	require.NoError(t, err)
	got := make(chan string, 1)
	require.NoError(t, cap.Subscribe(bus, "polled", "g", func(ctx context.Context, m cap.Msg[string]) error {
		got <- m.Payload
		return nil
	}))
	require.NoError(t, bus.Start(ctx))
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = bus.Shutdown(sctx)
	})
	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	require.NoError(t, bus.PublishTx(ctx, tx, "polled", "one"))
	require.NoError(t, tx.Commit())
	select {
	case p := <-got:
		require.Equal(t, "one", p)
	case <-time.After(5 * time.Second):
		t.Fatal("a plainly committed message was not found by polling within 5 s")
	}
}
