package sqlserver

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/go-cap/cap/storage"
)

// lockResource is the sp_getapplock resource of the migration of a schema.
func (q *queries) lockResource() string {
	return "github.com/go-cap/cap/storage/sqlserver.migrate:" + q.schema
}

// lock takes the migration's application lock, owned by the transaction
// so that it is released when the transaction ends, and returns
// sp_getapplock's status: 0 or 1 when granted, negative otherwise. It
// waits as long as the statement's context allows.
func (q *queries) lock() stmt {
	return stmt{`DECLARE @r int;
EXEC @r = sp_getapplock @Resource = @p1, @LockMode = N'Exclusive', @LockOwner = N'Transaction', @LockTimeout = -1;
SELECT @r;`, []any{q.lockResource()}}
}

// createSchema creates the schema when absent. CREATE SCHEMA must be alone
// in its batch, hence EXEC.
func (q *queries) createSchema() string {
	return `IF SCHEMA_ID(` + literal(q.schema) + `) IS NULL EXEC(N'CREATE SCHEMA ` + quoteIdent(q.schema) + `')`
}

// tableExists returns 1 when the table exists.
func (tb *table) tableExists() string {
	return `SELECT CASE WHEN OBJECT_ID(` + tb.object + `, N'U') IS NULL THEN 0 ELSE 1 END`
}

// columnExists returns 1 when the table has the column.
func (tb *table) columnExists(column string) string {
	return `SELECT CASE WHEN COL_LENGTH(` + tb.object + `, ` + literal(column) + `) IS NULL THEN 0 ELSE 1 END`
}

// createTable is CAP's DDL (reference section 3.3) plus this storage's
// columns, when the table is absent.
func (tb *table) createTable() string {
	group, extra := "", ""
	if tb.t == storage.Received {
		group = "\n\t[Group] nvarchar(200) NULL,"
		extra = ",\n\t[MessageId] " + messageIDType
	}
	return `IF OBJECT_ID(` + tb.object + `, N'U') IS NULL
CREATE TABLE ` + tb.name + ` (
	[Id] bigint NOT NULL,
	[Version] nvarchar(20) NOT NULL,
	[Name] nvarchar(200) NOT NULL,` + group + `
	[Content] nvarchar(max) NULL,
	[Retries] int NOT NULL,
	[Added] datetime2(7) NOT NULL,
	[ExpiresAt] datetime2(7) NULL,
	[StatusName] nvarchar(50) NOT NULL,
	[NextAttemptAt] datetime2(7) NULL` + extra + `,
	CONSTRAINT ` + quoteIdent("PK_"+tb.prefix) + ` PRIMARY KEY CLUSTERED ([Id] ASC)
)`
}

// messageIDType is the type of the MessageId column. A binary collation
// compares ids exactly, as the storage's callers do: in the database's
// collation (case-insensitive by default) "a1" and "A1" would be one
// message. The Group column is CAP's and keeps the database's collation.
const messageIDType = `nvarchar(200) COLLATE Latin1_General_BIN2 NULL`

// addColumn adds a column to a table that lacks it (one CAP created).
func (tb *table) addColumn(column, def string) string {
	return `IF COL_LENGTH(` + tb.object + `, ` + literal(column) + `) IS NULL
ALTER TABLE ` + tb.name + ` ADD ` + quoteIdent(column) + ` ` + def
}

// indexName is the name of an index of the table, CAP's way:
// IX_cap.Published_ExpiresAt_StatusName.
func (tb *table) indexName(suffix string) string { return "IX_" + tb.prefix + "_" + suffix }

// createIndex creates an index when no index of that name exists on the
// table.
func (tb *table) createIndex(suffix, kind, def string) string {
	name := tb.indexName(suffix)
	return `IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(` + tb.object + `) AND name = ` +
		literal(name) + `)
CREATE ` + kind + ` INDEX ` + quoteIdent(name) + ` ON ` + tb.name + ` ` + def
}

