package mysql

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage"
)

// testDB connects to the test server (skipping when run by hand without
// one, failing in CI) and creates migrated tables of a fresh prefix,
// dropped when the test ends.
func testDB(t *testing.T) (*sql.DB, *Store) {
	t.Helper()
	dsn := os.Getenv("CAP_TEST_MYSQL")
	if dsn == "" {
		dsn = "root@tcp(127.0.0.1:3306)/test?parseTime=true&interpolateParams=true"
	}
	db, err := sql.Open("mysql", dsn)
	require.NoError(t, err)
	db.SetMaxOpenConns(4)
	if err := db.PingContext(context.Background()); err != nil {
		_ = db.Close()
		if os.Getenv("CI") == "true" {
			t.Fatalf("MySQL at %q is unreachable: %v", dsn, err)
		}
		t.Skipf("MySQL at %q is unreachable: %v", dsn, err)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	prefix := "cap_test_" + hex.EncodeToString(b)
	t.Cleanup(func() {
		_, err := db.Exec("DROP TABLE IF EXISTS `" + prefix + ".published`, `" + prefix + ".received`")
		require.NoError(t, err)
		_ = db.Close()
	})
	s, err := New(db, Options{TableNamePrefix: prefix})
	require.NoError(t, err)
	require.NoError(t, s.Migrate(context.Background()))
	return db, s
}

// TestExplainPlans fills both tables with a production-like mix of rows
// (CAP_TEST_EXPLAIN_ROWS per table, 20,000 by default; run it with
// 1,000,000 for the figures of a large table) and checks that claims, the
// collector's deletes and the dashboard's status pages read through an
// index rather than the whole table. Run with -v to print the plans.
func TestExplainPlans(t *testing.T) {
	if testing.Short() {
		t.Skip("loads a table")
	}
	t.Parallel()
	rows := 20_000
	if s := os.Getenv("CAP_TEST_EXPLAIN_ROWS"); s != "" {
		n, err := strconv.Atoi(s)
		require.NoError(t, err)
		rows = n
	}
	ctx := context.Background()
	db, s := testDB(t)
	for _, tbl := range []storage.Table{storage.Published, storage.Received} {
		tq := s.q.tables[tbl]
		// 97% Succeeded (1% of them expired), 1% Failed for good, 1% Failed
		// waiting for a retry, 0.5% due now, 0.5% Delayed; two versions.
		start := time.Now()
		const batch = 1000
		for from := 0; from < rows; from += batch {
			var vals []string
			for i := from; i < min(from+batch, rows); i++ {
				version := "v1"
				if i%10 == 0 {
					version = "v2"
				}
				exp, status, next := "NULL", "Scheduled", "NULL"
				switch m := i % 200; {
				case m < 194:
					exp, status = "n + INTERVAL 1 HOUR", "Succeeded"
				case m < 196:
					exp, status = "n - INTERVAL 1 MINUTE", "Succeeded"
				case m == 196:
					exp, status = "n + INTERVAL 15 DAY", "Failed"
				case m == 197:
					exp, status, next = "n + INTERVAL 15 DAY", "Failed", "n + INTERVAL 1 HOUR"
				case m == 198:
					next = "n - INTERVAL 1 SECOND"
				default:
					exp, status, next = "n + INTERVAL 1 MINUTE", "Delayed", "n + INTERVAL 1 MINUTE"
				}
				group := ""
				if tbl == storage.Received {
					group = fmt.Sprintf("'g%d', 'm%d', ", i%4, i)
				}
				vals = append(vals, fmt.Sprintf(`SELECT %d, '%s', 'topic.%d', %s'{"Headers":{"cap-msg-id":"%d"},"Value":{"n":%d}}', 0,
					n - INTERVAL 1 DAY + INTERVAL %d MICROSECOND, %s, '%s', %s FROM (SELECT UTC_TIMESTAMP(6) AS n) AS t`,
					i+1, version, i%50, group, i, i, i*1000, exp, status, next))
			}
			cols := "`Id`, `Version`, `Name`, "
			if tbl == storage.Received {
				cols += "`Group`, `MessageId`, "
			}
			cols += "`Content`, `Retries`, `Added`, `ExpiresAt`, `StatusName`, `NextAttemptAt`"
			_, err := db.ExecContext(ctx, `INSERT INTO `+tq.name+` (`+cols+`) `+strings.Join(vals, " UNION ALL "))
			require.NoError(t, err)
		}
		_, err := db.ExecContext(ctx, `ANALYZE TABLE `+tq.name)
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
		tq := &s.q.tables[tbl]
		claim := func(limit int) check {
			args := []any{int64(time.Minute / time.Microsecond), "v1"}
			groups := 0
			if tbl == storage.Received {
				args, groups = append(args, "g1", "g2"), 2 // an instance with two groups
			}
			return check{fmt.Sprintf("%s claim %d", tbl, limit), tq.claim(groups), append(args, limit)}
		}
		checks = append(checks,
			claim(100), claim(1000),
			check{tbl.String() + " delete expired", tq.deleteX, []any{1000}},
			check{tbl.String() + " list failed", tq.list[filterStatus], []any{"Failed", 20, 0}},
			check{tbl.String() + " count failed", tq.count[filterStatus], []any{"Failed"}},
			check{tbl.String() + " list scheduled", tq.list[filterStatus], []any{"Scheduled", 20, 0}},
			check{tbl.String() + " count scheduled", tq.count[filterStatus], []any{"Scheduled"}},
			check{tbl.String() + " list succeeded", tq.list[filterStatus], []any{"Succeeded", 20, 0}},
			check{tbl.String() + " list scheduled by name", tq.list[filterStatus|filterName], []any{"Scheduled", "%topic.1%", 20, 0}},
		)
	}
	checks = append(checks, check{"received exists", s.q.tables[storage.Received].exists(3),
		[]any{"m1", "g1", "m2", "g2", "m-missing", "g1"}})
	for _, c := range checks {
		rs, err := db.QueryContext(ctx, `EXPLAIN `+c.query, c.args...)
		require.NoError(t, err, c.name)
		cols, err := rs.Columns()
		require.NoError(t, err)
		var plan strings.Builder
		for rs.Next() {
			vals := make([]sql.NullString, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			require.NoError(t, rs.Scan(ptrs...))
			row := map[string]string{}
			for i, col := range cols {
				row[strings.ToLower(col)] = vals[i].String
			}
			fmt.Fprintf(&plan, "table=%s type=%s key=%s rows=%s extra=%s\n", row["table"], row["type"], row["key"],
				row["rows"], row["extra"])
			if strings.HasPrefix(row["table"], "<derived") || row["table"] == "" {
				continue // the materialised derived table
			}
			require.NotEqual(t, "ALL", row["type"], "%s reads the whole table:\n%s", c.name, plan.String())
			require.NotEmpty(t, row["key"], "%s uses no index:\n%s", c.name, plan.String())
			require.NotContains(t, row["extra"], "filesort", "%s sorts the rows it read:\n%s", c.name, plan.String())
		}
		require.NoError(t, rs.Err())
		_ = rs.Close()
		t.Logf("%s:\n%s", c.name, plan.String())
	}
}
