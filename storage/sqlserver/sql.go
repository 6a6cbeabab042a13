package sqlserver

import (
	"strconv"
	"strings"
	"time"

	mssql "github.com/microsoft/go-mssqldb"

	"github.com/go-cap/cap/storage"
)

// maxParams is the most parameters one statement of this storage takes.
// SQL Server accepts 2,100 parameters in a request; go-mssqldb sends a
// statement with arguments as sp_executesql, whose statement text and
// parameter list are two of them.
const maxParams = 2098

// nowUTC is the database's clock in UTC, as the datetime2(7) columns hold
// it. SQL Server evaluates it once per statement, not once per row.
const nowUTC = `SYSUTCDATETIME()`

// now is a derived table of one row, n.t, the statement's now, for
// statements that need it in several places.
const now = `CROSS JOIN (SELECT ` + nowUTC + ` AS t) AS n`

// maxMicros bounds the durations passed to SQL: DATEADD takes an int, so
// the seconds must fit in 31 bits (68 years).
const maxMicros = int64(1<<31-1) * 1_000_000

// micros turns d into the bigint microseconds parameter of addMicros.
func micros(d time.Duration) int64 {
	us := d.Microseconds()
	switch {
	case us > maxMicros:
		return maxMicros
	case us < -maxMicros:
		return -maxMicros
	}
	return us
}

// addMicros is base + x microseconds, x being a bigint expression. DATEADD
// takes an int, so the seconds and the rest are added apart. NULL when x is
// NULL.
func addMicros(x, base string) string {
	return `DATEADD(microsecond, CAST(` + x + ` % 1000000 AS int), DATEADD(second, CAST(` + x +
		` / 1000000 AS int), ` + base + `))`
}

// quoteIdent quotes an identifier in brackets. The names it gets have
// passed storage.ValidateIdentifier; a ] would be doubled all the same.
func quoteIdent(s string) string { return `[` + strings.ReplaceAll(s, `]`, `]]`) + `]` }

// literal is an N'...' string literal.
func literal(s string) string { return `N'` + strings.ReplaceAll(s, `'`, `''`) + `'` }

// param is the n-th positional parameter (from 1), as go-mssqldb names
// them.
func param(n int) string { return "@p" + strconv.Itoa(n) }

// stmt is one statement and its arguments.
type stmt struct {
	query string
	args  []any
}

// queries builds the statements of one schema, which must have passed
// storage.ValidateIdentifier.
type queries struct {
	schema string
	tables [2]table // indexed by storage.Table
}

// table holds the names of one message table.
type table struct {
	t      storage.Table
	bare   string // Published or Received, CAP's names
	name   string // [schema].[Published]
	object string // N'[schema].[Published]', for OBJECT_ID and COL_LENGTH
	prefix string // schema.Published, how CAP names constraints and indexes
}

func newQueries(schema string) *queries {
	q := &queries{schema: schema}
	for _, t := range []storage.Table{storage.Published, storage.Received} {
		bare := "Published"
		if t == storage.Received {
			bare = "Received"
		}
		name := quoteIdent(schema) + "." + quoteIdent(bare)
		q.tables[t] = table{t: t, bare: bare, name: name, object: literal(name), prefix: schema + "." + bare}
	}
	return q
}

func (q *queries) table(t storage.Table) *table {
	if t == storage.Received {
		return &q.tables[storage.Received]
	}
	return &q.tables[storage.Published]
}

// cols are the columns of a record, in scanRecord's order, each read with
// the prefix p ("", "inserted."). Published has no Group or MessageId: ”
// keeps one scan for both tables, as does ” for CAP's NULL ones.
func (tb *table) cols(p string) string {
	group, msgID := `N''`, `N''`
	if tb.t == storage.Received {
		group = `ISNULL(` + p + `[Group], N'')`
		msgID = `ISNULL(` + p + `[MessageId], N'')`
	}
	return p + `[Id], ` + p + `[Version], ` + p + `[Name], ` + group + `, ` + msgID + `, ` + p + `[Content], ` +
		p + `[Retries], ` + p + `[Added], ` + p + `[ExpiresAt], ` + p + `[StatusName], ` + p + `[NextAttemptAt]`
}

