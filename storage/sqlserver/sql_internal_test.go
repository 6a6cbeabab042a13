package sqlserver

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	mssql "github.com/microsoft/go-mssqldb"
	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage"
)

// No SQL Server checks these statements where this package is developed:
// the tests pin their text and arguments, and checkStmt checks what can be
// checked without a server.

var paramRE = regexp.MustCompile(`@p([0-9]+)\b`)

// checkStmt fails the test when stmtProblem finds one.
func checkStmt(t *testing.T, st stmt) {
	t.Helper()
	if p := stmtProblem(st); p != "" {
		t.Fatal(p)
	}
}

func checkBalanced(t *testing.T, query string) {
	t.Helper()
	if p := balanceProblem(query); p != "" {
		t.Fatal(p)
	}
}

// stmtProblem checks that every argument has its @pN in the text and no
// @pN has no argument, that the statement stays within SQL Server's
// parameter limit, and that quotes, brackets and parentheses are balanced
// outside string literals.
func stmtProblem(st stmt) string {
	if len(st.args) > maxParams {
		return fmt.Sprintf("%d parameters, more than %d", len(st.args), maxParams)
	}
	used := map[int]bool{}
	for _, m := range paramRE.FindAllStringSubmatch(st.query, -1) {
		n, _ := strconv.Atoi(m[1])
		used[n] = true
	}
	for n := range used {
		if n < 1 || n > len(st.args) {
			return fmt.Sprintf("@p%d without an argument (%d args) in\n%s", n, len(st.args), st.query)
		}
	}
	for n := 1; n <= len(st.args); n++ {
		if !used[n] {
			return fmt.Sprintf("argument %d has no @p%d in\n%s", n, n, st.query)
		}
	}
	return balanceProblem(st.query)
}

func balanceProblem(query string) string {
	var (
		parens, brackets int
		inString         bool
	)
	for i := 0; i < len(query); i++ {
		c := query[i]
		if inString {
			if c == '\'' {
				if i+1 < len(query) && query[i+1] == '\'' {
					i++
					continue
				}
				inString = false
			}
			continue
		}
		switch c {
		case '\'':
			inString = true
		case '(':
			parens++
		case ')':
			parens--
		case '[':
			brackets++
		case ']':
			brackets--
		}
		if parens < 0 || brackets < 0 || brackets > 1 {
			return fmt.Sprintf("unbalanced ) or ], or nested [, at %d in\n%s", i, query)
		}
	}
	switch {
	case inString:
		return "unterminated literal in\n" + query
	case parens != 0:
		return "unbalanced ( in\n" + query
	case brackets != 0:
		return "unbalanced [ in\n" + query
	}
	return ""
}

// TestStmtChecker: the checker above finds the mistakes it looks for.
func TestStmtChecker(t *testing.T) {
	require.Empty(t, stmtProblem(stmt{`SELECT @p1, N'it''s (', [a]`, []any{1}}))
	for _, bad := range []stmt{
		{`SELECT @p1, @p2`, []any{1}},          // @p2 has no argument
		{`SELECT @p1, @p3`, []any{1, 2, 3}},    // argument 2 unused
		{`SELECT @p1`, nil},                    // no argument
		{`SELECT (@p1`, []any{1}},              // (
		{`SELECT @p1)`, []any{1}},              // )
		{`SELECT [a, @p1`, []any{1}},           // [
		{`SELECT [[a]], @p1`, []any{1}},        // nested [
		{`SELECT N'x, @p1`, []any{1}},          // literal
		{`SELECT 1`, make([]any, maxParams+1)}, // too many
	} {
		require.NotEmpty(t, stmtProblem(bad), bad.query)
	}
}

func us(d time.Duration) int64 { return d.Microseconds() }

func TestAddMicros(t *testing.T) {
	require.Equal(t, `DATEADD(microsecond, CAST(@p3 % 1000000 AS int), DATEADD(second, CAST(@p3 / 1000000 AS int), SYSUTCDATETIME()))`,
		addMicros("@p3", nowUTC))
	require.Equal(t, int64(90_000_000), micros(90*time.Second))
	require.Equal(t, int64(-1_500), micros(-1500*time.Microsecond))
	// DATEADD takes an int: longer durations are capped at 2^31-1 seconds.
	require.Equal(t, maxMicros, micros(200*365*24*time.Hour))
	require.Equal(t, -maxMicros, micros(-200*365*24*time.Hour))
	require.LessOrEqual(t, maxMicros/1_000_000, int64(1<<31-1))
}

func TestIdentifierQuoting(t *testing.T) {
	require.Equal(t, `[cap]`, quoteIdent("cap"))
	require.Equal(t, `[a]]b]`, quoteIdent("a]b"))
	require.Equal(t, `N'it''s'`, literal("it's"))

	q := newQueries("my_schema")
	pub, rec := q.table(storage.Published), q.table(storage.Received)
	require.Equal(t, `[my_schema].[Published]`, pub.name)
	require.Equal(t, `[my_schema].[Received]`, rec.name)
	require.Equal(t, `N'[my_schema].[Published]'`, pub.object)
	require.Equal(t, "IX_my_schema.Received_MessageId_Group", rec.indexName("MessageId_Group"))
	require.Contains(t, pub.createTable(), `CONSTRAINT [PK_my_schema.Published] PRIMARY KEY CLUSTERED ([Id] ASC)`)
	require.Equal(t, `IF SCHEMA_ID(N'my_schema') IS NULL EXEC(N'CREATE SCHEMA [my_schema]')`, q.createSchema())
	for _, tb := range []*table{pub, rec} {
		for _, s := range append([]string{tb.createTable(), tb.backfill(), tb.tableExists(), tb.columnExists("X")}, tb.migrate()...) {
			checkBalanced(t, s)
			require.NotContains(t, s, "[cap]", "the schema comes from the options")
		}
	}
}

