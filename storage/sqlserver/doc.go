// Package sqlserver keeps the bus's Published and Received tables in SQL
// Server, through database/sql and github.com/microsoft/go-mssqldb. New
// returns a storage.Storage[*sql.Tx]: business code publishes in a *sql.Tx
// of the same database. The storage also implements storage.Namer,
// storage.Leaser (one expiry collector at a time), storage.Pinger,
// storage.BacklogReader (the outbox gauges), storage.ReceivedChecker (a
// plain handler's row written once, with its outcome),
// storage.NodeRegistry (the dashboard's instances) and
// storage.HistoryReader (the dashboard's 24-hour history).
//
// # Tables
//
// The tables are CAP's (schema "cap" by default, Options.Schema):
// [cap].[Published] and [cap].[Received] with CAP's columns (nvarchar,
// nvarchar(max) Content, datetime2(7) times) and primary keys
// ([PK_cap.Published]), plus a [NextAttemptAt] column (when the row is next
// due: the claim lease) and, on Received, [MessageId] with a unique index
// on ([MessageId], [Group]) that de-duplicates deliveries. It is filtered
// (WHERE [MessageId] IS NOT NULL), since SQL Server's unique indexes count
// NULLs as equal and CAP's rows have none. MessageId has a binary
// collation, so ids compare exactly; Group is CAP's column and compares in
// the database's collation (case-insensitive by default, trailing spaces
// ignored), so two groups differing only in case count as one there. All
// times are UTC
// (SYSUTCDATETIME()), and due times are compared with the database's
// clock.
//
// Migrate creates what is missing (IF SCHEMA_ID / OBJECT_ID / COL_LENGTH
// ... IS NULL, indexes checked in sys.indexes) in one transaction holding
// an application lock (sp_getapplock), so several instances may start at
// once. On a database created by DotNetCore.CAP it adds the columns and
// indexes and makes CAP's pending rows (Scheduled or Failed below 50
// retries, Delayed, Queued) due. CAP's (Version, ExpiresAt, StatusName)
// index is left alone. CAP's Lock table [cap].[Lock] is created with CAP's
// columns when absent, and used as it is when CAP created it.
//
// Indexes: a filtered index on ([Version], [NextAttemptAt]) holds only the
// rows still to be attempted, for the claims; CAP's
// ([ExpiresAt], [StatusName]) serves the collector's deletes (created
// filtered, WHERE [ExpiresAt] IS NOT NULL); ([StatusName], [Added]) serves
// the dashboard's status pages and counts. The filtered indexes need
// ANSI_NULLS and QUOTED_IDENTIFIER ON in the sessions that write the
// tables, which is how go-mssqldb and SqlClient connect.
//
// # Claims and outcomes
//
// Claim leases due rows with one statement: an UPDATE through a CTE that
// selects the TOP (n) due rows in due order WITH (ROWLOCK, READPAST,
// UPDLOCK), so concurrent instances skip each other's rows and rows of
// uncommitted transactions, and OUTPUT returns the leased rows. A crashed
// instance's rows come back when their lease ends. The collector deletes
// with DELETE TOP (n) ... WITH (ROWLOCK, READPAST).
//
// Received rows are inserted with INSERT ... SELECT ... WHERE NOT EXISTS
// under UPDLOCK, HOLDLOCK, so concurrent deliveries of one message wait for
// each other instead of failing on the unique index. Batches of rows,
// outcomes and ids are multi-row statements; SQL Server takes at most
// 2,100 parameters in a request, so a batch larger than one statement
// holds (262 published rows, 209 received rows, 262 outcomes, 2,097 or
// 2,098 ids) is split into several statements in one transaction. Work in a
// transaction of its own is run again when SQL Server chose it as a
// deadlock victim (error 1205).
//
// The bus finds rows committed with a plain tx.Commit by polling: this
// storage has no notifications.
//
// # Leases, nodes, gauges and history
//
// Leases and the nodes' heartbeats are rows of CAP's Lock table ([Key],
// [Instance], [LastLockTime]) under keys of their own, beside CAP's
// publish_retry_... and received_retry_... rows. A lease is taken or
// renewed with one MERGE ... WITH (HOLDLOCK), which holds the key's range
// from the match to the insert, so that two instances never both insert a
// new lease; its LastLockTime is when it runs out, by the server's clock
// (SYSUTCDATETIME()), and owners compare exactly (a binary collation). A
// node's row has a key starting with "cap.node:" and its LastLockTime is
// its last heartbeat; the rows no heartbeat renewed for a day are deleted.
//
// ReceivedExists reads up to 1,000 keys per statement through the unique
// (MessageId, Group) index; Backlog reads the due rows from the claims'
// index; CountByHour counts by hour (DATEADD(hour, DATEDIFF(hour, ...)))
// over the ([StatusName], [Added]) index.
//
// # Tests
//
// No SQL Server runs where this package is developed. The unit tests check
// the text and arguments of every statement, and run every method against
// a recording database/sql driver (the statements it sends, how it reads
// their results, how it wraps the driver's errors); the conformance suite
// (storagetest, with its Leaser, Pinger, Backlog, ReceivedExists,
// NodeRegistry and HistoryReader subtests) and the bus tests run against
// the server whose DSN is in CAP_TEST_SQLSERVER and are skipped without it.
package sqlserver
