package mysql

import (
	"fmt"
	"hash/fnv"
	"strings"

	"github.com/go-cap/cap/storage"
)

// nowUTC is the database's clock in UTC with microseconds, whatever the
// session's time zone: the DATETIME(6) columns hold UTC wall-clock times.
// MySQL evaluates it once per statement, so every time a statement derives
// from it is consistent.
const nowUTC = `UTC_TIMESTAMP(6)`

// after is nowUTC plus a parameter of microseconds; a NULL parameter makes
// it NULL.
const after = `(` + nowUTC + ` + INTERVAL ? MICROSECOND)`

// quoteIdent quotes a name made of a validated prefix and fixed text.
func quoteIdent(s string) string { return "`" + s + "`" }

// marks returns n comma-separated placeholders.
func marks(n int) string {
	if n <= 0 {
		return ""
	}
	return strings.Repeat("?, ", n-1) + "?"
}

// rows repeats a parenthesised row of placeholders n times.
func rowsOf(row string, n int) string {
	return strings.Repeat(row+", ", n-1) + row
}

// queries holds the statements of the storage, built once from the
// validated prefix. Statements whose length depends on the number of rows or
// ids are methods of tableQueries that render the same text for each n.
type queries struct {
	prefix string

	tables [2]tableQueries // indexed by storage.Table

	session     string
	lock        string
	unlock      string
	tableExists string
	columns     string
	indexes     string
}

// tableQueries are the statements on one message table.
type tableQueries struct {
	t    storage.Table
	name string // quoted table name

	get     string
	list    [filterAll]string // by listFilter
	count   [filterAll]string
	counts  string
	deleteX string // DeleteExpired
	maxID   string // the largest Id: Notifications
	insert1 string // insert(1), the statement of PublishTx's single row

	createTable string
	backfill    string
	// columns and indexes Migrate adds to an existing table, in order.
	addColumns []column
	addIndexes []index
}

type column struct{ name, def string }

type index struct{ name, def string }

// listFilter is the set of filters of a dashboard query.
type listFilter uint8

const (
	filterStatus listFilter = 1 << iota
	filterName
	filterContent
	filterGroup
	filterAll // the number of combinations
)

// listFilters are the conditions of the filters, in parameter order. The
// patterns compare case-insensitively whatever the column's collation, and
// escape with '!' so that the backslash's meaning (NO_BACKSLASH_ESCAPES)
// does not matter.
var listFilters = []struct {
	bit  listFilter
	cond string
}{
	{filterStatus, "`StatusName` = ?"},
	{filterName, "`Name` LIKE ? COLLATE utf8mb4_general_ci ESCAPE '!'"},
	{filterContent, "`Content` LIKE ? COLLATE utf8mb4_general_ci ESCAPE '!'"},
	{filterGroup, "`Group` = ?"},
}

// lockKey is the GET_LOCK name of the migration of a database's tables of
// a prefix. Lock names are limited to 64 characters.
func lockKey(database, prefix string) string {
	h := fnv.New64a()
	h.Write([]byte(database + "\x00" + prefix))
	return fmt.Sprintf("go-cap.migrate.%016x", h.Sum64())
}

func newQueries(prefix string) *queries {
	q := &queries{
		prefix: prefix,
		// A DATETIME(6) literal tells whether the driver parses times
		// (parseTime) and in which location (loc).
		session: `SELECT VERSION(), COALESCE(DATABASE(), ''), @@character_set_connection,
			COALESCE(@@character_set_results, ''), @@sql_mode, CAST('2000-01-02 03:04:05.123456' AS DATETIME(6))`,
		lock:        `SELECT COALESCE(GET_LOCK(?, ?), 0)`,
		unlock:      `SELECT RELEASE_LOCK(?)`,
		tableExists: `SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?`,
		columns: `SELECT column_name, data_type, COALESCE(datetime_precision, 0), COALESCE(character_set_name, '')
			FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ?`,
		indexes: `SELECT DISTINCT index_name FROM information_schema.statistics
			WHERE table_schema = DATABASE() AND table_name = ?`,
	}
	q.tables[storage.Published] = newTableQueries(prefix, storage.Published)
	q.tables[storage.Received] = newTableQueries(prefix, storage.Received)
	return q
}

