package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage/sqlite"
)

// TestWritersWaitInProcess: while a write transaction is open, another
// transaction and a statement run with Exec wait in the process for it
// (and give up when their context ends, not with SQLITE_BUSY); they run
// once it ends, whether by commit, rollback or a cancelled context.
func TestWritersWaitInProcess(t *testing.T) {
	t.Parallel()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "gate.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	ctx := t.Context()
	_, err = db.ExecContext(ctx, `CREATE TABLE t (n INTEGER)`)
	require.NoError(t, err)

	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	_, err = tx.ExecContext(ctx, `INSERT INTO t VALUES (1)`)
	require.NoError(t, err)

	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err = db.ExecContext(short, `INSERT INTO t VALUES (2)`)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded, "Exec waits for the open transaction")
	short, cancel = context.WithTimeout(ctx, 50*time.Millisecond)
	_, err = db.BeginTx(short, nil)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded, "Begin waits for the open transaction")

	// A waiter goes on as soon as the transaction commits.
	done := make(chan error, 1)
	go func() {
		_, err := db.ExecContext(ctx, `INSERT INTO t VALUES (3)`)
		done <- err
	}()
	require.NoError(t, tx.Commit())
	require.NoError(t, <-done)

	// A transaction ended by its context releases the lock too.
	txCtx, cancelTx := context.WithCancel(ctx)
	tx, err = db.BeginTx(txCtx, nil)
	require.NoError(t, err)
	cancelTx()
	require.Error(t, tx.Commit(), "the cancelled transaction was rolled back")
	tx, err = db.BeginTx(ctx, nil)
	require.NoError(t, err)
	require.NoError(t, tx.Rollback())

	var n int
	require.NoError(t, db.QueryRowContext(ctx, `SELECT count(*) FROM t`).Scan(&n))
	require.Equal(t, 2, n, "rows 1 and 3")
}
