package postgres

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage"
)

// TestExplainPlans fills both tables with a production-like mix of rows
// (CAP_TEST_EXPLAIN_ROWS per table, 100,000 by default; the figures in the
// package documentation come from 1,000,000) and checks that claims, the
// collector's deletes and the dashboard's status pages read through an index
// rather than the whole table, with the parameters bound (custom plan) and
// without (the generic plan a prepared statement may switch to). Run with -v
// to print the plans.
func TestExplainPlans(t *testing.T) {
	if testing.Short() {
		t.Skip("loads a large table")
	}
	t.Parallel()
	rows := 100_000
	if s := os.Getenv("CAP_TEST_EXPLAIN_ROWS"); s != "" {
		n, err := strconv.Atoi(s)
		require.NoError(t, err)
		rows = n
	}
	ctx := context.Background()
	q := newQueries(newSchemaName(), false)
	conn := connectSchema(t, q)
	for _, tbl := range []storage.Table{storage.Published, storage.Received} {
		tq := q.tables[tbl]
		// 97% Succeeded (1% of them expired), 1% Failed for good, 1% Failed
		// waiting for a retry, 0.5% due now, 0.5% Delayed; two versions.
		start := time.Now()
		group, msgID, groupVal, msgIDVal := "", "", "", ""
		if tbl == storage.Received {
			group, msgID = `"Group", "MessageId", `, ``
			groupVal, msgIDVal = `'g' || (i % 4), 'm' || i, `, ``
		}
		_, err := conn.Exec(ctx, `INSERT INTO `+tq.name+` ("Id", "Version", "Name", `+group+msgID+`"Content", "Retries",
				"Added", "ExpiresAt", "StatusName", "NextAttemptAt")
			SELECT i, CASE WHEN i % 10 = 0 THEN 'v2' ELSE 'v1' END, 'topic.' || (i % 50), `+groupVal+msgIDVal+`
				'{"Headers":{"cap-msg-id":"' || i || '"},"Value":{"n":' || i || '}}', 0,
				n - interval '1 day' + i * interval '1 millisecond',
				CASE WHEN i % 200 < 194 THEN n + interval '1 hour' WHEN i % 200 < 196 THEN n - interval '1 minute'
					WHEN i % 200 < 198 THEN n + interval '15 days' WHEN i % 200 = 199 THEN n + interval '1 minute' END,
				CASE WHEN i % 200 < 196 THEN 'Succeeded' WHEN i % 200 < 198 THEN 'Failed'
					WHEN i % 200 = 198 THEN 'Scheduled' ELSE 'Delayed' END,
				CASE WHEN i % 200 < 196 THEN NULL WHEN i % 200 = 196 THEN NULL WHEN i % 200 = 197 THEN n + interval '1 hour'
					WHEN i % 200 = 198 THEN n - interval '1 second' ELSE n + interval '1 minute' END
			FROM generate_series(1, $1::int) AS i, (SELECT statement_timestamp() AT TIME ZONE 'UTC' AS n) AS t`, rows)
		require.NoError(t, err)
		_, err = conn.Exec(ctx, `VACUUM ANALYZE `+tq.name)
		require.NoError(t, err)
		t.Logf("%s: %d rows loaded in %s", tbl, rows, time.Since(start).Round(time.Millisecond))
	}

	type check struct {
		name  string
		query string
		args  []any
	}
	var checks []check
	for _, tbl := range []storage.Table{storage.Published, storage.Received} {
		tq := q.tables[tbl]
		claimArgs := func(limit int) []any {
			args := []any{"v1", limit, int64(time.Minute / time.Microsecond)}
			if tbl == storage.Received {
				args = append(args, []string{"g1", "g2"}) // the claim of an instance with two groups
			}
			return args
		}
		checks = append(checks,
			check{tbl.String() + " claim", tq.claim, claimArgs(100)},
			check{tbl.String() + " claim 1000", tq.claim, claimArgs(1000)},
			check{tbl.String() + " delete expired", tq.deleteExp, []any{1000}},
			check{tbl.String() + " list failed", tq.list[filterStatus], []any{"Failed", 20, 0}},
			check{tbl.String() + " count failed", tq.count[filterStatus], []any{"Failed"}},
			check{tbl.String() + " list scheduled", tq.listScheduled[0], []any{20, 0}},
			check{tbl.String() + " count scheduled", tq.countScheduled[0], nil},
			check{tbl.String() + " list scheduled by name", tq.listScheduled[filterName], []any{"%topic.1%", 20, 0}},
		)
	}
	checks = append(checks, check{"received exists", q.exists, []any{[]string{"m7", "m8", "nope"}, []string{"g3", "g0", "g1"}}})
	for i, c := range checks {
		// A prepared statement may switch to a generic plan, made without
		// the parameters' values; both kinds must use an index.
		name := "explain_" + strconv.Itoa(i)
		_, err := conn.Exec(ctx, `PREPARE `+name+` AS `+c.query)
		require.NoError(t, err)
		lits := make([]string, len(c.args))
		for j, a := range c.args {
			switch v := a.(type) {
			case string:
				lits[j] = "'" + v + "'"
			case int:
				lits[j] = strconv.Itoa(v)
			case int64:
				lits[j] = strconv.FormatInt(v, 10)
			case []string:
				lits[j] = "ARRAY['" + strings.Join(v, "','") + "']"
			}
		}
		for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
			// Statements that write run in a transaction rolled back after.
			tx, err := conn.Begin(ctx)
			require.NoError(t, err)
			_, err = tx.Exec(ctx, `SET LOCAL plan_cache_mode = `+mode)
			require.NoError(t, err)
			execute := name
			if len(lits) > 0 {
				execute += `(` + strings.Join(lits, ", ") + `)`
			}
			plan := explainPlan(t, tx, `EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) EXECUTE `+execute)
			require.NoError(t, tx.Rollback(ctx))
			t.Logf("%s (%s):\n%s", c.name, mode, plan)
			require.NotContains(t, plan, "Seq Scan", "%s reads the whole table", c.name)
		}
	}
}

