package postgres

import (
	"fmt"
	"hash/fnv"
	"slices"
	"strings"

	"github.com/go-cap/cap/storage"
)

// nowUTC is the database's clock in UTC, as stored in the TIMESTAMP (without
// time zone) columns. statement_timestamp() rather than now(): in a caller's
// long transaction now() is the transaction's start, which would make a row
// inserted late in it look older than it is and shorten its lease. It is
// stable within a statement, so indexes still serve comparisons with it.
const nowUTC = `(statement_timestamp() AT TIME ZONE 'UTC')`

// micros turns a bigint parameter holding microseconds into an interval.
func micros(param string) string {
	return "(" + param + "::bigint * interval '1 microsecond')"
}

// queries holds every statement of the storage, built once from the
// validated schema name.
type queries struct {
	schema  string
	channel string // NOTIFY channel for new published rows
	lockKey int64  // advisory lock key of the migration

	tables [2]tableQueries // indexed by storage.Table
	exists string          // which received keys have a row (exists.go)

	// Migration.
	lock            string // the migration's advisory lock, held until commit
	createSchema    string
	columnExists    string
	tableExists     string
	indexDefinition string
	listen          string
}

// tableQueries are the statements on one message table.
type tableQueries struct {
	name         string // quoted, qualified table name
	insert       string // published: many rows from arrays; received: one row
	insertBatch  string // received: many rows from arrays, duplicates skipped
	insertNotify string // insert that also notifies listeners (published only)
	claim        string
	reschedule   string
	outcomes     string
	outcomesTx   string
	existing     string
	deleteExp    string
	get          string
	list         [filterAll]string // by listFilter
	count        [filterAll]string
	// listScheduled and countScheduled list the Scheduled rows, by the
	// other filters, in two arms: pending rows through the claims' index,
	// the others through the status index.
	listScheduled, countScheduled [filterAll]string
	counts                        string
	delete                        string

	// insertOne and insertOneNotify store one published row from scalars.
	insertOne, insertOneNotify string
	// insertOneExec stores one published row and returns nothing: what
	// PublishTx runs, which needs none of the values the database fills in.
	insertOneExec string

	createTable string
	migrate     []string // statements run after the table exists
	backfill    string   // gives CAP's own pending rows a NextAttemptAt
}

// listFilter is the set of filters of a dashboard query.
type listFilter uint8

const (
	filterStatus listFilter = 1 << iota
	filterName
	filterContent
	filterGroup
	filterAll // the number of combinations
)

// listFilters are the conditions of the filters, in parameter order.
var listFilters = []struct {
	bit  listFilter
	cond string
}{
	// The redundant condition lets a generic plan use the status index,
	// which leaves out pending Scheduled rows (see statusIndexWhere).
	{filterStatus, `"StatusName" = $%d AND "StatusName" <> 'Scheduled'`},
	{filterName, `"Name" ILIKE $%d`},
	{filterContent, `"Content" ILIKE $%d`},
	{filterGroup, `"Group" = $%d`},
}

// quoteIdent quotes a validated identifier.
func quoteIdent(s string) string { return `"` + s + `"` }

// notifyChannel names the channel of a schema: one per schema, so storages
// in different schemas of one database do not wake each other. PostgreSQL
// limits channel names to 63 bytes; a truncated name only risks a spurious
// wake-up.
func notifyChannel(schema string) string {
	c := schema + "_published"
	if len(c) > 63 {
		c = c[:63]
	}
	return c
}

// newQueries builds the statements for schema, which must have passed
// storage.ValidateIdentifier.
func newQueries(schema string, syncCommit bool) *queries {
	h := fnv.New64a()
	h.Write([]byte("github.com/go-cap/cap/storage/postgres.migrate:" + schema))
	q := &queries{
		schema:  schema,
		channel: notifyChannel(schema),
		lockKey: int64(h.Sum64()),

		lock:         `SELECT pg_advisory_xact_lock($1)`,
		createSchema: `CREATE SCHEMA IF NOT EXISTS ` + quoteIdent(schema),
		tableExists: `SELECT EXISTS (SELECT 1 FROM information_schema.tables
			WHERE table_schema = $1 AND table_name = $2)`,
		columnExists: `SELECT EXISTS (SELECT 1 FROM information_schema.columns
			WHERE table_schema = $1 AND table_name = $2 AND column_name = $3)`,
		indexDefinition: `SELECT COALESCE((SELECT indexdef FROM pg_indexes
			WHERE schemaname = $1 AND indexname = $2), '')`,
	}
	q.listen = `LISTEN ` + quoteIdent(q.channel)
	q.tables[storage.Published] = newTableQueries(schema, storage.Published, q.channel, syncCommit)
	q.tables[storage.Received] = newTableQueries(schema, storage.Received, q.channel, syncCommit)
	q.exists = existsQuery(q.tables[storage.Received].name)
	return q
}