// tableName is the unquoted name of a table: CAP's `prefix.published`.
func tableName(prefix string, t storage.Table) string { return prefix + "." + t.String() }

// cols are the columns of a Record, in scanRecord's order. Published has no
// Group or MessageId column; empty strings keep one scan for both tables.
// CAP's Version and Retries columns allow NULL.
func cols(t storage.Table) string {
	group, msgID := `''`, `''`
	if t == storage.Received {
		group, msgID = "COALESCE(`Group`, '')", "COALESCE(`MessageId`, '')"
	}
	return "`Id`, COALESCE(`Version`, ''), `Name`, " + group + ", " + msgID +
		", `Content`, COALESCE(`Retries`, 0), `Added`, `ExpiresAt`, `StatusName`, `NextAttemptAt`"
}

func newTableQueries(prefix string, t storage.Table) tableQueries {
	name := quoteIdent(tableName(prefix, t))
	received := t == storage.Received
	q := tableQueries{t: t, name: name}
	q.get = `SELECT ` + cols(t) + ` FROM ` + name + " WHERE `Id` = ?"

	// One statement per combination of filters, as on PostgreSQL.
	for f := range listFilter(filterAll) {
		if f&filterGroup != 0 && !received {
			continue // no Group column
		}
		var conds []string
		for _, c := range listFilters {
			if f&c.bit != 0 {
				conds = append(conds, c.cond)
			}
		}
		where := ""
		if len(conds) > 0 {
			where = ` WHERE ` + strings.Join(conds, ` AND `)
		}
		q.list[f] = `SELECT ` + cols(t) + ` FROM ` + name + where + " ORDER BY `Added` DESC, `Id` DESC LIMIT ? OFFSET ?"
		q.count[f] = `SELECT COUNT(*) FROM ` + name + where
	}
	q.counts = "SELECT `StatusName`, COUNT(*) FROM " + name + " GROUP BY `StatusName`"
	q.maxID = "SELECT COALESCE(MAX(`Id`), 0) FROM " + name

	// CAP's collector statement, with SKIP LOCKED so that collectors of
	// several instances take different rows. The derived table is
	// materialised, which lets it read the table the DELETE writes.
	q.deleteX = "DELETE r FROM " + name + " AS r JOIN (SELECT `Id` FROM " + name +
		" WHERE `ExpiresAt` < " + nowUTC + " AND `StatusName` IN ('Succeeded', 'Failed') LIMIT ? FOR UPDATE SKIP LOCKED) AS d" +
		" ON r.`Id` = d.`Id`"

	// CAP's DDL (reference section 3.2) with microsecond times, plus our
	// columns and indexes. CAP's (Version, ExpiresAt, StatusName) index
	// serves only CAP's retry query and is not created; one CAP made is
	// kept.
	nameLen, statusLen := 200, 40
	if received {
		nameLen, statusLen = 400, 50
	}
	q.addColumns = []column{{"NextAttemptAt", "`NextAttemptAt` datetime(6) DEFAULT NULL"}}
	if received {
		// Binary: a message id is compared exactly, not case-insensitively.
		q.addColumns = append(q.addColumns,
			column{"MessageId", "`MessageId` varchar(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL"})
	}
	q.addIndexes = []index{
		// CAP's, for the collector's deletes.
		{"IX_ExpiresAt_StatusName", "INDEX `IX_ExpiresAt_StatusName` (`ExpiresAt`, `StatusName`)"},
		// Claims: due rows of a version in due order.
		{"IX_Version_NextAttemptAt", "INDEX `IX_Version_NextAttemptAt` (`Version`, `NextAttemptAt`)"},
		// The dashboard's status pages, newest first.
		{"IX_StatusName_Added", "INDEX `IX_StatusName_Added` (`StatusName`, `Added`)"},
	}
	if received {
		// De-duplication of deliveries per group. The storage writes ''
		// rather than NULL for an empty group, so the index sees it.
		q.addIndexes = append(q.addIndexes,
			index{"IX_MessageId_Group", "UNIQUE INDEX `IX_MessageId_Group` (`MessageId`, `Group`)"})
	}
	defs := []string{
		"`Id` bigint NOT NULL",
		"`Version` varchar(20) DEFAULT NULL",
		fmt.Sprintf("`Name` varchar(%d) NOT NULL", nameLen),
	}
	if received {
		defs = append(defs, "`Group` varchar(200) DEFAULT NULL")
	}
	defs = append(defs,
		"`Content` longtext",
		"`Retries` int DEFAULT NULL",
		"`Added` datetime(6) NOT NULL",
		"`ExpiresAt` datetime(6) DEFAULT NULL",
		fmt.Sprintf("`StatusName` varchar(%d) NOT NULL", statusLen),
	)
	for _, c := range q.addColumns {
		defs = append(defs, c.def)
	}
	defs = append(defs, "PRIMARY KEY (`Id`)")
	for _, i := range q.addIndexes {
		defs = append(defs, i.def)
	}
	q.createTable = `CREATE TABLE IF NOT EXISTS ` + name + " (\n\t\t" + strings.Join(defs, ",\n\t\t") +
		"\n\t) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"

	// CAP retries Scheduled and Failed rows below its 50 attempts and sends
	// Delayed and Queued rows at ExpiresAt; after an upgrade they must stay
	// due. CAP wrote local times, so a delayed row's due time is as good as
	// the server's offset from UTC.
	q.backfill = "UPDATE " + name + " SET `NextAttemptAt` = CASE " +
		"WHEN `StatusName` IN ('Delayed', 'Queued') THEN COALESCE(`ExpiresAt`, " + nowUTC + ") " +
		"ELSE " + nowUTC + " END " +
		"WHERE `NextAttemptAt` IS NULL AND ((`StatusName` IN ('Scheduled', 'Failed') AND COALESCE(`Retries`, 0) < 50) " +
		"OR `StatusName` IN ('Delayed', 'Queued'))"
	q.insert1 = q.insert(1)
	return q
}