// idList is "@pN, @pN+1, ..." for count parameters starting at first.
func idList(first, count int) string {
	var b strings.Builder
	for i := range count {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(param(first + i))
	}
	return b.String()
}

// chunks splits n items into runs of at most per items: the bounds
// [lo, hi) of each.
func chunks(n, per int) [][2]int {
	var out [][2]int
	for lo := 0; lo < n; lo += per {
		out = append(out, [2]int{lo, min(lo+per, n)})
	}
	return out
}

// text passes content as an nvarchar(max) parameter; nil stands for NULL.
// A plain string would be declared nvarchar(its length), and SQL Server
// would compile and cache a plan for every length of Content.
func text(b []byte) any {
	if b == nil {
		return nil
	}
	return mssql.NVarCharMax(b)
}

// The strings of a row (Version, Name, Group, MessageId, StatusName) go
// in as the parameters go-mssqldb declares, nvarchar(their length): a CAST
// to the column's length would truncate a longer value silently, while the
// insert refuses it (error 2628), which the storage reports as
// storage.ErrRefused. Numbers are CAST so that a NULL, which go-mssqldb
// declares nvarchar(1), has the column's type in every row.

// insertArgs are the per-row values the inserts compute in Go: the due
// time (NULL for a terminal row, which needs no attempt) and the expiry (a
// Delayed row expires when due, as in CAP; others ExpiresIn after now when
// it is positive, else never), both in microseconds from now.
func insertArgs(r *storage.Record, status storage.Status) (due, expires any) {
	if !r.Terminal {
		due = micros(r.DueIn)
	}
	switch {
	case status == storage.StatusDelayed && !r.Terminal:
		expires = due
	case r.ExpiresIn > 0:
		expires = micros(r.ExpiresIn)
	}
	return due, expires
}

func statusOf(r *storage.Record) storage.Status {
	if r.Status == "" {
		return storage.StatusScheduled
	}
	return r.Status
}

// publishedPerRow is the number of parameters of one published row.
const publishedPerRow = 8

// insertPublished returns the statements that store recs, each within
// maxParams. With output, each returns (Id, Added, ExpiresAt,
// NextAttemptAt) of its rows.
func (q *queries) insertPublished(recs []*storage.Record, output bool) []stmt {
	tb := q.table(storage.Published)
	var out []stmt
	for _, c := range chunks(len(recs), maxParams/publishedPerRow) {
		rows := recs[c[0]:c[1]]
		var b strings.Builder
		args := make([]any, 0, len(rows)*publishedPerRow)
		b.WriteString(`INSERT INTO ` + tb.name + ` ([Id], [Version], [Name], [Content], [Retries], [Added], [ExpiresAt], [StatusName], [NextAttemptAt])`)
		if output {
			b.WriteString("\nOUTPUT inserted.[Id], inserted.[Added], inserted.[ExpiresAt], inserted.[NextAttemptAt]")
		}
		b.WriteString("\nSELECT v.id, v.version, v.name, v.content, v.retries, n.t, " + addMicros("v.expires", "n.t") +
			", v.status, " + addMicros("v.due", "n.t") + "\nFROM (VALUES ")
		for i, r := range rows {
			if i > 0 {
				b.WriteString(",\n\t")
			}
			p := len(args)
			b.WriteString(`(CAST(` + param(p+1) + ` AS bigint), ` + param(p+2) + `, ` + param(p+3) + `, CAST(` +
				param(p+4) + ` AS nvarchar(max)), CAST(` + param(p+5) + ` AS int), ` + param(p+6) + `, CAST(` +
				param(p+7) + ` AS bigint), CAST(` + param(p+8) + ` AS bigint))`)
			status := statusOf(r)
			due, expires := insertArgs(r, status)
			args = append(args, r.ID, r.Version, r.Name, text(r.Content), int64(r.Retries), string(status), due, expires)
		}
		b.WriteString(") AS v(id, version, name, content, retries, status, due, expires)\n" + now)
		out = append(out, stmt{b.String(), args})
	}
	return out
}

// receivedPerRow is the number of parameters of one received row.
const receivedPerRow = 10