func TestInsertPublishedStatement(t *testing.T) {
	q := newQueries("cap")
	recs := []*storage.Record{
		{ID: 1, Version: "v1", Name: "a", Content: []byte(`{"x":"é"}`), DueIn: time.Minute}, // leased to the inserter
		{ID: 2, Version: "v1", Name: "b", Status: storage.StatusDelayed, DueIn: time.Hour},  // expires when due
		{ID: 3, Version: "v2", Name: "c", Status: storage.StatusFailed, Retries: 50, Terminal: true, ExpiresIn: 15 * 24 * time.Hour},
	}
	stmts := q.insertPublished(recs, true)
	require.Len(t, stmts, 1)
	st := stmts[0]
	checkStmt(t, st)
	want := `INSERT INTO [cap].[Published] ([Id], [Version], [Name], [Content], [Retries], [Added], [ExpiresAt], [StatusName], [NextAttemptAt])
OUTPUT inserted.[Id], inserted.[Added], inserted.[ExpiresAt], inserted.[NextAttemptAt]
SELECT v.id, v.version, v.name, v.content, v.retries, n.t, ` + addMicros("v.expires", "n.t") + `, v.status, ` + addMicros("v.due", "n.t") + `
FROM (VALUES (CAST(@p1 AS bigint), @p2, @p3, CAST(@p4 AS nvarchar(max)), CAST(@p5 AS int), @p6, CAST(@p7 AS bigint), CAST(@p8 AS bigint)),
	(CAST(@p9 AS bigint), @p10, @p11, CAST(@p12 AS nvarchar(max)), CAST(@p13 AS int), @p14, CAST(@p15 AS bigint), CAST(@p16 AS bigint)),
	(CAST(@p17 AS bigint), @p18, @p19, CAST(@p20 AS nvarchar(max)), CAST(@p21 AS int), @p22, CAST(@p23 AS bigint), CAST(@p24 AS bigint))) AS v(id, version, name, content, retries, status, due, expires)
CROSS JOIN (SELECT SYSUTCDATETIME() AS t) AS n`
	require.Equal(t, want, st.query)
	require.Equal(t, []any{
		int64(1), "v1", "a", mssql.NVarCharMax(`{"x":"é"}`), int64(0), "Scheduled", us(time.Minute), nil,
		int64(2), "v1", "b", nil, int64(0), "Delayed", us(time.Hour), us(time.Hour),
		int64(3), "v2", "c", nil, int64(50), "Failed", nil, us(15 * 24 * time.Hour),
	}, st.args)

	// In the caller's transaction nothing is read back.
	tx := q.insertPublished(recs[:1], false)
	require.Len(t, tx, 1)
	checkStmt(t, tx[0])
	require.NotContains(t, tx[0].query, "OUTPUT")
	require.True(t, strings.HasPrefix(tx[0].query, `INSERT INTO [cap].[Published] ([Id], [Version], [Name], [Content], [Retries], [Added], [ExpiresAt], [StatusName], [NextAttemptAt])
SELECT v.id,`), tx[0].query)
	require.Equal(t, []any{int64(1), "v1", "a", mssql.NVarCharMax(`{"x":"é"}`), int64(0), "Scheduled", us(time.Minute), nil}, tx[0].args)
	require.Empty(t, q.insertPublished(nil, true))
}

func TestInsertReceivedStatement(t *testing.T) {
	q := newQueries("cap")
	recs := []*storage.Record{
		{ID: 10, Version: "v1", Name: "order", Group: "g.v1", MessageID: "m1", Content: []byte("{}")},
		{ID: 11, Version: "v1", Name: "bad", Group: "", MessageID: "m2", Status: storage.StatusFailed, Retries: 50,
			Terminal: true, ExpiresIn: time.Hour},
	}
	stmts := q.insertReceived(recs)
	require.Len(t, stmts, 1)
	st := stmts[0]
	checkStmt(t, st)
	want := `INSERT INTO [cap].[Received] ([Id], [Version], [Name], [Group], [MessageId], [Content], [Retries], [Added], [ExpiresAt], [StatusName], [NextAttemptAt])
OUTPUT inserted.[Id], inserted.[Added], inserted.[ExpiresAt], inserted.[NextAttemptAt]
SELECT v.id, v.version, v.name, v.grp, v.msgid, v.content, v.retries, n.t, ` + addMicros("v.expires", "n.t") + `, v.status, ` + addMicros("v.due", "n.t") + `
FROM (VALUES (CAST(@p1 AS bigint), @p2, @p3, @p4, @p5, CAST(@p6 AS nvarchar(max)), CAST(@p7 AS int), @p8, CAST(@p9 AS bigint), CAST(@p10 AS bigint)),
	(CAST(@p11 AS bigint), @p12, @p13, @p14, @p15, CAST(@p16 AS nvarchar(max)), CAST(@p17 AS int), @p18, CAST(@p19 AS bigint), CAST(@p20 AS bigint))) AS v(id, version, name, grp, msgid, content, retries, status, due, expires)
CROSS JOIN (SELECT SYSUTCDATETIME() AS t) AS n
WHERE NOT EXISTS (SELECT 1 FROM [cap].[Received] AS r WITH (UPDLOCK, HOLDLOCK)
	WHERE r.[MessageId] IS NOT NULL AND r.[MessageId] = v.msgid AND r.[Group] = v.grp)`
	require.Equal(t, want, st.query)
	require.Equal(t, []any{
		int64(10), "v1", "order", "g.v1", "m1", mssql.NVarCharMax("{}"), int64(0), "Scheduled", int64(0), nil,
		int64(11), "v1", "bad", "", "m2", nil, int64(50), "Failed", nil, us(time.Hour),
	}, st.args)
}

