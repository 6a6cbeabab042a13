package sqlite

import (
	"fmt"

	"github.com/go-cap/cap/internal/nodeinfo"
)

// timeLayout is how every time column is stored: UTC text of fixed width,
// so that comparing the strings compares the times. It is the form SQLite's
// strftime('%Y-%m-%d %H:%M:%f', ...) produces.
const timeLayout = "2006-01-02 15:04:05.000"

// tableSQL holds the statements of one message table. Ids lists are passed
// as one JSON array argument (json_each), so no statement depends on the
// number of ids.
type tableSQL struct {
	// received finds a Received row by (MessageId, Group) (exists.go).
	received       string
	insert         string
	claimProbe     string
	claimSelect    string
	claimUpdate    string
	reschedule     string
	setOutcome     string
	setOutcomeLive string // skips rows already Succeeded
	exists         string
	deleteExpired  string
	get            string
	list           string
	count          string
	counts         string
	deleteIDs      string
	backlog        string
	countByHour    string // history.go
}

// statements is all SQL text of the package, built once from the validated
// table prefix.
type statements struct {
	migrate   []string // the tables
	lock      lockSQL
	indexes   []index
	published tableSQL
	received  tableSQL
}

// index is one index of the tables. A partial one leaves out the rows none
// of the statements look for through it, so that an insert, and the claim of
// a row, write fewer index pages: in WAL mode each page a transaction
// changes is one more frame to write (publish-overhead on SQLite, four runs
// each: 0.71-0.74 with whole indexes, 0.80-0.86 with the partial ones).
type index struct {
	name, create string
	partial      bool
}

func (s *statements) table(t tableKind) *tableSQL {
	if t == receivedTable {
		return &s.received
	}
	return &s.published
}

type tableKind int

const (
	publishedTable tableKind = iota
	receivedTable
)

// quote makes a double-quoted identifier. Callers pass names built from a
// prefix that passed storage.ValidateIdentifier plus fixed text, so the name
// holds no quote to escape.
func quote(name string) string { return `"` + name + `"` }

func buildStatements(prefix string) statements {
	pub := prefix + ".published"
	rec := prefix + ".received"
	return statements{
		migrate:   append(migrateSQL(pub, rec), createLockSQL(prefix+".lock")),
		lock:      buildLock(prefix + ".lock"),
		indexes:   indexes(pub, rec),
		published: buildTable(pub, false),
		received:  buildTable(rec, true),
	}
}

func migrateSQL(pub, rec string) []string {
	return []string{
		`CREATE TABLE IF NOT EXISTS ` + quote(pub) + ` (
	Id INTEGER PRIMARY KEY NOT NULL,
	Version TEXT NOT NULL,
	Name TEXT NOT NULL,
	Content TEXT NULL,
	Retries INTEGER NOT NULL,
	Added TEXT NOT NULL,
	ExpiresAt TEXT NULL,
	StatusName TEXT NOT NULL,
	NextAttemptAt TEXT NULL
)`,
		`CREATE TABLE IF NOT EXISTS ` + quote(rec) + ` (
	Id INTEGER PRIMARY KEY NOT NULL,
	Version TEXT NOT NULL,
	Name TEXT NOT NULL,
	"Group" TEXT NULL,
	Content TEXT NULL,
	Retries INTEGER NOT NULL,
	Added TEXT NOT NULL,
	ExpiresAt TEXT NULL,
	StatusName TEXT NOT NULL,
	NextAttemptAt TEXT NULL,
	MessageId TEXT NOT NULL
)`,
	}
}

func indexes(pub, rec string) []index {
	var out []index
	for _, t := range []string{pub, rec} {
		out = append(out,
			// Claims: rows that await an attempt.
			newIndex(t, "Version_NextAttemptAt", "Version, NextAttemptAt", "NextAttemptAt IS NOT NULL", false),
			// The collector: rows that expire.
			newIndex(t, "ExpiresAt_StatusName", "ExpiresAt, StatusName", "ExpiresAt IS NOT NULL", false),
			// The dashboard: pending Scheduled rows are in the claims' index.
			newIndex(t, "StatusName_Added", "StatusName, Added", "StatusName <> 'Scheduled' OR NextAttemptAt IS NULL", false),
		)
	}
	return append(out, newIndex(rec, "MessageId_Group", `MessageId, "Group"`, "", true))
}

