package postgres_test

import (
	"context"
	"database/sql"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/internal/testwait"
	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/postgres"
	"github.com/go-cap/cap/storage/storagetest"
	memtr "github.com/go-cap/cap/transport/memory"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// busPool returns a pool of its own for a bus test, so the bus's workers
// and the test's publishers do not starve the other tests.
func busPool(t *testing.T, conns int32) *pgxpool.Pool {
	t.Helper()
	connect(t) // skips or fails when the server is unreachable
	cfg, err := pgxpool.ParseConfig(dsn())
	require.NoError(t, err)
	cfg.MaxConns = conns
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// TestBus runs the shared bus suite on PostgreSQL, on both constructors:
// 5,000 messages from 16 writers in business transactions (one in ten
// rolled back), the inbox, three instances on one database with an abrupt
// stop, and plain commits found through NOTIFY.
func TestBus(t *testing.T) {
	t.Run("pgx", func(t *testing.T) {
		pool := busPool(t, 24)
		newStore := func(schema string) (storage.Storage[pgx.Tx], error) {
			return postgres.New(pool, postgres.Options{Schema: schema})
		}
		exec := func(ctx context.Context, tx pgx.Tx, q string, args ...any) error {
			_, err := tx.Exec(ctx, q, args...)
			return err
		}
		query := func(ctx context.Context, q string, dest ...any) error { return pool.QueryRow(ctx, q).Scan(dest...) }
		h := busHarness(newStore, exec, query)
		h.Begin = func(ctx context.Context) (pgx.Tx, error) { return pool.Begin(ctx) }
		h.Commit = func(ctx context.Context, tx pgx.Tx) error { return tx.Commit(ctx) }
		h.Rollback = func(ctx context.Context, tx pgx.Tx) error { return tx.Rollback(ctx) }
		storagetest.RunBus(t, h)
	})
	t.Run("sql", func(t *testing.T) {
		connect(t)
		db, err := sql.Open("pgx", dsn())
		require.NoError(t, err)
		db.SetMaxOpenConns(24)
		t.Cleanup(func() { _ = db.Close() })
		newStore := func(schema string) (storage.Storage[*sql.Tx], error) {
			return postgres.NewSQL(db, postgres.Options{Schema: schema})
		}
		exec := func(ctx context.Context, tx *sql.Tx, q string, args ...any) error {
			_, err := tx.ExecContext(ctx, q, args...)
			return err
		}
		query := func(ctx context.Context, q string, dest ...any) error {
			return db.QueryRowContext(ctx, q).Scan(dest...)
		}
		h := busHarness(newStore, exec, query)
		h.Begin, h.Commit, h.Rollback = storagetest.SQLTransactions(db)
		storagetest.RunBus(t, h)
	})
}

// busHarness returns the suite's harness but for its transactions: the
// storages of a schema of the test's own, and its business tables.
func busHarness[TTx any](newStore func(schema string) (storage.Storage[TTx], error),
	exec func(ctx context.Context, tx TTx, q string, args ...any) error,
	query func(ctx context.Context, q string, dest ...any) error) storagetest.BusHarness[TTx] {
	return storagetest.BusHarness[TTx]{
		New: func(t *testing.T) (storage.Storage[TTx], func(*testing.T) storage.Storage[TTx]) {
			schema := newSchema(t)
			another := func(t *testing.T) storage.Storage[TTx] {
				s, err := newStore(schema)
				require.NoError(t, err)
				return s
			}
			s := another(t)
			require.NoError(t, s.(interface{ Migrate(context.Context) error }).Migrate(context.Background()))
			return s, another
		},
		Orders: func(t *testing.T) (func(context.Context, TTx, int) error, func(context.Context) (int, error)) {
			table := businessTable(t, "orders", "n int PRIMARY KEY")
			insert := func(ctx context.Context, tx TTx, n int) error {
				return exec(ctx, tx, `INSERT INTO `+table+` (n) VALUES ($1)`, n)
			}
			count := func(ctx context.Context) (n int, err error) {
				return n, query(ctx, `SELECT count(*) FROM `+table, &n)
			}
			return insert, count
		},
		Ledger: func(t *testing.T) (func(context.Context, TTx, string, int) error, func(context.Context) (int, int, error)) {
			table := businessTable(t, "ledger", "msg text NOT NULL, amount int NOT NULL")
			add := func(ctx context.Context, tx TTx, msg string, amount int) error {
				return exec(ctx, tx, `INSERT INTO `+table+` (msg, amount) VALUES ($1, $2)`, msg, amount)
			}
			sum := func(ctx context.Context) (rows, total int, err error) {
				return rows, total, query(ctx, `SELECT count(*), COALESCE(sum(amount), 0) FROM `+table, &rows, &total)
			}
			return add, sum
		},
		// Plain commits are found through NOTIFY.
		PollInterval: 500 * time.Millisecond,
	}
}

// businessTable creates a table with the columns given in a schema of the
// test's own and returns its quoted name.
func businessTable(t *testing.T, name, columns string) string {
	t.Helper()
	schema := `"` + newSchema(t) + `"`
	psql(t, `CREATE SCHEMA `+schema)
	psql(t, `CREATE TABLE `+schema+`.`+name+` (`+columns+`)`)
	return schema + "." + name
}

// TestBusDisableNotify: with DisableNotify the bus starts and finds plainly
// committed messages by polling.
func TestBusDisableNotify(t *testing.T) {
	ctx := context.Background()
	pool := busPool(t, 8)
	store, err := postgres.New(pool, postgres.Options{Schema: newSchema(t), DisableNotify: true})
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
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, bus.PublishTx(ctx, tx, "polled", "one"))
	require.NoError(t, tx.Commit(ctx))
	select {
	case p := <-got:
		require.Equal(t, "one", p)
	case <-time.After(5 * time.Second):
		t.Fatal("a plainly committed message was not found by polling within 5 s")
	}
}

// eventually polls cond until it holds or d has passed.
func eventually(t *testing.T, d time.Duration, cond func() bool, msg string) {
	t.Helper()
	testwait.Until(t, d, cond, "%s", msg)
}