func TestClaimStatement(t *testing.T) {
	q := newQueries("cap")
	pub := q.claim(storage.Published, storage.ClaimRequest{Version: "v1", Limit: 100, Lease: 2 * time.Minute,
		Groups: []string{"ignored"}})
	checkStmt(t, pub)
	require.Equal(t, `WITH due AS (
	SELECT TOP (@p2) [Id], [Version], [Name], [Content], [Retries], [Added], [ExpiresAt], [StatusName], [NextAttemptAt]
	FROM [cap].[Published] WITH (ROWLOCK, READPAST, UPDLOCK)
	WHERE [Version] = @p1 AND [NextAttemptAt] IS NOT NULL AND [NextAttemptAt] <= SYSUTCDATETIME()
	ORDER BY [NextAttemptAt], [Id])
UPDATE due SET [NextAttemptAt] = `+addMicros("@p3", "SYSUTCDATETIME()")+`
OUTPUT inserted.[Id], inserted.[Version], inserted.[Name], N'', N'', inserted.[Content], inserted.[Retries], inserted.[Added], inserted.[ExpiresAt], inserted.[StatusName], inserted.[NextAttemptAt], deleted.[NextAttemptAt];`,
		pub.query)
	require.Equal(t, []any{"v1", int64(100), us(2 * time.Minute)}, pub.args)

	rec := q.claim(storage.Received, storage.ClaimRequest{Version: "v2", Limit: 7, Lease: time.Second,
		Groups: []string{"billing.v2", "shipping.v2"}})
	checkStmt(t, rec)
	require.Equal(t, `WITH due AS (
	SELECT TOP (@p2) [Id], [Version], [Name], [Group], [MessageId], [Content], [Retries], [Added], [ExpiresAt], [StatusName], [NextAttemptAt]
	FROM [cap].[Received] WITH (ROWLOCK, READPAST, UPDLOCK)
	WHERE [Version] = @p1 AND [NextAttemptAt] IS NOT NULL AND [NextAttemptAt] <= SYSUTCDATETIME() AND [Group] IN (@p4, @p5)
	ORDER BY [NextAttemptAt], [Id])
UPDATE due SET [NextAttemptAt] = `+addMicros("@p3", "SYSUTCDATETIME()")+`
OUTPUT inserted.[Id], inserted.[Version], inserted.[Name], ISNULL(inserted.[Group], N''), ISNULL(inserted.[MessageId], N''), inserted.[Content], inserted.[Retries], inserted.[Added], inserted.[ExpiresAt], inserted.[StatusName], inserted.[NextAttemptAt], deleted.[NextAttemptAt];`,
		rec.query)
	require.Equal(t, []any{"v2", int64(7), us(time.Second), "billing.v2", "shipping.v2"}, rec.args)

	// No groups: every group.
	all := q.claim(storage.Received, storage.ClaimRequest{Version: "v2", Limit: 7, Lease: time.Second})
	checkStmt(t, all)
	require.NotContains(t, all.query, "[Group] IN")
	require.Len(t, all.args, 3)
	// More groups than parameters allow: every group too, never an
	// oversized request.
	many := make([]string, maxGroups+1)
	for i := range many {
		many[i] = "g" + strconv.Itoa(i)
	}
	over := q.claim(storage.Received, storage.ClaimRequest{Version: "v2", Limit: 7, Lease: time.Second, Groups: many})
	checkStmt(t, over)
	require.NotContains(t, over.query, "[Group] IN")
	most := q.claim(storage.Received, storage.ClaimRequest{Version: "v2", Limit: 7, Lease: time.Second, Groups: many[:maxGroups]})
	checkStmt(t, most)
	require.Len(t, most.args, maxParams)
}