// insert stores n rows. Each row's NextAttemptAt and ExpiresAt are now plus
// a parameter of microseconds, NULL for none: the caller works out which
// from the record, so one statement serves every kind of row and a Delayed
// row's ExpiresAt equals its NextAttemptAt. Received rows whose (MessageId,
// Group) exists are skipped: ON DUPLICATE KEY UPDATE with no change rather
// than INSERT IGNORE, which would also turn a value too long into a
// truncated one.
func (q *tableQueries) insert(n int) string {
	if n == 1 && q.insert1 != "" {
		return q.insert1
	}
	if q.t == storage.Received {
		return "INSERT INTO " + q.name + " (`Id`, `Version`, `Name`, `Group`, `MessageId`, `Content`, `Retries`, " +
			"`StatusName`, `Added`, `ExpiresAt`, `NextAttemptAt`) VALUES " +
			rowsOf("(?, ?, ?, ?, ?, ?, ?, ?, "+nowUTC+", "+after+", "+after+")", n) +
			" ON DUPLICATE KEY UPDATE `Id` = `Id`"
	}
	return "INSERT INTO " + q.name + " (`Id`, `Version`, `Name`, `Content`, `Retries`, " +
		"`StatusName`, `Added`, `ExpiresAt`, `NextAttemptAt`) VALUES " +
		rowsOf("(?, ?, ?, ?, ?, ?, "+nowUTC+", "+after+", "+after+")", n)
}

// insertedOnes reads back the values the database filled in for n ids.
func (q *tableQueries) insertedOnes(n int) string {
	group, msgID := `''`, `''`
	if q.t == storage.Received {
		group, msgID = "COALESCE(`Group`, '')", "COALESCE(`MessageId`, '')"
	}
	return "SELECT `Id`, " + msgID + ", " + group + ", `Added`, `ExpiresAt`, `NextAttemptAt` FROM " + q.name +
		" WHERE `Id` IN (" + marks(n) + ")"
}

// claim locks up to a limit of due rows, skipping those another claimer
// holds, and returns them with their new due time: now plus the lease.
// Parameters: lease (µs), version, groups..., limit. With groups > 0 only
// rows of those groups (Received).
func (q *tableQueries) claim(groups int) string {
	cond := ""
	if groups > 0 {
		cond = " AND `Group` IN (" + marks(groups) + ")"
	}
	return "SELECT " + cols(q.t) + ", " + after + " FROM " + q.name +
		" WHERE `Version` = ? AND `NextAttemptAt` <= " + nowUTC + cond +
		" ORDER BY `NextAttemptAt` LIMIT ? FOR UPDATE SKIP LOCKED"
}

