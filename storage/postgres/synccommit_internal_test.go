package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage"
)

// TestBookkeepingSetsAsyncCommit: each bookkeeping statement, when it
// changes rows, turns synchronous_commit off for its own transaction (the
// FROM item is evaluated, not planned away), and leaves it on with
// Options.SyncCommit.
func TestBookkeepingSetsAsyncCommit(t *testing.T) {
	t.Parallel()
	dsn := os.Getenv("CAP_TEST_POSTGRES")
	if dsn == "" {
		dsn = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL at %q is unreachable: %v", dsn, err)
		}
		t.Skipf("PostgreSQL at %q is unreachable: %v", dsn, err)
	}
	defer conn.Close(ctx)
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema := "cap_test_" + hex.EncodeToString(b)
	defer func() { _, _ = conn.Exec(context.Background(), `DROP SCHEMA IF EXISTS "`+schema+`" CASCADE`) }()

	for _, syncCommit := range []bool{false, true} {
		q := newQueries(schema, syncCommit)
		_, err = conn.Exec(ctx, q.createSchema)
		require.NoError(t, err)
		for _, tbl := range []storage.Table{storage.Published, storage.Received} {
			tq := q.tables[tbl]
			_, err = conn.Exec(ctx, tq.createTable)
			require.NoError(t, err)
			for _, stmt := range tq.migrate {
				_, err = conn.Exec(ctx, stmt)
				require.NoError(t, err)
			}
		}
		tq := q.tables[storage.Published]
		want := map[bool]string{false: "off", true: "on"}[syncCommit]
		for _, c := range []struct {
			name  string
			query string
			args  []any
		}{
			{"claim", tq.claim, []any{"v1", 10, time.Minute.Microseconds()}},
			{"reschedule", tq.reschedule, []any{[]int64{1}, time.Minute.Microseconds()}},
			{"outcomes", tq.outcomes, outcomeArgs([]storage.Outcome{{ID: 1, Status: storage.StatusSucceeded}})},
			{"delete expired", tq.deleteExp, []any{10}},
		} {
			tx, err := conn.Begin(ctx)
			require.NoError(t, err)
			// A due row and an expired one, so that every statement changes a row.
			_, err = tx.Exec(ctx, `INSERT INTO `+tq.name+` ("Id", "Version", "Name", "Content", "Retries", "Added",
					"ExpiresAt", "StatusName", "NextAttemptAt")
				VALUES (1, 'v1', 't', '{}', 0, now(), NULL, 'Scheduled', now() - interval '1 minute'),
					(2, 'v1', 't', '{}', 0, now(), now() - interval '1 minute', 'Succeeded', NULL)`)
			require.NoError(t, err)
			tag, err := tx.Exec(ctx, c.query, c.args...)
			require.NoError(t, err, c.name)
			require.EqualValues(t, 1, tag.RowsAffected(), c.name)
			var got string
			require.NoError(t, tx.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&got))
			require.Equal(t, want, got, "%s (SyncCommit %v)", c.name, syncCommit)
			require.NoError(t, tx.Rollback(ctx))
		}
		_, err = conn.Exec(ctx, `DROP SCHEMA "`+schema+`" CASCADE`)
		require.NoError(t, err)
	}
}