// insertReceived returns the statements that store recs, each within
// maxParams, each row unless a row with its (MessageId, Group) exists.
// Each returns (Id, Added, ExpiresAt, NextAttemptAt) of the rows it
// inserted. The caller leaves duplicates within recs out.
//
// UPDLOCK and HOLDLOCK on the existence check lock the key range of the
// unique index until the transaction ends, so a concurrent insert of the
// same key waits and then sees the row, instead of failing on the index.
func (q *queries) insertReceived(recs []*storage.Record) []stmt {
	tb := q.table(storage.Received)
	var out []stmt
	for _, c := range chunks(len(recs), maxParams/receivedPerRow) {
		rows := recs[c[0]:c[1]]
		var b strings.Builder
		args := make([]any, 0, len(rows)*receivedPerRow)
		b.WriteString(`INSERT INTO ` + tb.name + ` ([Id], [Version], [Name], [Group], [MessageId], [Content], [Retries], [Added], [ExpiresAt], [StatusName], [NextAttemptAt])
OUTPUT inserted.[Id], inserted.[Added], inserted.[ExpiresAt], inserted.[NextAttemptAt]
SELECT v.id, v.version, v.name, v.grp, v.msgid, v.content, v.retries, n.t, ` + addMicros("v.expires", "n.t") +
			`, v.status, ` + addMicros("v.due", "n.t") + "\nFROM (VALUES ")
		for i, r := range rows {
			if i > 0 {
				b.WriteString(",\n\t")
			}
			p := len(args)
			b.WriteString(`(CAST(` + param(p+1) + ` AS bigint), ` + param(p+2) + `, ` + param(p+3) + `, ` + param(p+4) +
				`, ` + param(p+5) + `, CAST(` + param(p+6) + ` AS nvarchar(max)), CAST(` + param(p+7) + ` AS int), ` +
				param(p+8) + `, CAST(` + param(p+9) + ` AS bigint), CAST(` + param(p+10) + ` AS bigint))`)
			status := statusOf(r)
			due, expires := insertArgs(r, status)
			args = append(args, r.ID, r.Version, r.Name, r.Group, r.MessageID, text(r.Content), int64(r.Retries),
				string(status), due, expires)
		}
		b.WriteString(`) AS v(id, version, name, grp, msgid, content, retries, status, due, expires)
` + now + `
WHERE NOT EXISTS (SELECT 1 FROM ` + tb.name + ` AS r WITH (UPDLOCK, HOLDLOCK)
	WHERE r.[MessageId] IS NOT NULL AND r.[MessageId] = v.msgid AND r.[Group] = v.grp)`)
		out = append(out, stmt{b.String(), args})
	}
	return out
}

// maxGroups bounds the groups a claim filters on by parameters; a claim
// for more groups than that (an instance with thousands of handlers)
// claims rows of every group.
const maxGroups = maxParams - 3

// claim returns the statement that leases up to req.Limit due rows of t.
// The CTE picks due rows in due order with UPDLOCK (held until the
// statement's transaction ends), skipping rows other claimers or
// uncommitted inserts hold (READPAST); the update through it pushes them a
// lease ahead in the same statement. It returns the record columns and the
// row's former due time, to order the batch by: OUTPUT has no order.
func (q *queries) claim(t storage.Table, req storage.ClaimRequest) stmt {
	tb := q.table(t)
	args := []any{req.Version, int64(req.Limit), micros(req.Lease)}
	groups := ""
	if t == storage.Received && len(req.Groups) > 0 && len(req.Groups) <= maxGroups {
		groups = ` AND [Group] IN (` + idList(len(args)+1, len(req.Groups)) + `)`
		for _, g := range req.Groups {
			args = append(args, g)
		}
	}
	cteCols := `[Id], [Version], [Name], [Content], [Retries], [Added], [ExpiresAt], [StatusName], [NextAttemptAt]`
	if t == storage.Received {
		cteCols = `[Id], [Version], [Name], [Group], [MessageId], [Content], [Retries], [Added], [ExpiresAt], [StatusName], [NextAttemptAt]`
	}
	query := `WITH due AS (
	SELECT TOP (@p2) ` + cteCols + `
	FROM ` + tb.name + ` WITH (ROWLOCK, READPAST, UPDLOCK)
	WHERE [Version] = @p1 AND [NextAttemptAt] IS NOT NULL AND [NextAttemptAt] <= ` + nowUTC + groups + `
	ORDER BY [NextAttemptAt], [Id])
UPDATE due SET [NextAttemptAt] = ` + addMicros("@p3", nowUTC) + `
OUTPUT ` + tb.cols("inserted.") + `, deleted.[NextAttemptAt];`
	return stmt{query, args}
}