// asyncCommit is a FROM item that makes the transaction of the statement it
// is part of commit without waiting for its WAL to reach the disk. The
// bus's bookkeeping statements (claims, leases, outcomes, expiry deletes)
// run alone, in a transaction of their own, and carry it unless
// Options.SyncCommit; a statement in a caller's transaction never does.
const asyncCommit = `(SELECT set_config('synchronous_commit', 'off', true)) AS async_commit`

func newTableQueries(schema string, t storage.Table, channel string, syncCommit bool) tableQueries {
	tbl := t.String()
	// async adds asyncCommit to a bookkeeping statement after sep: "," in a
	// FROM list, "FROM" or "USING" where there is none.
	async := func(sep string) string {
		if syncCommit {
			return ""
		}
		return sep + " " + asyncCommit
	}
	name := quoteIdent(schema) + "." + quoteIdent(tbl)
	received := t == storage.Received

	// The columns of a Record, in scanRecord's order. Published has no Group
	// or MessageId column; empty strings keep one scan for both tables.
	cols := func(alias string) string {
		group, msgID := `''`, `''`
		if received {
			group = `COALESCE(` + alias + `"Group", '')`
			msgID = `COALESCE(` + alias + `"MessageId", '')`
		}
		return alias + `"Id", ` + alias + `"Version", ` + alias + `"Name", ` + group + `, ` + msgID + `, ` +
			alias + `"Content", ` + alias + `"Retries", ` + alias + `"Added", ` + alias + `"ExpiresAt", ` +
			alias + `"StatusName", ` + alias + `"NextAttemptAt"`
	}

	q := tableQueries{name: name}

	// A Delayed row expires when it is due, as in CAP; others ExpiresIn
	// after now when it is positive.
	const expires = `CASE WHEN v.status = 'Delayed' AND v.nxt IS NOT NULL THEN v.nxt
		WHEN v.expires > 0 THEN v.t + (v.expires * interval '1 microsecond') END`
	if received {
		q.insert = `INSERT INTO ` + name + ` ("Id", "Version", "Name", "Group", "MessageId", "Content", "Retries",
				"Added", "ExpiresAt", "StatusName", "NextAttemptAt")
			SELECT v.id, v.version, v.name, v.grp, v.msgid, v.content, v.retries, v.t, ` + expires + `, v.status, v.nxt
			FROM (SELECT $1::bigint AS id, $2::text AS version, $3::text AS name, $4::text AS grp,
					$5::text AS msgid, $6::text AS content, $7::int AS retries, $8::text AS status,
					$10::bigint AS expires, n.t,
					CASE WHEN $11::bool THEN NULL ELSE n.t + ` + micros("$9") + ` END AS nxt
				FROM (SELECT ` + nowUTC + ` AS t) AS n) AS v
			ON CONFLICT ("MessageId", "Group") DO NOTHING
			RETURNING "Added", "ExpiresAt", "NextAttemptAt"`
		// Rows in key order, so two batches that share keys take their
		// locks in the same order and never deadlock; the caller removes
		// duplicates within a batch.
		q.insertBatch = `INSERT INTO ` + name + ` ("Id", "Version", "Name", "Group", "MessageId", "Content", "Retries",
				"Added", "ExpiresAt", "StatusName", "NextAttemptAt")
			SELECT v.id, v.version, v.name, v.grp, v.msgid, v.content, v.retries, v.t, ` + expires + `, v.status, v.nxt
			FROM (SELECT r.*, n.t,
					CASE WHEN r.terminal THEN NULL ELSE n.t + (r.due * interval '1 microsecond') END AS nxt
				FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[],
						$8::text[], $9::bigint[], $10::bigint[], $11::bool[])
					AS r(id, version, name, grp, msgid, content, retries, status, due, expires, terminal),
					(SELECT ` + nowUTC + ` AS t) AS n) AS v
			ORDER BY v.msgid, v.grp
			ON CONFLICT ("MessageId", "Group") DO NOTHING
			RETURNING "Id", "Added", "ExpiresAt", "NextAttemptAt"`
	} else {
		// Many rows in one round trip: one array per column.
		q.insert = `INSERT INTO ` + name + ` ("Id", "Version", "Name", "Content", "Retries",
				"Added", "ExpiresAt", "StatusName", "NextAttemptAt")
			SELECT v.id, v.version, v.name, v.content, v.retries, v.t, ` + expires + `, v.status, v.nxt
			FROM (SELECT r.*, n.t,
					CASE WHEN r.terminal THEN NULL ELSE n.t + (r.due * interval '1 microsecond') END AS nxt
				FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[],
						$7::bigint[], $8::bool[], $9::bigint[])
					AS r(id, version, name, content, retries, status, due, terminal, expires),
					(SELECT ` + nowUTC + ` AS t) AS n) AS v
			RETURNING "Id", "Added", "ExpiresAt", "NextAttemptAt"`
		// One row, what PublishTx stores: scalars cost both sides less than
		// arrays (about 7 % more publishing transactions per second with 16
		// writers on two cores).
		q.insertOne = `INSERT INTO ` + name + ` ("Id", "Version", "Name", "Content", "Retries",
				"Added", "ExpiresAt", "StatusName", "NextAttemptAt")
			SELECT $1::bigint, $2::text, $3::text, $4::text, $5::int, v.t, ` + expires + `, v.status, v.nxt
			FROM (SELECT n.t, $6::text AS status, $9::bigint AS expires,
					CASE WHEN $8::bool THEN NULL ELSE n.t + ` + micros("$7") + ` END AS nxt
				FROM (SELECT ` + nowUTC + ` AS t) AS n) AS v
			RETURNING "Id", "Added", "ExpiresAt", "NextAttemptAt"`
		// No RETURNING, and VALUES rather than a SELECT: the least work on
		// both sides for the statement every PublishTx runs.
		q.insertOneExec = `INSERT INTO ` + name + ` ("Id", "Version", "Name", "Content", "Retries",
				"Added", "ExpiresAt", "StatusName", "NextAttemptAt")
			VALUES ($1::bigint, $2::text, $3::text, $4::text, $5::int, ` + nowUTC + `,
				CASE WHEN $6::text = 'Delayed' AND NOT $8::bool THEN ` + nowUTC + ` + ` + micros("$7") + `
					WHEN $9::bigint > 0 THEN ` + nowUTC + ` + ` + micros("$9") + ` END,
				$6::text, CASE WHEN $8::bool THEN NULL ELSE ` + nowUTC + ` + ` + micros("$7") + ` END)`
		// The notification is queued by the transaction and delivered only
		// when it commits. A CTE with a volatile function is evaluated once.
		notify := func(insert string) string {
			return `WITH ins AS (` + insert + `),
			notified AS (SELECT pg_notify('` + channel + `', ''))
			SELECT ins.* FROM ins, notified`
		}
		q.insertNotify = notify(q.insert)
		q.insertOneNotify = notify(q.insertOne)
	}

	// The Received claim takes ClaimRequest.Groups as $4 (NULL: every group).
	claimGroups := ""
	if received {
		claimGroups = ` AND ($4::text[] IS NULL OR "Group" = ANY($4::text[]))`
	}
	// The sub-select locks due rows, skipping those another claimer holds;
	// the update pushes them a lease ahead. RETURNING gives the old due time
	// to order the batch by. The ANY(ARRAY(...)) condition makes the update
	// find its rows through the primary key whatever the planner thinks of
	// the join.
	q.claim = `WITH due AS (
			SELECT "Id", "NextAttemptAt" FROM ` + name + `
			WHERE "Version" = $1 AND "NextAttemptAt" IS NOT NULL AND "NextAttemptAt" <= ` + nowUTC + claimGroups + `
			ORDER BY "NextAttemptAt"
			LIMIT $2
			FOR UPDATE SKIP LOCKED)
		UPDATE ` + name + ` AS r SET "NextAttemptAt" = ` + nowUTC + ` + ` + micros("$3") + `
		FROM due` + async(",") + ` WHERE r."Id" = due."Id" AND r."Id" = ANY(ARRAY(SELECT "Id" FROM due))
		RETURNING ` + cols("r.") + `, due."NextAttemptAt"`

	q.reschedule = `UPDATE ` + name + ` SET "NextAttemptAt" = ` + nowUTC + ` + ` + micros("$2") + `
		` + async("FROM") + `
		WHERE "Id" = ANY($1::bigint[]) AND "NextAttemptAt" IS NOT NULL`

	// Outcomes of many rows in one statement. A NULL content keeps the
	// stored one. from is what the bookkeeping variant adds to FROM.
	outcomes := func(from string) string {
		return `UPDATE ` + name + ` AS r SET
			"StatusName" = o.status,
			"Retries" = o.retries,
			"Content" = COALESCE(o.content, r."Content"),
			"ExpiresAt" = CASE WHEN o.expires > 0 THEN
				(CASE WHEN o.from_added THEN r."Added" ELSE n.t END) + (o.expires * interval '1 microsecond') END,
			"NextAttemptAt" = CASE WHEN o.retry THEN n.t + (o.retry_in * interval '1 microsecond') END
		FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::bigint[], $6::bool[], $7::bool[],
				$8::bigint[], $9::bool[]) AS o(id, status, retries, content, expires, from_added, retry, retry_in, force),
			(SELECT ` + nowUTC + ` AS t) AS n` + from + `
		WHERE r."Id" = o.id`
	}
	// A success stands unless the outcome is forced: a late outcome of an
	// instance whose lease ended must not undo it.
	q.outcomes = outcomes(async(",")) + ` AND (o.force OR r."StatusName" <> 'Succeeded')`
	// In a caller's transaction a row another instance already completed is
	// left alone; the ids returned tell which rows were written. It commits
	// as the caller's transaction does.
	q.outcomesTx = outcomes("") + ` AND r."StatusName" <> 'Succeeded' RETURNING r."Id"`
	q.existing = `SELECT "Id" FROM ` + name + ` WHERE "Id" = ANY($1::bigint[])`

	// The ids are collected first (an InitPlan), so the delete goes
	// through the primary key rather than joining the whole table.
	q.deleteExp = `DELETE FROM ` + name + ` ` + async("USING") + ` WHERE "Id" = ANY(ARRAY(
			SELECT "Id" FROM ` + name + `
			WHERE "ExpiresAt" < ` + nowUTC + ` AND "StatusName" IN ('Succeeded', 'Failed')
			LIMIT $1
			FOR UPDATE SKIP LOCKED))`

	q.get = `SELECT ` + cols("") + ` FROM ` + name + ` WHERE "Id" = $1`

	// One statement per combination of filters: a single statement with
	// optional filters would let a prepared statement's generic plan scan
	// the whole table even for a status page.
	for f := range listFilter(filterAll) {
		if f&filterGroup != 0 && !received {
			continue // no Group column
		}
		var conds []string
		for _, c := range listFilters {
			if f&c.bit != 0 {
				conds = append(conds, fmt.Sprintf(c.cond, len(conds)+1))
			}
		}
		where := func(extra ...string) string {
			all := append(slices.Clone(conds), extra...)
			if len(all) == 0 {
				return ""
			}
			return ` WHERE ` + strings.Join(all, ` AND `)
		}
		page := `
			ORDER BY "Added" DESC, "Id" DESC LIMIT $` + fmt.Sprint(len(conds)+1) + ` OFFSET $` + fmt.Sprint(len(conds)+2)
		q.list[f] = `SELECT ` + cols("") + ` FROM ` + name + where() + page
		q.count[f] = `SELECT count(*) FROM ` + name + where()
		if f&filterStatus == 0 {
			// Scheduled rows in two arms, each read through the index that
			// holds it: pending ones (NextAttemptAt set) through the
			// claims' index, the others through the status index.
			pending := where(`"StatusName" = 'Scheduled'`, `"NextAttemptAt" IS NOT NULL`)
			idle := where(`"StatusName" = 'Scheduled'`, `"NextAttemptAt" IS NULL`)
			q.listScheduled[f] = `SELECT * FROM (
				(SELECT ` + cols("") + ` FROM ` + name + pending + `)
				UNION ALL (SELECT ` + cols("") + ` FROM ` + name + idle + `)) AS s` + page
			q.countScheduled[f] = `SELECT (SELECT count(*) FROM ` + name + pending + `) +
				(SELECT count(*) FROM ` + name + idle + `)`
		}
	}
	q.counts = `SELECT "StatusName", count(*) FROM ` + name + ` GROUP BY "StatusName"`
	q.delete = `DELETE FROM ` + name + ` WHERE "Id" = ANY($1::bigint[])`

	// CAP's DDL (reference section 3.1) plus our columns.
	group := ""
	if received {
		group = `
			"Group" VARCHAR(200) NULL,`
	}
	extra := `,
			"NextAttemptAt" TIMESTAMP NULL`
	if received {
		extra += `,
			"MessageId" VARCHAR(200) NULL`
	}
	q.createTable = `CREATE TABLE IF NOT EXISTS ` + name + ` (
			"Id" BIGINT PRIMARY KEY NOT NULL,
			"Version" VARCHAR(20) NOT NULL,
			"Name" VARCHAR(200) NOT NULL,` + group + `
			"Content" TEXT NULL,
			"Retries" INT NOT NULL,
			"Added" TIMESTAMP NOT NULL,
			"ExpiresAt" TIMESTAMP NULL,
			"StatusName" VARCHAR(50) NOT NULL` + extra + `
		)`
	idx := func(suffix, def string) string {
		return `CREATE INDEX IF NOT EXISTS ` + quoteIdent("idx_"+tbl+"_"+suffix) + ` ON ` + name + ` ` + def
	}
	// Columns first: an existing CAP table lacks them, and indexes use them.
	q.migrate = []string{`ALTER TABLE ` + name + ` ADD COLUMN IF NOT EXISTS "NextAttemptAt" TIMESTAMP NULL`}
	if received {
		q.migrate = append(q.migrate,
			`ALTER TABLE `+name+` ADD COLUMN IF NOT EXISTS "MessageId" VARCHAR(200) NULL`,
			// De-duplication of deliveries per group. The storage writes ''
			// rather than NULL for an empty group, so the index sees it.
			`CREATE UNIQUE INDEX IF NOT EXISTS `+quoteIdent("idx_received_MessageId_Group")+
				` ON `+name+` ("MessageId", "Group")`)
	}
	q.migrate = append(q.migrate,
		// CAP's index for the collector's delete, without the rows that
		// never expire: a row is inserted with no ExpiresAt, so the insert
		// every PublishTx runs does not touch it. CAP's deletes (ExpiresAt
		// < a time) use it all the same. CAP's other index, on ("Version",
		// "ExpiresAt", "StatusName"), serves CAP's retry query, which this
		// storage does not run: not creating it saves every insert and
		// status update an index write. (Both changes together with the
		// insert without RETURNING: publish-overhead 0.816 -> 0.87.)
		idx("ExpiresAt_StatusName", `("ExpiresAt", "StatusName") WHERE "ExpiresAt" IS NOT NULL`),
		// Claims: due rows of a version in due order. Rows that need no
		// more attempts (most of the table) stay out of it.
		idx("Version_NextAttemptAt", `("Version", "NextAttemptAt") WHERE "NextAttemptAt" IS NOT NULL`),
		// The dashboard lists rows of one status, newest first. Rows
		// awaiting a send or a handler are Scheduled with a NextAttemptAt,
		// and left out: the claims' index holds them, and the insert every
		// PublishTx runs, and every claim, writes one index entry less.
		idx("StatusName_Added", `("StatusName", "Added") WHERE `+statusIndexWhere),
	)
	// CAP retries Scheduled and Failed rows below its 50 attempts and sends
	// Delayed and Queued rows at ExpiresAt; after an upgrade they must stay
	// due. CAP wrote local times, so a delayed row's due time is as good as
	// the server's offset from UTC.
	q.backfill = `UPDATE ` + name + ` SET "NextAttemptAt" = CASE
			WHEN "StatusName" IN ('Delayed', 'Queued') THEN COALESCE("ExpiresAt", ` + nowUTC + `)
			ELSE ` + nowUTC + ` END
		WHERE "NextAttemptAt" IS NULL AND (("StatusName" IN ('Scheduled', 'Failed') AND "Retries" < 50)
			OR "StatusName" IN ('Delayed', 'Queued'))`
	return q
}

// statusIndexWhere is the predicate of the dashboard's status index.
const statusIndexWhere = `"StatusName" <> 'Scheduled' OR "NextAttemptAt" IS NULL`

// statusIndex is the dashboard's index on (StatusName, Added). Tables
// made before it left out pending rows have it whole; Migrate replaces it.
func statusIndex(t storage.Table) string { return "idx_" + t.String() + "_StatusName_Added" }

// versionIndex is CAP's index on (Version, ExpiresAt, StatusName). CAP 8.3.1
// and 8.3.2 created it with INCLUDE ("Id", "Content", "Retries", "Added"),
// which fails inserts of large contents; Migrate drops that variant. This
// storage does not create the index: none of its queries uses it.
func versionIndex(t storage.Table) string {
	return "idx_" + t.String() + "_Version_ExpiresAt_StatusName"
}

// dropIndex drops an index of the schema.
func (q *queries) dropIndex(index string) string {
	return `DROP INDEX IF EXISTS ` + quoteIdent(q.schema) + `.` + quoteIdent(index)
}

// likePattern makes a case-insensitive substring pattern for ILIKE, or ""
// for no filter.
func likePattern(s string) string {
	if s == "" {
		return ""
	}
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return "%" + r.Replace(s) + "%"
}