func TestOutcomeStatements(t *testing.T) {
	q := newQueries("cap")
	outs := []storage.Outcome{
		{ID: 1, Status: storage.StatusSucceeded, Retries: 0, ExpiresIn: 24 * time.Hour},
		{ID: 2, Status: storage.StatusFailed, Retries: 3, Content: []byte(`{"Headers":{}}`), ExpiresIn: time.Hour,
			ExpiresFromAdded: true, Retry: true, RetryIn: 30 * time.Second},
		{ID: 3, Status: storage.StatusScheduled, Retry: true, Force: true},
	}
	body := `UPDATE r SET
	[StatusName] = o.status,
	[Retries] = o.retries,
	[Content] = COALESCE(o.content, r.[Content]),
	[ExpiresAt] = ` + addMicros("o.expires", "CASE WHEN o.from_added = 1 THEN r.[Added] ELSE n.t END") + `,
	[NextAttemptAt] = ` + addMicros("o.retry_in", "n.t")
	from := `
FROM [cap].[Received] AS r
INNER JOIN (VALUES (CAST(@p1 AS bigint), @p2, CAST(@p3 AS int), CAST(@p4 AS nvarchar(max)), CAST(@p5 AS bigint), CAST(@p6 AS int), CAST(@p7 AS bigint), CAST(@p8 AS int)),
	(CAST(@p9 AS bigint), @p10, CAST(@p11 AS int), CAST(@p12 AS nvarchar(max)), CAST(@p13 AS bigint), CAST(@p14 AS int), CAST(@p15 AS bigint), CAST(@p16 AS int)),
	(CAST(@p17 AS bigint), @p18, CAST(@p19 AS int), CAST(@p20 AS nvarchar(max)), CAST(@p21 AS bigint), CAST(@p22 AS int), CAST(@p23 AS bigint), CAST(@p24 AS int))) AS o(id, status, retries, content, expires, from_added, retry_in, forced) ON r.[Id] = o.id
CROSS JOIN (SELECT SYSUTCDATETIME() AS t) AS n`
	args := []any{
		int64(1), "Succeeded", int64(0), nil, us(24 * time.Hour), int64(0), nil, int64(0),
		int64(2), "Failed", int64(3), mssql.NVarCharMax(`{"Headers":{}}`), us(time.Hour), int64(1), us(30 * time.Second), int64(0),
		int64(3), "Scheduled", int64(0), nil, nil, int64(0), int64(0), int64(1),
	}

	own := q.outcomes(storage.Received, outs, false)
	require.Len(t, own, 1)
	checkStmt(t, own[0])
	require.Equal(t, body+from+`
WHERE (o.forced = 1 OR r.[StatusName] <> N'Succeeded')`, own[0].query)
	require.Equal(t, args, own[0].args)

	inTx := q.outcomes(storage.Received, outs, true)
	require.Len(t, inTx, 1)
	checkStmt(t, inTx[0])
	require.Equal(t, body+`
OUTPUT inserted.[Id]`+from+`
WHERE r.[StatusName] <> N'Succeeded'`, inTx[0].query)
	require.Equal(t, args, inTx[0].args)
}

func TestSmallStatements(t *testing.T) {
	q := newQueries("cap")
	cases := []struct {
		st    stmt
		query string
		args  []any
	}{
		{q.reschedule(storage.Published, []int64{5, 6}, -time.Second)[0],
			`UPDATE [cap].[Published] SET [NextAttemptAt] = ` + addMicros("@p1", nowUTC) + `
WHERE [Id] IN (@p2, @p3) AND [NextAttemptAt] IS NOT NULL`,
			[]any{us(-time.Second), int64(5), int64(6)}},
		{q.existing(storage.Received, []int64{9})[0],
			`SELECT [Id] FROM [cap].[Received] WHERE [Id] IN (@p1)`, []any{int64(9)}},
		{q.delete(storage.Received, []int64{1, 2, 3})[0],
			`DELETE FROM [cap].[Received] WHERE [Id] IN (@p1, @p2, @p3)`, []any{int64(1), int64(2), int64(3)}},
		{q.deleteExpired(storage.Published, 1000),
			`DELETE TOP (@p1) FROM [cap].[Published] WITH (ROWLOCK, READPAST)
WHERE [ExpiresAt] IS NOT NULL AND [ExpiresAt] < SYSUTCDATETIME() AND [StatusName] IN (N'Succeeded', N'Failed')`,
			[]any{int64(1000)}},
		{q.get(storage.Received, 42),
			`SELECT [Id], [Version], [Name], ISNULL([Group], N''), ISNULL([MessageId], N''), [Content], [Retries], [Added], [ExpiresAt], [StatusName], [NextAttemptAt] FROM [cap].[Received] WHERE [Id] = @p1`,
			[]any{int64(42)}},
		{q.get(storage.Published, 42),
			`SELECT [Id], [Version], [Name], N'', N'', [Content], [Retries], [Added], [ExpiresAt], [StatusName], [NextAttemptAt] FROM [cap].[Published] WHERE [Id] = @p1`,
			[]any{int64(42)}},
		{q.counts(storage.Published),
			`SELECT [StatusName], COUNT_BIG(*) FROM [cap].[Published] GROUP BY [StatusName]`, nil},
		{q.lock(), `DECLARE @r int;
EXEC @r = sp_getapplock @Resource = @p1, @LockMode = N'Exclusive', @LockOwner = N'Transaction', @LockTimeout = -1;
SELECT @r;`, []any{"github.com/go-cap/cap/storage/sqlserver.migrate:cap"}},
	}
	for _, c := range cases {
		checkStmt(t, c.st)
		require.Equal(t, c.query, c.st.query)
		require.Equal(t, c.args, c.st.args, c.query)
	}
}