// TestExistsPlanOnFreshTable: the received look-up's generic plan, made
// on an empty table never analyzed (as a new deployment's first prepared
// statements are), probes the unique index rather than reading the whole
// table; its custom plan too, and both once the table holds rows that
// were not analyzed yet.
func TestExistsPlanOnFreshTable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q := newQueries(newSchemaName(), false)
	conn := connectSchema(t, q)
	_, err := conn.Exec(ctx, `PREPARE fresh_exists AS `+q.exists)
	require.NoError(t, err)
	explain := func(mode string) string {
		tx, err := conn.Begin(ctx)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback(ctx) }()
		_, err = tx.Exec(ctx, `SET LOCAL plan_cache_mode = `+mode)
		require.NoError(t, err)
		return explainPlan(t, tx, `EXPLAIN (COSTS OFF) EXECUTE fresh_exists(ARRAY['m1','m2','m3'], ARRAY['g','g','g'])`)
	}
	check := func(when string) {
		for _, mode := range []string{"force_generic_plan", "force_custom_plan"} {
			plan := explain(mode)
			t.Logf("%s, %s:\n%s", when, mode, plan)
			require.NotContains(t, plan, "Seq Scan", "%s, %s: the look-up reads the whole table", when, mode)
			require.Contains(t, plan, `"MessageId"`, "%s, %s: the look-up does not use the (MessageId, Group) index", when, mode)
		}
	}
	check("empty")
	_, err = conn.Exec(ctx, `INSERT INTO `+q.tables[storage.Received].name+` ("Id", "Version", "Name", "Group", "MessageId",
		"Content", "Retries", "Added", "StatusName")
		SELECT i, 'v1', 't', 'g', 'm' || i, '{}', 0, now(), 'Succeeded' FROM generate_series(1, 5000) AS i`)
	require.NoError(t, err)
	check("5,000 rows, not analyzed")
}

// explainPlan runs an EXPLAIN in tx and returns its lines.
func explainPlan(t *testing.T, tx pgx.Tx, explain string) string {
	t.Helper()
	rs, err := tx.Query(context.Background(), explain, pgx.QueryExecModeSimpleProtocol)
	require.NoError(t, err)
	var plan strings.Builder
	for rs.Next() {
		var line string
		require.NoError(t, rs.Scan(&line))
		plan.WriteString(line + "\n")
	}
	require.NoError(t, rs.Err())
	return plan.String()
}