// newIndex names the index after its table, as index names are shared by
// the whole database: "IX_cap.published_ExpiresAt_StatusName".
func newIndex(table, suffix, columns, where string, unique bool) index {
	kind := "INDEX"
	if unique {
		kind = "UNIQUE INDEX"
	}
	name := "IX_" + table + "_" + suffix
	create := fmt.Sprintf("CREATE %s IF NOT EXISTS %s ON %s (%s)", kind, quote(name), quote(table), columns)
	if where != "" {
		create += " WHERE " + where
	}
	return index{name: name, create: create, partial: where != ""}
}

func buildTable(name string, received bool) tableSQL {
	t := quote(name)
	// cols is the column list every read scans, in scanRecord's order.
	cols := `Id, Version, Name, '', '', Content, Retries, Added, ExpiresAt, StatusName, NextAttemptAt`
	insert := `INSERT INTO ` + t + ` (Id, Version, Name, Content, Retries, Added, ExpiresAt, StatusName, NextAttemptAt)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`
	groupFilter := `?1 = ''`
	if received {
		cols = `Id, Version, Name, COALESCE("Group", ''), MessageId, Content, Retries, Added, ExpiresAt, StatusName, NextAttemptAt`
		insert = `INSERT INTO ` + t + ` (Id, Version, Name, Content, Retries, Added, ExpiresAt, StatusName, NextAttemptAt, "Group", MessageId)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (MessageId, "Group") DO NOTHING`
		groupFilter = `?1 = '' OR "Group" = ?1`
	}
	// The list filters take named-by-number arguments: ?1 group, ?2 status,
	// ?3 name, ?4 content; an empty value disables its filter.
	where := `WHERE (` + groupFilter + `)
	AND (?2 = '' OR StatusName = ?2)
	AND (?3 = '' OR instr(lower(Name), lower(?3)) > 0)
	AND (?4 = '' OR instr(lower(Content), lower(?4)) > 0)`
	// Outcome arguments: ?1 status, ?2 retries, ?3 content (NULL keeps the
	// column), ?4 an absolute ExpiresAt, ?5 a strftime modifier applied to
	// Added (used instead of ?4 when not NULL), ?6 NextAttemptAt, ?7 id.
	setOutcome := `UPDATE ` + t + ` SET
	StatusName = ?1,
	Retries = ?2,
	Content = COALESCE(?3, Content),
	ExpiresAt = CASE WHEN ?5 IS NULL THEN ?4 ELSE strftime('%Y-%m-%d %H:%M:%f', Added, ?5) END,
	NextAttemptAt = ?6
WHERE Id = ?7`
	byKey := ""
	if received {
		byKey = `SELECT 1 FROM ` + t + ` WHERE MessageId = ? AND "Group" = ?`
	}
	return tableSQL{
		received: byKey,
		backlog:  backlogSQL(name, received),
		insert:   insert,
		// claimProbe looks for a due row without the write lock, so idle
		// pollers do not queue behind writers.
		claimProbe: `SELECT 1 FROM ` + t + `
WHERE Version = ?1 AND NextAttemptAt IS NOT NULL AND NextAttemptAt <= ?2` + claimGroups(received, "?3") + `
LIMIT 1`,
		// The claim runs in one write transaction: the rows are read in due
		// order, then leased. SQLite's single writer makes it exclusive.
		claimSelect: `SELECT ` + cols + ` FROM ` + t + `
WHERE Version = ?1 AND NextAttemptAt IS NOT NULL AND NextAttemptAt <= ?2` + claimGroups(received, "?4") + `
ORDER BY NextAttemptAt, Id
LIMIT ?3`,
		claimUpdate:    `UPDATE ` + t + ` SET NextAttemptAt = ? WHERE Id IN (SELECT value FROM json_each(?))`,
		reschedule:     `UPDATE ` + t + ` SET NextAttemptAt = ? WHERE Id IN (SELECT value FROM json_each(?)) AND NextAttemptAt IS NOT NULL`,
		setOutcome:     setOutcome,
		setOutcomeLive: setOutcome + ` AND StatusName <> 'Succeeded'`,
		exists:         `SELECT 1 FROM ` + t + ` WHERE Id = ?`,
		deleteExpired: `DELETE FROM ` + t + ` WHERE Id IN (
	SELECT Id FROM ` + t + `
	WHERE ExpiresAt < ? AND StatusName IN ('Succeeded', 'Failed')
	LIMIT ?)`,
		get: `SELECT ` + cols + ` FROM ` + t + ` WHERE Id = ?`,
		list: `SELECT ` + cols + ` FROM ` + t + `
` + where + `
ORDER BY Added DESC, Id DESC
LIMIT ?5 OFFSET ?6`,
		count:  `SELECT COUNT(*) FROM ` + t + "\n" + where,
		counts: `SELECT StatusName, COUNT(*) FROM ` + t + ` GROUP BY StatusName`,
		// The redundant condition lets SQLite use the partial status index.
		countByHour: `SELECT substr(Added, 1, 13), COUNT(*) FROM ` + t + `
WHERE StatusName = ?1 AND StatusName <> 'Scheduled' AND Added >= ?2
GROUP BY 1 ORDER BY 1`,
		deleteIDs: `DELETE FROM ` + t + ` WHERE Id IN (SELECT value FROM json_each(?))`,
	}
}

