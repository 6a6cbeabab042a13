package sqlserver_test

import (
	"context"
	"database/sql"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/internal/testwait"
	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/sqlserver"
	"github.com/go-cap/cap/storage/storagetest"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestBus runs the shared bus suite on SQL Server (it needs
// CAP_TEST_SQLSERVER): 5,000 messages from 16 writers in business
// transactions (one in ten rolled back), the inbox, and three instances on
// one database with an abrupt stop. This storage has no notifications, so
// the buses find plainly committed rows by polling.
func TestBus(t *testing.T) {
	db := openDB(t, 32)
	h := storagetest.BusHarness[*sql.Tx]{
		New: func(t *testing.T) (storage.Storage[*sql.Tx], func(*testing.T) storage.Storage[*sql.Tx]) {
			schema := newSchema(t)
			another := func(t *testing.T) storage.Storage[*sql.Tx] {
				s, err := sqlserver.New(db, sqlserver.Options{Schema: schema})
				require.NoError(t, err)
				return s
			}
			return newStore(t, sqlserver.Options{Schema: schema}), another
		},
		Orders: func(t *testing.T) (func(context.Context, *sql.Tx, int) error, func(context.Context) (int, error)) {
			table := businessTable(t, "orders", "n int PRIMARY KEY")
			insert := func(ctx context.Context, tx *sql.Tx, n int) error {
				_, err := tx.ExecContext(ctx, `INSERT INTO `+table+` (n) VALUES (@p1)`, n)
				return err
			}
			count := func(ctx context.Context) (n int, err error) {
				err = db.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+table).Scan(&n)
				return n, err
			}
			return insert, count
		},
		Ledger: func(t *testing.T) (func(context.Context, *sql.Tx, string, int) error, func(context.Context) (int, int, error)) {
			table := businessTable(t, "ledger", "msg nvarchar(100) NOT NULL, amount int NOT NULL")
			add := func(ctx context.Context, tx *sql.Tx, msg string, amount int) error {
				_, err := tx.ExecContext(ctx, `INSERT INTO `+table+` (msg, amount) VALUES (@p1, @p2)`, msg, amount)
				return err
			}
			sum := func(ctx context.Context) (rows, total int, err error) {
				err = db.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM `+table).Scan(&rows, &total)
				return rows, total, err
			}
			return add, sum
		},
	}
	h.Begin, h.Commit, h.Rollback = storagetest.SQLTransactions(db)
	storagetest.RunBus(t, h)
}

// businessTable creates a table with the columns given in a schema of the
// test's own (dropped with it) and returns its quoted name.
func businessTable(t *testing.T, name, columns string) string {
	t.Helper()
	schema := newSchema(t)
	execSQL(t, `IF SCHEMA_ID(N'`+schema+`') IS NULL EXEC(N'CREATE SCHEMA [`+schema+`]')`)
	table := `[` + schema + `].[` + name + `]`
	execSQL(t, `CREATE TABLE `+table+` (`+columns+`)`)
	return table
}

// eventually polls cond until it holds or d has passed.
func eventually(t *testing.T, d time.Duration, cond func() bool, msg string) {
	t.Helper()
	testwait.Until(t, d, cond, "%s", msg)
}
