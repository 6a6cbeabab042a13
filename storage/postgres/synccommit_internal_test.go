package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage"
)

// TestBookkeepingSetsAsyncCommit: each bookkeeping statement, when it
// changes rows, turns synchronous_commit off for its own transaction (the
// FROM item is evaluated, not planned away), and leaves it on with
// Options.SyncCommit.
func TestBookkeepingSetsAsyncCommit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, syncCommit := range []bool{false, true} {
		q := newQueries(newSchemaName(), syncCommit)
		conn := connectSchema(t, q)
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
	}
}