// byIDs returns one statement per run of ids, each from build(list, args)
// with the ids as parameters after those in fixed.
func byIDs(ids []int64, fixed []any, build func(list string) string) []stmt {
	var out []stmt
	for _, c := range chunks(len(ids), maxParams-len(fixed)) {
		args := append([]any(nil), fixed...)
		for _, id := range ids[c[0]:c[1]] {
			args = append(args, id)
		}
		out = append(out, stmt{build(idList(len(fixed)+1, c[1]-c[0])), args})
	}
	return out
}

// reschedule returns the statements that set NextAttemptAt = now + in for
// those of ids still awaiting an attempt.
func (q *queries) reschedule(t storage.Table, ids []int64, in time.Duration) []stmt {
	tb := q.table(t)
	return byIDs(ids, []any{micros(in)}, func(list string) string {
		return `UPDATE ` + tb.name + ` SET [NextAttemptAt] = ` + addMicros("@p1", nowUTC) + `
WHERE [Id] IN (` + list + `) AND [NextAttemptAt] IS NOT NULL`
	})
}

// outcomePerRow is the number of parameters of one outcome.
const outcomePerRow = 8

// outcomes returns the statements that write outs, each within maxParams.
// A NULL content keeps the stored one. Outside a caller's transaction
// (inTx false) a Succeeded row is left alone unless the outcome is forced;
// in one (inTx true) it is always left alone, and each statement returns
// the ids it wrote, which tells the caller which rows were stale.
func (q *queries) outcomes(t storage.Table, outs []storage.Outcome, inTx bool) []stmt {
	tb := q.table(t)
	var out []stmt
	for _, c := range chunks(len(outs), maxParams/outcomePerRow) {
		rows := outs[c[0]:c[1]]
		var b strings.Builder
		args := make([]any, 0, len(rows)*outcomePerRow)
		b.WriteString(`UPDATE r SET
	[StatusName] = o.status,
	[Retries] = o.retries,
	[Content] = COALESCE(o.content, r.[Content]),
	[ExpiresAt] = ` + addMicros("o.expires", "CASE WHEN o.from_added = 1 THEN r.[Added] ELSE n.t END") + `,
	[NextAttemptAt] = ` + addMicros("o.retry_in", "n.t"))
		if inTx {
			b.WriteString("\nOUTPUT inserted.[Id]")
		}
		b.WriteString("\nFROM " + tb.name + " AS r\nINNER JOIN (VALUES ")
		for i, o := range rows {
			if i > 0 {
				b.WriteString(",\n\t")
			}
			p := len(args)
			b.WriteString(`(CAST(` + param(p+1) + ` AS bigint), ` + param(p+2) + `, CAST(` +
				param(p+3) + ` AS int), CAST(` + param(p+4) + ` AS nvarchar(max)), CAST(` + param(p+5) +
				` AS bigint), CAST(` + param(p+6) + ` AS int), CAST(` + param(p+7) + ` AS bigint), CAST(` +
				param(p+8) + ` AS int))`)
			var expires, retryIn any
			if o.ExpiresIn > 0 {
				expires = micros(o.ExpiresIn)
			}
			if o.Retry {
				retryIn = micros(o.RetryIn)
			}
			args = append(args, o.ID, string(o.Status), int64(o.Retries), text(o.Content), expires,
				boolInt(o.ExpiresFromAdded), retryIn, boolInt(o.Force))
		}
		b.WriteString(") AS o(id, status, retries, content, expires, from_added, retry_in, forced) ON r.[Id] = o.id\n" + now)
		if inTx {
			b.WriteString("\nWHERE r.[StatusName] <> N'Succeeded'")
		} else {
			b.WriteString("\nWHERE (o.forced = 1 OR r.[StatusName] <> N'Succeeded')")
		}
		out = append(out, stmt{b.String(), args})
	}
	return out
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// existing returns the statements that read which of ids exist.
func (q *queries) existing(t storage.Table, ids []int64) []stmt {
	tb := q.table(t)
	return byIDs(ids, nil, func(list string) string {
		return `SELECT [Id] FROM ` + tb.name + ` WHERE [Id] IN (` + list + `)`
	})
}

// deleteExpired returns the statement that deletes up to limit expired
// Succeeded or Failed rows, skipping rows others hold (another collector).
func (q *queries) deleteExpired(t storage.Table, limit int) stmt {
	tb := q.table(t)
	return stmt{`DELETE TOP (@p1) FROM ` + tb.name + ` WITH (ROWLOCK, READPAST)
WHERE [ExpiresAt] IS NOT NULL AND [ExpiresAt] < ` + nowUTC + ` AND [StatusName] IN (N'Succeeded', N'Failed')`,
		[]any{int64(limit)}}
}

// get returns the statement that reads one row.
func (q *queries) get(t storage.Table, id int64) stmt {
	tb := q.table(t)
	return stmt{`SELECT ` + tb.cols("") + ` FROM ` + tb.name + ` WHERE [Id] = @p1`, []any{id}}
}

// likeEscaper escapes text for LIKE ... ESCAPE '\'. T-SQL's LIKE also
// gives [ a meaning.
var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`, `[`, `\[`)

// likePattern makes a substring pattern for LIKE ... ESCAPE '\', or ""
// for no filter.
func likePattern(s string) string {
	if s == "" {
		return ""
	}
	return "%" + strings.ToLower(likeEscaper.Replace(s)) + "%"
}

// likePrefix makes a pattern for LIKE ... ESCAPE '\' of the text starting
// with s.
func likePrefix(s string) string { return likeEscaper.Replace(s) + "%" }

// list returns the statements of a dashboard page: the page, newest Added
// first, and the number of rows matching. Name and Content match
// case-insensitively whatever the column's collation.
func (q *queries) list(t storage.Table, lq storage.ListQuery) (page, count stmt) {
	tb := q.table(t)
	limit, offset := lq.Limit, lq.Offset
	if limit <= 0 {
		limit = 20
	}
	if offset < 0 {
		offset = 0
	}
	var (
		conds []string
		args  []any
	)
	add := func(cond, v string) {
		if v != "" {
			args = append(args, v)
			conds = append(conds, strings.ReplaceAll(cond, "@?", param(len(args))))
		}
	}
	add(`[StatusName] = @?`, string(lq.Status))
	add(`LOWER([Name]) LIKE @? ESCAPE '\'`, likePattern(lq.Name))
	add(`LOWER([Content]) LIKE @? ESCAPE '\'`, likePattern(lq.Content))
	if t == storage.Received {
		add(`[Group] = @?`, lq.Group)
	}
	where := ""
	if len(conds) > 0 {
		where = ` WHERE ` + strings.Join(conds, ` AND `)
	}
	n := len(args)
	page = stmt{`SELECT ` + tb.cols("") + ` FROM ` + tb.name + where + `
ORDER BY [Added] DESC, [Id] DESC OFFSET ` + param(n+1) + ` ROWS FETCH NEXT ` + param(n+2) + ` ROWS ONLY`,
		append(append([]any(nil), args...), int64(offset), int64(limit))}
	count = stmt{`SELECT COUNT_BIG(*) FROM ` + tb.name + where, args}
	return page, count
}

// counts returns the statement that counts rows per status.
func (q *queries) counts(t storage.Table) stmt {
	tb := q.table(t)
	return stmt{`SELECT [StatusName], COUNT_BIG(*) FROM ` + tb.name + ` GROUP BY [StatusName]`, nil}
}

// delete returns the statements that delete rows by id.
func (q *queries) delete(t storage.Table, ids []int64) []stmt {
	tb := q.table(t)
	return byIDs(ids, nil, func(list string) string {
		return `DELETE FROM ` + tb.name + ` WHERE [Id] IN (` + list + `)`
	})
}