// migrate returns the statements run after the table exists, each a batch
// of its own: SQL Server compiles a batch whole, and a statement that uses
// a column must not be compiled with the one that adds it.
//
// The filtered indexes need the SET options that go-mssqldb and SqlClient
// sessions have (ANSI_NULLS, QUOTED_IDENTIFIER ... ON) in every session
// that writes to the table.
func (tb *table) migrate() []string {
	stmts := []string{tb.addColumn("NextAttemptAt", "datetime2(7) NULL")}
	if tb.t == storage.Received {
		stmts = append(stmts,
			tb.addColumn("MessageId", messageIDType),
			// De-duplication of deliveries per group. CAP's rows have no
			// MessageId; SQL Server's unique indexes count NULLs as equal,
			// so they stay out of it. The storage writes N'' for an empty
			// group, so the index sees it.
			tb.createIndex("MessageId_Group", "UNIQUE NONCLUSTERED",
				`([MessageId], [Group]) WHERE [MessageId] IS NOT NULL`))
	}
	claimIndex := `([Version], [NextAttemptAt]) WHERE [NextAttemptAt] IS NOT NULL`
	if tb.t == storage.Received {
		// A claim for some groups reads the group from the index.
		claimIndex = `([Version], [NextAttemptAt]) INCLUDE ([Group]) WHERE [NextAttemptAt] IS NOT NULL`
	}
	stmts = append(stmts,
		// CAP's index for the collector's delete, created without the rows
		// that never expire (one CAP made is kept as it is). CAP's other
		// index, on (Version, ExpiresAt, StatusName) INCLUDE (Id, Content,
		// Retries, Added), serves CAP's retry query, which this storage
		// does not run, and is not created.
		tb.createIndex("ExpiresAt_StatusName", "NONCLUSTERED",
			`([ExpiresAt], [StatusName]) WHERE [ExpiresAt] IS NOT NULL`),
		// Claims: due rows of a version in due order; the rows that need no
		// more attempts (most of the table) stay out of it.
		tb.createIndex("Version_NextAttemptAt", "NONCLUSTERED", claimIndex),
		// The dashboard lists rows of one status, newest first, and counts
		// them.
		tb.createIndex("StatusName_Added", "NONCLUSTERED", `([StatusName], [Added])`),
	)
	return stmts
}

// backfill gives CAP's pending rows a NextAttemptAt after an upgrade: CAP
// retries Scheduled and Failed rows below its 50 attempts and sends
// Delayed and Queued rows at ExpiresAt, so they must stay due. CAP wrote
// local times, so a delayed row's due time is as good as the server's
// offset from UTC.
func (tb *table) backfill() string {
	return `UPDATE ` + tb.name + ` SET [NextAttemptAt] = CASE
	WHEN [StatusName] IN (N'Delayed', N'Queued') THEN COALESCE([ExpiresAt], ` + nowUTC + `)
	ELSE ` + nowUTC + ` END
WHERE [NextAttemptAt] IS NULL AND (([StatusName] IN (N'Scheduled', N'Failed') AND [Retries] < 50)
	OR [StatusName] IN (N'Delayed', N'Queued'))`
}

// Migrate creates the schema, the tables and their indexes when absent,
// and upgrades tables created by DotNetCore.CAP in place: it adds the
// NextAttemptAt and MessageId columns and the indexes, and makes CAP's
// pending rows due. It creates CAP's Lock table when absent, for the
// leases and the nodes' heartbeats; one CAP created is used as it is, its
// rows left alone. It runs in one transaction holding an application lock
// (sp_getapplock), so instances starting together migrate one after the
// other; it is idempotent.
//
// Index builds on a large existing table block writes to it while they
// run.
func (s *Store) Migrate(ctx context.Context) (err error) {
	err = s.retry(ctx, func() error { return s.migrate(ctx) })
	if err != nil {
		return fmt.Errorf("sqlserver: migrate: %w", err)
	}
	return nil
}

func (s *Store) migrate(ctx context.Context) (err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	lock := s.q.lock()
	var status int
	if err := tx.QueryRowContext(ctx, lock.query, lock.args...).Scan(&status); err != nil {
		return fmt.Errorf("lock: %w", err)
	}
	if status < 0 {
		return fmt.Errorf("lock: sp_getapplock returned %d", status)
	}
	if _, err := tx.ExecContext(ctx, s.q.createSchema()); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, s.q.createLock()); err != nil {
		return fmt.Errorf("lock table: %w", err)
	}
	for _, t := range []storage.Table{storage.Received, storage.Published} {
		if err := s.migrateTable(ctx, tx, s.q.table(t)); err != nil {
			return fmt.Errorf("%s: %w", t, err)
		}
	}
	return tx.Commit()
}

func (s *Store) migrateTable(ctx context.Context, tx *sql.Tx, tb *table) error {
	var existed, has int
	if err := tx.QueryRowContext(ctx, tb.tableExists()).Scan(&existed); err != nil {
		return err
	}
	if existed == 1 {
		if err := tx.QueryRowContext(ctx, tb.columnExists("NextAttemptAt")).Scan(&has); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, tb.createTable()); err != nil {
		return err
	}
	for _, q := range tb.migrate() {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	if existed == 1 && has == 0 {
		if _, err := tx.ExecContext(ctx, tb.backfill()); err != nil {
			return err
		}
	}
	return nil
}
