package sqlserver

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage"
)

// TestPlansUseIndexes fills a table with CAP_TEST_SQLSERVER_PLAN_ROWS rows
// (20,000 by default; 1,000,000 to check the figures of a large table),
// most of them Succeeded and not yet expired, as in a running system, and
// checks in the estimated plans (SHOWPLAN_XML) that the claims, the
// collector's delete, the dashboard's status page, counts and hourly
// history, and the de-duplication of deliveries and its look-up read the
// indexes made for them. It needs CAP_TEST_SQLSERVER; without it it is
// skipped.
func TestPlansUseIndexes(t *testing.T) {
	dsn := os.Getenv("CAP_TEST_SQLSERVER")
	if dsn == "" {
		t.Skip("no SQL Server: set CAP_TEST_SQLSERVER to a go-mssqldb DSN, e.g. " +
			"'sqlserver://sa:Secret_123@127.0.0.1:1433?database=test', to run this test against it")
	}
	rows := 20000
	if v := os.Getenv("CAP_TEST_SQLSERVER_PLAN_ROWS"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(t, err)
		rows = n
	}
	ctx := context.Background()
	db, err := sql.Open("sqlserver", dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema := "cap_test_" + hex.EncodeToString(b)
	s, err := New(db, Options{Schema: schema})
	require.NoError(t, err)
	t.Cleanup(func() {
		for _, name := range []string{s.q.table(storage.Published).name, s.q.table(storage.Received).name, s.q.lockTable()} {
			_, err := db.ExecContext(context.Background(), `DROP TABLE IF EXISTS `+name)
			require.NoError(t, err)
		}
		_, err := db.ExecContext(context.Background(), `DROP SCHEMA IF EXISTS `+quoteIdent(schema))
		require.NoError(t, err)
	})
	require.NoError(t, s.Migrate(ctx))

	for _, tb := range []*table{s.q.table(storage.Published), s.q.table(storage.Received)} {
		group := ""
		groupVal := ""
		if tb.t == storage.Received {
			group, groupVal = "[Group], [MessageId], ", "N'g.v1', CAST(n.i AS nvarchar(20)), "
		}
		// Succeeded rows expiring tomorrow, then a few of each other kind.
		_, err := db.ExecContext(ctx, `WITH n AS (SELECT TOP (@p1) ROW_NUMBER() OVER (ORDER BY (SELECT NULL)) AS i
	FROM sys.all_columns AS a CROSS JOIN sys.all_columns AS b)
INSERT INTO `+tb.name+` ([Id], [Version], [Name], `+group+`[Content], [Retries], [Added], [ExpiresAt], [StatusName], [NextAttemptAt])
SELECT n.i, N'v1', N'order.created', `+groupVal+`N'{"Headers":{},"Value":1}', 0, SYSUTCDATETIME(),
	CASE WHEN n.i % 1000 = 1 THEN DATEADD(day, -1, SYSUTCDATETIME()) ELSE DATEADD(day, 1, SYSUTCDATETIME()) END,
	CASE WHEN n.i % 1000 = 2 THEN N'Failed' WHEN n.i % 1000 = 3 THEN N'Scheduled' ELSE N'Succeeded' END,
	CASE WHEN n.i % 1000 = 3 THEN SYSUTCDATETIME() END
FROM n`, int64(rows))
		require.NoError(t, err)
		_, err = db.ExecContext(ctx, `UPDATE STATISTICS `+tb.name+` WITH FULLSCAN`)
		require.NoError(t, err)
	}

	conn, err := db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.ExecContext(ctx, `SET SHOWPLAN_XML ON`)
	require.NoError(t, err)
	defer func() { _, _ = conn.ExecContext(context.Background(), `SET SHOWPLAN_XML OFF`) }()
	plan := func(st stmt) string {
		t.Helper()
		rs, err := conn.QueryContext(ctx, st.query, st.args...)
		require.NoError(t, err, st.query)
		defer rs.Close()
		var all strings.Builder
		for {
			for rs.Next() {
				var p string
				require.NoError(t, rs.Scan(&p))
				all.WriteString(p)
			}
			if !rs.NextResultSet() {
				break
			}
		}
		require.NoError(t, rs.Err())
		return all.String()
	}
	uses := func(st stmt, tb *table, suffix string) {
		t.Helper()
		p := plan(st)
		require.Contains(t, p, `Index="`+quoteIdent(tb.indexName(suffix))+`"`, "plan of\n%s\n%s", st.query, p)
	}
	for _, tt := range []storage.Table{storage.Published, storage.Received} {
		tb := s.q.table(tt)
		uses(s.q.claim(tt, storage.ClaimRequest{Version: "v1", Limit: 100, Lease: time.Minute}), tb, "Version_NextAttemptAt")
		uses(s.q.deleteExpired(tt, 1000), tb, "ExpiresAt_StatusName")
		page, count := s.q.list(tt, storage.ListQuery{Status: storage.StatusFailed})
		uses(page, tb, "StatusName_Added")
		uses(count, tb, "StatusName_Added")
		uses(s.q.counts(tt), tb, "StatusName_Added")
		uses(s.q.countByHour(tt, storage.StatusFailed, time.Now().Add(-24*time.Hour)), tb, "StatusName_Added")
	}
	rec := s.q.table(storage.Received)
	uses(s.q.claim(storage.Received, storage.ClaimRequest{Version: "v1", Limit: 100, Lease: time.Minute,
		Groups: []string{"g.v1"}}), rec, "Version_NextAttemptAt")
	uses(s.q.insertReceived([]*storage.Record{{ID: int64(rows + 1), Version: "v1", Name: "n", Group: "g.v1",
		MessageID: "42"}})[0], rec, "MessageId_Group")
	uses(s.q.receivedExists([]storage.ReceivedKey{{MessageID: "42", Group: "g.v1"}, {MessageID: "43", Group: "g.v1"}})[0],
		rec, "MessageId_Group")
}