func TestListStatements(t *testing.T) {
	q := newQueries("cap")
	cols := `SELECT [Id], [Version], [Name], ISNULL([Group], N''), ISNULL([MessageId], N''), [Content], [Retries], [Added], [ExpiresAt], [StatusName], [NextAttemptAt] FROM [cap].[Received]`

	page, count := q.list(storage.Received, storage.ListQuery{})
	checkStmt(t, page)
	checkStmt(t, count)
	require.Equal(t, cols+`
ORDER BY [Added] DESC, [Id] DESC OFFSET @p1 ROWS FETCH NEXT @p2 ROWS ONLY`, page.query)
	require.Equal(t, []any{int64(0), int64(20)}, page.args)
	require.Equal(t, `SELECT COUNT_BIG(*) FROM [cap].[Received]`, count.query)
	require.Empty(t, count.args)

	page, count = q.list(storage.Received, storage.ListQuery{Status: storage.StatusFailed, Name: "Order_50%",
		Content: "[x]\\", Group: "g.v1", Offset: 40, Limit: 10})
	checkStmt(t, page)
	checkStmt(t, count)
	where := ` WHERE [StatusName] = @p1 AND LOWER([Name]) LIKE @p2 ESCAPE '\' AND LOWER([Content]) LIKE @p3 ESCAPE '\' AND [Group] = @p4`
	require.Equal(t, cols+where+`
ORDER BY [Added] DESC, [Id] DESC OFFSET @p5 ROWS FETCH NEXT @p6 ROWS ONLY`, page.query)
	filters := []any{"Failed", `%order\_50\%%`, `%\[x]\\%`, "g.v1"}
	require.Equal(t, append(append([]any(nil), filters...), int64(40), int64(10)), page.args)
	require.Equal(t, `SELECT COUNT_BIG(*) FROM [cap].[Received]`+where, count.query)
	require.Equal(t, filters, count.args)

	// Published has no Group: the filter is ignored; negative offsets are 0.
	page, _ = q.list(storage.Published, storage.ListQuery{Name: "a", Group: "g", Offset: -5})
	checkStmt(t, page)
	require.NotContains(t, page.query, "[Group]")
	require.Equal(t, []any{"%a%", int64(0), int64(20)}, page.args)
}

// TestBatchSplitting: batches larger than one statement can carry are split
// at SQL Server's parameter limit, rows in order, none lost or repeated.
func TestBatchSplitting(t *testing.T) {
	q := newQueries("cap")
	recs := func(n int) []*storage.Record {
		out := make([]*storage.Record, n)
		for i := range out {
			out[i] = &storage.Record{ID: int64(i + 1), Version: "v1", Name: "n", Group: "g", MessageID: strconv.Itoa(i)}
		}
		return out
	}
	// firstArgs collects argument 0 of each row (the id) of each statement.
	ids := func(stmts []stmt, perRow, skip int) []int64 {
		var out []int64
		for _, st := range stmts {
			checkStmt(t, st)
			for i := skip; i < len(st.args); i += perRow {
				out = append(out, st.args[i].(int64))
			}
		}
		return out
	}
	seq := func(n int) []int64 {
		out := make([]int64, n)
		for i := range out {
			out[i] = int64(i + 1)
		}
		return out
	}
	sizes := func(stmts []stmt) []int {
		var out []int
		for _, st := range stmts {
			out = append(out, len(st.args))
		}
		return out
	}

	require.Equal(t, 262, maxParams/publishedPerRow)
	st := q.insertPublished(recs(262), true)
	require.Equal(t, []int{2096}, sizes(st))
	st = q.insertPublished(recs(263), true)
	require.Equal(t, []int{2096, 8}, sizes(st))
	require.Equal(t, seq(263), ids(st, publishedPerRow, 0))
	st = q.insertPublished(recs(1000), false)
	require.Len(t, st, 4)
	require.Equal(t, seq(1000), ids(st, publishedPerRow, 0))

	require.Equal(t, 209, maxParams/receivedPerRow)
	st = q.insertReceived(recs(209))
	require.Equal(t, []int{2090}, sizes(st))
	st = q.insertReceived(recs(420))
	require.Equal(t, []int{2090, 2090, 20}, sizes(st))
	require.Equal(t, seq(420), ids(st, receivedPerRow, 0))

	outs := make([]storage.Outcome, 600)
	for i := range outs {
		outs[i] = storage.Outcome{ID: int64(i + 1), Status: storage.StatusSucceeded}
	}
	st = q.outcomes(storage.Published, outs, true)
	require.Equal(t, []int{2096, 2096, 608}, sizes(st))
	require.Equal(t, seq(600), ids(st, outcomePerRow, 0))

	many := seq(2 * maxParams)
	st = q.reschedule(storage.Published, many, time.Second)
	require.Equal(t, []int{maxParams, maxParams, 3}, sizes(st))
	var got []int64
	for _, s := range st {
		checkStmt(t, s)
		require.Equal(t, us(time.Second), s.args[0])
		for _, a := range s.args[1:] {
			got = append(got, a.(int64))
		}
	}
	require.Equal(t, many, got)
	for _, build := range []func(storage.Table, []int64) []stmt{q.delete, q.existing} {
		st = build(storage.Received, many)
		require.Equal(t, []int{maxParams, maxParams}, sizes(st))
		require.Equal(t, many, ids(st, 1, 0))
		st = build(storage.Received, many[:maxParams+1])
		require.Equal(t, []int{maxParams, 1}, sizes(st))
	}
}

