package sqlite_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/sqlite"
	"github.com/go-cap/cap/storage/storagetest"
)

// TestBus runs the shared bus suite on a file database: 5,000 messages from
// 16 writers in business transactions (one in ten rolled back), the inbox,
// three instances on one database with an abrupt stop, and plain commits.
func TestBus(t *testing.T) {
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "cap.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	h := storagetest.BusHarness[*sql.Tx]{
		New: func(t *testing.T) (storage.Storage[*sql.Tx], func(*testing.T) storage.Storage[*sql.Tx]) {
			prefix := "t" + randomHex()
			another := func(t *testing.T) storage.Storage[*sql.Tx] {
				s, err := sqlite.New(db, sqlite.Options{TablePrefix: prefix})
				require.NoError(t, err)
				return s
			}
			s := another(t)
			require.NoError(t, s.(*sqlite.Storage).Migrate(t.Context()))
			return s, another
		},
		Orders: func(t *testing.T) (func(context.Context, *sql.Tx, int) error, func(context.Context) (int, error)) {
			table := "orders_" + randomHex()
			_, err := db.Exec(`CREATE TABLE ` + table + ` (n integer PRIMARY KEY)`)
			require.NoError(t, err)
			insert := func(ctx context.Context, tx *sql.Tx, n int) error {
				_, err := tx.ExecContext(ctx, `INSERT INTO `+table+` (n) VALUES (?)`, n)
				return err
			}
			count := func(ctx context.Context) (n int, err error) {
				return n, db.QueryRowContext(ctx, `SELECT count(*) FROM `+table).Scan(&n)
			}
			return insert, count
		},
		Ledger: func(t *testing.T) (func(context.Context, *sql.Tx, string, int) error, func(context.Context) (int, int, error)) {
			table := "ledger_" + randomHex()
			_, err := db.Exec(`CREATE TABLE ` + table + ` (msg text NOT NULL, amount integer NOT NULL)`)
			require.NoError(t, err)
			add := func(ctx context.Context, tx *sql.Tx, msg string, amount int) error {
				_, err := tx.ExecContext(ctx, `INSERT INTO `+table+` (msg, amount) VALUES (?, ?)`, msg, amount)
				return err
			}
			sum := func(ctx context.Context) (rows, total int, err error) {
				return rows, total, db.QueryRowContext(ctx, `SELECT count(*), COALESCE(sum(amount), 0) FROM `+table).Scan(&rows, &total)
			}
			return add, sum
		},
	}
	h.Begin, h.Commit, h.Rollback = storagetest.SQLTransactions(db)
	storagetest.RunBus(t, h)
}

func randomHex() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