// lease sets the claimed rows' due time. Parameters: the time, ids.
func (q *tableQueries) lease(n int) string {
	return "UPDATE " + q.name + " SET `NextAttemptAt` = ? WHERE `Id` IN (" + marks(n) + ")"
}

// reschedule: parameters microseconds, ids.
func (q *tableQueries) reschedule(n int) string {
	return "UPDATE " + q.name + " SET `NextAttemptAt` = " + after +
		" WHERE `Id` IN (" + marks(n) + ") AND `NextAttemptAt` IS NOT NULL"
}

// outcomeParams is the number of parameters of one outcome row.
const outcomeParams = 9

// outcomes writes n outcomes in one statement, joined to a derived table of
// one row per outcome: (id, status, retries, content, expires µs, from added,
// retry, retry in µs, force). A NULL content keeps the stored one. A row
// already Succeeded is left alone unless forced.
func (q *tableQueries) outcomes(n int) string {
	first := "SELECT CAST(? AS SIGNED) AS id, ? AS status, CAST(? AS SIGNED) AS retries, ? AS content, " +
		"CAST(? AS SIGNED) AS expires, CAST(? AS SIGNED) AS from_added, CAST(? AS SIGNED) AS retry, " +
		"CAST(? AS SIGNED) AS retry_in, CAST(? AS SIGNED) AS force_it"
	rest := " UNION ALL SELECT CAST(? AS SIGNED), ?, CAST(? AS SIGNED), ?, CAST(? AS SIGNED), CAST(? AS SIGNED), " +
		"CAST(? AS SIGNED), CAST(? AS SIGNED), CAST(? AS SIGNED)"
	return "UPDATE " + q.name + " AS r JOIN (" + first + strings.Repeat(rest, n-1) + ") AS o ON r.`Id` = o.id SET " +
		"r.`StatusName` = o.status, r.`Retries` = o.retries, r.`Content` = COALESCE(o.content, r.`Content`), " +
		"r.`ExpiresAt` = CASE WHEN o.expires > 0 THEN " +
		"(CASE WHEN o.from_added <> 0 THEN r.`Added` ELSE " + nowUTC + " END) + INTERVAL o.expires MICROSECOND END, " +
		"r.`NextAttemptAt` = CASE WHEN o.retry <> 0 THEN " + nowUTC + " + INTERVAL o.retry_in MICROSECOND END " +
		"WHERE o.force_it <> 0 OR r.`StatusName` <> 'Succeeded'"
}

// lockForOutcome locks rows in the caller's transaction before their
// outcomes are written, and tells which exist and which are Succeeded.
func (q *tableQueries) lockForOutcome(n int) string {
	return "SELECT `Id`, `StatusName` FROM " + q.name + " WHERE `Id` IN (" + marks(n) + ") FOR UPDATE"
}

func (q *tableQueries) delete(n int) string {
	return "DELETE FROM " + q.name + " WHERE `Id` IN (" + marks(n) + ")"
}

// alter adds what an existing table lacks in one ALTER TABLE.
func (q *tableQueries) alter(clauses []string) string {
	return "ALTER TABLE " + q.name + " " + strings.Join(clauses, ", ")
}

// modifyTimes and modifyContent widen CAP's columns: CAP's datetime has no
// fraction of a second, and its Content must take any text.
var (
	modifyAdded     = "MODIFY `Added` datetime(6) NOT NULL"
	modifyExpiresAt = "MODIFY `ExpiresAt` datetime(6) DEFAULT NULL"
	modifyContent   = "MODIFY `Content` longtext CHARACTER SET utf8mb4"
)

// likePattern makes a substring pattern for LIKE ... ESCAPE '!', or "" for
// no filter.
func likePattern(s string) string {
	if s == "" {
		return ""
	}
	r := strings.NewReplacer(`!`, `!!`, `%`, `!%`, `_`, `!_`)
	return "%" + r.Replace(s) + "%"
}