func TestMigrationStatements(t *testing.T) {
	q := newQueries("cap")
	pub, rec := q.table(storage.Published), q.table(storage.Received)
	require.Equal(t, `IF OBJECT_ID(N'[cap].[Published]', N'U') IS NULL
CREATE TABLE [cap].[Published] (
	[Id] bigint NOT NULL,
	[Version] nvarchar(20) NOT NULL,
	[Name] nvarchar(200) NOT NULL,
	[Content] nvarchar(max) NULL,
	[Retries] int NOT NULL,
	[Added] datetime2(7) NOT NULL,
	[ExpiresAt] datetime2(7) NULL,
	[StatusName] nvarchar(50) NOT NULL,
	[NextAttemptAt] datetime2(7) NULL,
	CONSTRAINT [PK_cap.Published] PRIMARY KEY CLUSTERED ([Id] ASC)
)`, pub.createTable())
	require.Contains(t, rec.createTable(), "[Name] nvarchar(200) NOT NULL,\n\t[Group] nvarchar(200) NULL,\n\t[Content]")
	require.Contains(t, rec.createTable(), "[NextAttemptAt] datetime2(7) NULL,\n\t[MessageId] nvarchar(200) COLLATE Latin1_General_BIN2 NULL,\n\tCONSTRAINT [PK_cap.Received]")
	require.Equal(t, `SELECT CASE WHEN OBJECT_ID(N'[cap].[Received]', N'U') IS NULL THEN 0 ELSE 1 END`, rec.tableExists())
	require.Equal(t, `SELECT CASE WHEN COL_LENGTH(N'[cap].[Received]', N'NextAttemptAt') IS NULL THEN 0 ELSE 1 END`,
		rec.columnExists("NextAttemptAt"))

	require.Equal(t, []string{
		`IF COL_LENGTH(N'[cap].[Published]', N'NextAttemptAt') IS NULL
ALTER TABLE [cap].[Published] ADD [NextAttemptAt] datetime2(7) NULL`,
		`IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'[cap].[Published]') AND name = N'IX_cap.Published_ExpiresAt_StatusName')
CREATE NONCLUSTERED INDEX [IX_cap.Published_ExpiresAt_StatusName] ON [cap].[Published] ([ExpiresAt], [StatusName]) WHERE [ExpiresAt] IS NOT NULL`,
		`IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'[cap].[Published]') AND name = N'IX_cap.Published_Version_NextAttemptAt')
CREATE NONCLUSTERED INDEX [IX_cap.Published_Version_NextAttemptAt] ON [cap].[Published] ([Version], [NextAttemptAt]) WHERE [NextAttemptAt] IS NOT NULL`,
		`IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'[cap].[Published]') AND name = N'IX_cap.Published_StatusName_Added')
CREATE NONCLUSTERED INDEX [IX_cap.Published_StatusName_Added] ON [cap].[Published] ([StatusName], [Added])`,
	}, pub.migrate())

	m := rec.migrate()
	require.Len(t, m, 6)
	require.Equal(t, `IF COL_LENGTH(N'[cap].[Received]', N'MessageId') IS NULL
ALTER TABLE [cap].[Received] ADD [MessageId] nvarchar(200) COLLATE Latin1_General_BIN2 NULL`, m[1])
	require.Equal(t, `IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'[cap].[Received]') AND name = N'IX_cap.Received_MessageId_Group')
CREATE UNIQUE NONCLUSTERED INDEX [IX_cap.Received_MessageId_Group] ON [cap].[Received] ([MessageId], [Group]) WHERE [MessageId] IS NOT NULL`, m[2])
	require.Equal(t, `IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'[cap].[Received]') AND name = N'IX_cap.Received_Version_NextAttemptAt')
CREATE NONCLUSTERED INDEX [IX_cap.Received_Version_NextAttemptAt] ON [cap].[Received] ([Version], [NextAttemptAt]) INCLUDE ([Group]) WHERE [NextAttemptAt] IS NOT NULL`, m[4])
	// Columns come before the indexes that use them.
	require.Contains(t, m[0], "ADD [NextAttemptAt]")

	require.Equal(t, `UPDATE [cap].[Published] SET [NextAttemptAt] = CASE
	WHEN [StatusName] IN (N'Delayed', N'Queued') THEN COALESCE([ExpiresAt], SYSUTCDATETIME())
	ELSE SYSUTCDATETIME() END
WHERE [NextAttemptAt] IS NULL AND (([StatusName] IN (N'Scheduled', N'Failed') AND [Retries] < 50)
	OR [StatusName] IN (N'Delayed', N'Queued'))`, pub.backfill())
}