// claimGroups is the Received claim's filter on ClaimRequest.Groups, given
// as a JSON array in parameter p (NULL: every group).
func claimGroups(received bool, p string) string {
	if !received {
		return ""
	}
	return `
AND (` + p + ` IS NULL OR "Group" IN (SELECT value FROM json_each(` + p + `)))`
}

// lockSQL holds the statements of CAP's Lock table (Key, Instance,
// LastLockTime), which keeps the bus's leases.
type lockSQL struct {
	acquire, release string
	// The bus instances' heartbeats (see nodes.go).
	heartbeat, pruneNodes, nodes, removeNode string
}

func createLockSQL(lock string) string {
	return `CREATE TABLE IF NOT EXISTS ` + quote(lock) + ` (
	Key TEXT PRIMARY KEY NOT NULL,
	Instance TEXT NULL,
	LastLockTime TEXT NOT NULL
)`
}

// buildLock: acquire takes (key, owner, until, now) and changes a row only
// when the lease is new, the caller's, or run out. For the bus's leases
// LastLockTime is when the lease runs out, so each holder's own ttl counts.
func buildLock(lock string) lockSQL {
	t := quote(lock)
	return lockSQL{
		acquire: `INSERT INTO ` + t + ` (Key, Instance, LastLockTime) VALUES (?1, ?2, ?3)
	ON CONFLICT (Key) DO UPDATE SET Instance = excluded.Instance, LastLockTime = excluded.LastLockTime
	WHERE Instance = excluded.Instance OR LastLockTime < ?4`,
		release: `UPDATE ` + t + ` SET Instance = '', LastLockTime = '0001-01-01 00:00:00.000'
	WHERE Key = ?1 AND Instance = ?2`,
		heartbeat: `INSERT INTO ` + t + ` (Key, Instance, LastLockTime) VALUES (?1, ?2, ?3)
	ON CONFLICT (Key) DO UPDATE SET Instance = excluded.Instance, LastLockTime = excluded.LastLockTime`,
		pruneNodes: `DELETE FROM ` + t + ` WHERE Key LIKE '` + nodeinfo.Pattern + `' AND Key <> ?1 AND LastLockTime < ?2`,
		nodes: `SELECT Key, COALESCE(Instance, ''), LastLockTime FROM ` + t + `
	WHERE Key LIKE '` + nodeinfo.Pattern + `' AND LastLockTime >= ?1 ORDER BY Key`,
		removeNode: `DELETE FROM ` + t + ` WHERE Key = ?1`,
	}
}

// backlogSQL reads the gauges of a table (see Storage.Backlog): ?1 is the
// version, ?2 now.
func backlogSQL(t string, received bool) string {
	group := `''`
	if received {
		group = `COALESCE("Group", '')`
	}
	due := `NextAttemptAt IS NOT NULL AND NextAttemptAt <= ?2`
	failed := `StatusName = 'Failed' AND NextAttemptAt IS NULL`
	return `SELECT ` + group + `, COUNT(*) FILTER (WHERE ` + due + `),
	COALESCE(MIN(NextAttemptAt) FILTER (WHERE ` + due + `), ''), COUNT(*) FILTER (WHERE ` + failed + `)
	FROM ` + quote(t) + ` WHERE Version = ?1 AND ((` + due + `) OR (` + failed + `)) GROUP BY 1`
}