func TestLikePattern(t *testing.T) {
	require.Equal(t, "", likePattern(""))
	require.Equal(t, `%abc%`, likePattern("ABC"))
	require.Equal(t, `%100\%\_\[a]\\%`, likePattern(`100%_[a]\`))
}

func TestLockStatements(t *testing.T) {
	q := newQueries("cap")
	require.Equal(t, `IF OBJECT_ID(N'[cap].[Lock]', N'U') IS NULL
CREATE TABLE [cap].[Lock] (
	[Key] nvarchar(128) NOT NULL,
	[Instance] nvarchar(256) NOT NULL,
	[LastLockTime] datetime2(7) NOT NULL,
	CONSTRAINT [PK_cap.Lock] PRIMARY KEY CLUSTERED ([Key] ASC) WITH (IGNORE_DUP_KEY = ON)
)`, q.createLock())
	require.Contains(t, newQueries("Shop_2").createLock(), `CREATE TABLE [Shop_2].[Lock] (`)
	require.Contains(t, newQueries("Shop_2").createLock(), `CONSTRAINT [PK_Shop_2.Lock] PRIMARY KEY`)
	checkBalanced(t, q.createLock())

	cases := []struct {
		st    stmt
		query string
		args  []any
	}{
		{q.acquireLease("cap.collector", "orders-1/7", 90*time.Second),
			`MERGE [cap].[Lock] WITH (HOLDLOCK) AS l
USING (SELECT @p1 AS k, @p2 AS inst, ` + addMicros("@p3", "SYSUTCDATETIME()") + ` AS ends) AS v
ON l.[Key] = v.k
WHEN MATCHED AND (l.[Instance] = v.inst COLLATE Latin1_General_BIN2 OR l.[LastLockTime] < SYSUTCDATETIME()) THEN
	UPDATE SET [Instance] = v.inst, [LastLockTime] = v.ends
WHEN NOT MATCHED THEN
	INSERT ([Key], [Instance], [LastLockTime]) VALUES (v.k, v.inst, v.ends)
OUTPUT inserted.[Instance];`,
			[]any{"cap.collector", "orders-1/7", us(90 * time.Second)}},
		{q.releaseLease("cap.collector", "orders-1/7"),
			`UPDATE [cap].[Lock] SET [Instance] = N'', [LastLockTime] = CAST('0001-01-01T00:00:00' AS datetime2(7))
WHERE [Key] = @p1 AND [Instance] = @p2 COLLATE Latin1_General_BIN2`,
			[]any{"cap.collector", "orders-1/7"}},
	}
	for _, c := range cases {
		checkStmt(t, c.st)
		require.Equal(t, c.query, c.st.query)
		require.Equal(t, c.args, c.st.args, c.query)
	}
	// A lease longer than DATEADD takes is capped, not an overflow.
	require.Equal(t, maxMicros, q.acquireLease("n", "o", 200*365*24*time.Hour).args[2])
	require.Contains(t, newQueries("Shop_2").acquireLease("k", "o", time.Second).query, `MERGE [Shop_2].[Lock] WITH (HOLDLOCK)`)
}

func TestBacklogStatements(t *testing.T) {
	q := newQueries("cap")
	due := `[NextAttemptAt] IS NOT NULL AND [NextAttemptAt] <= SYSUTCDATETIME()`
	failed := `[StatusName] = N'Failed' AND [NextAttemptAt] IS NULL`
	pub := q.backlog(storage.Published, "v1")
	checkStmt(t, pub)
	require.Equal(t, `SELECT N'', COUNT_BIG(CASE WHEN `+due+` THEN 1 END),
	MIN(CASE WHEN `+due+` THEN [NextAttemptAt] END), COUNT_BIG(CASE WHEN `+failed+` THEN 1 END), SYSUTCDATETIME()
FROM [cap].[Published]
WHERE [Version] = @p1 AND ((`+due+`) OR (`+failed+`))
HAVING COUNT_BIG(*) > 0`, pub.query)
	require.Equal(t, []any{"v1"}, pub.args)

	rec := q.backlog(storage.Received, "v2")
	checkStmt(t, rec)
	require.Equal(t, `SELECT ISNULL([Group], N''), COUNT_BIG(CASE WHEN `+due+` THEN 1 END),
	MIN(CASE WHEN `+due+` THEN [NextAttemptAt] END), COUNT_BIG(CASE WHEN `+failed+` THEN 1 END), SYSUTCDATETIME()
FROM [cap].[Received]
WHERE [Version] = @p1 AND ((`+due+`) OR (`+failed+`))
GROUP BY ISNULL([Group], N'')`, rec.query)
	require.Equal(t, []any{"v2"}, rec.args)
}

func TestReceivedExistsStatements(t *testing.T) {
	q := newQueries("cap")
	require.Empty(t, q.receivedExists(nil))
	st := q.receivedExists([]storage.ReceivedKey{{MessageID: "m1", Group: "g1"}, {MessageID: "m'2", Group: ""}})
	require.Len(t, st, 1)
	checkStmt(t, st[0])
	require.Equal(t, `SELECT k.i FROM (VALUES (1, @p1, @p2),
	(2, @p3, @p4)) AS k(i, msgid, grp)
WHERE EXISTS (SELECT 1 FROM [cap].[Received] AS r
	WHERE r.[MessageId] IS NOT NULL AND r.[MessageId] = k.msgid AND r.[Group] = k.grp)`, st[0].query)
	require.Equal(t, []any{"m1", "g1", "m'2", ""}, st[0].args)

	// 1,000 keys a statement, numbered from 1 in each, keys in order.
	keys := make([]storage.ReceivedKey, 2*maxExistsKeys+1)
	for i := range keys {
		keys[i] = storage.ReceivedKey{MessageID: "m" + strconv.Itoa(i), Group: "g"}
	}
	st = q.receivedExists(keys)
	require.Len(t, st, 3)
	var got []string
	for _, s := range st {
		checkStmt(t, s)
		require.True(t, strings.HasPrefix(s.query, "SELECT k.i FROM (VALUES (1, @p1, @p2)"), s.query[:60])
		for i := 0; i < len(s.args); i += 2 {
			got = append(got, s.args[i].(string))
		}
	}
	require.Len(t, st[0].args, 2*maxExistsKeys)
	require.Contains(t, st[0].query, "(1000, @p1999, @p2000)) AS k")
	require.Equal(t, []any{"m2000", "g"}, st[2].args)
	for i, id := range got {
		require.Equal(t, "m"+strconv.Itoa(i), id)
	}
}

func TestNodeStatements(t *testing.T) {
	q := newQueries("cap")
	cases := []struct {
		st    stmt
		query string
		args  []any
	}{
		{q.heartbeat("cap.node:a", "inst"),
			`MERGE [cap].[Lock] WITH (HOLDLOCK) AS l
USING (SELECT @p1 AS k, @p2 AS inst) AS v
ON l.[Key] = v.k
WHEN MATCHED THEN
	UPDATE SET [Instance] = v.inst, [LastLockTime] = SYSUTCDATETIME()
WHEN NOT MATCHED THEN
	INSERT ([Key], [Instance], [LastLockTime]) VALUES (v.k, v.inst, SYSUTCDATETIME());`,
			[]any{"cap.node:a", "inst"}},
		{q.pruneNodes("cap.node:a", 24*time.Hour),
			`DELETE FROM [cap].[Lock]
WHERE [Key] LIKE N'cap.node:%' ESCAPE '\' AND [Key] <> @p1 AND [LastLockTime] < ` + addMicros("@p2", "SYSUTCDATETIME()"),
			[]any{"cap.node:a", us(-24 * time.Hour)}},
		{q.nodes(time.Minute),
			`SELECT [Key], ISNULL([Instance], N''), [LastLockTime] FROM [cap].[Lock]
WHERE [Key] LIKE N'cap.node:%' ESCAPE '\' AND [LastLockTime] >= ` + addMicros("@p1", "SYSUTCDATETIME()") + `
ORDER BY [Key]`,
			[]any{us(-time.Minute)}},
		{q.removeNode("cap.node:a"), `DELETE FROM [cap].[Lock] WHERE [Key] = @p1`, []any{"cap.node:a"}},
	}
	for _, c := range cases {
		checkStmt(t, c.st)
		require.Equal(t, c.query, c.st.query)
		require.Equal(t, c.args, c.st.args, c.query)
	}
	// A window longer than DATEADD takes is capped, not an overflow.
	require.Equal(t, -maxMicros, q.nodes(200 * 365 * 24 * time.Hour).args[0])
	require.Contains(t, newQueries("Shop_2").heartbeat("k", "i").query, `MERGE [Shop_2].[Lock] WITH (HOLDLOCK)`)
}

// TestNodeKeyPattern: the node rows' pattern matches the prefix literally,
// whatever characters LIKE would read as wildcards.
func TestNodeKeyPattern(t *testing.T) {
	require.Equal(t, `cap.node:%`, likePrefix("cap.node:"))
	require.Equal(t, `a\_b\%c\[d]\\e%`, likePrefix(`a_b%c[d]\e`))
	require.Equal(t, "[Key] LIKE N'cap.node:%' ESCAPE '\\'", isNode)
}

func TestCountByHourStatement(t *testing.T) {
	q := newQueries("cap")
	since := time.Date(2026, 1, 2, 4, 5, 6, 0, time.FixedZone("CET", 3600))
	hour := `DATEADD(hour, DATEDIFF(hour, CAST('2000-01-01T00:00:00' AS datetime2(7)), [Added]), CAST('2000-01-01T00:00:00' AS datetime2(7)))`
	for _, tt := range []storage.Table{storage.Published, storage.Received} {
		st := q.countByHour(tt, storage.StatusSucceeded, since)
		checkStmt(t, st)
		require.Equal(t, `SELECT `+hour+` AS h, COUNT_BIG(*) FROM `+q.table(tt).name+`
WHERE [StatusName] = @p1 AND [Added] >= CAST(@p2 AS datetime2(7))
GROUP BY `+hour+`
ORDER BY h`, st.query)
		require.Equal(t, []any{"Succeeded", since.UTC()}, st.args)
		require.Equal(t, time.UTC, st.args[1].(time.Time).Location(), "since goes in UTC")
	}
}
