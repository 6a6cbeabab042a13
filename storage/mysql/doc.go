// Package mysql keeps the bus's Published and Received tables in MySQL 8.0+
// or MariaDB 10.6+, over database/sql with github.com/go-sql-driver/mysql:
// New(db, opts) returns a storage.Storage[*sql.Tx].
//
// # Connection
//
// The DSN must have parseTime=true and name a database; loc must be UTC
// (the driver's default) and the character set utf8mb4 (the driver's
// default). CheckDSN says what a DSN lacks, Open checks it and opens the
// *sql.DB, and Migrate checks the same on a connection (for a *sql.DB built
// from a driver Config) together with a strict sql_mode, so that a value
// too long is refused rather than cut. interpolateParams=true is
// recommended: without it the driver prepares, runs and closes each
// statement, three round trips instead of one.
//
//	db, err := mysql.Open("app:secret@tcp(db:3306)/shop?parseTime=true&interpolateParams=true")
//
// # Tables
//
// The tables are CAP's: `cap.published` and `cap.received` (the prefix and
// the dot inside one identifier, as DotNetCore.CAP names them;
// Options.TableNamePrefix) in the connection's database, InnoDB, utf8mb4,
// with CAP's columns and LONGTEXT Content, plus `NextAttemptAt` (when the
// row is next due: the claim lease) and, on received, `MessageId` with a
// unique index on (`MessageId`, `Group`) that de-duplicates deliveries. Times
// are UTC in DATETIME(6) columns, written and compared with
// UTC_TIMESTAMP(6), whatever the session's time zone.
//
// Migrate creates what is missing under a named lock (GET_LOCK), so several
// instances may start at once. On a database created by DotNetCore.CAP it
// adds the columns and indexes, widens CAP's second-precision datetime
// columns to microseconds (a rebuild of the table), and makes CAP's pending
// rows (Scheduled or Failed below 50 retries, Delayed, Queued) due. CAP's
// `cap.lock` table and its Version index are left alone. It refuses servers
// without FOR UPDATE SKIP LOCKED (MySQL before 8.0, MariaDB before 10.6)
// with ErrServerVersion.
//
// Claims use (`Version`, `NextAttemptAt`), the collector's deletes CAP's
// (`ExpiresAt`, `StatusName`) and the dashboard's status pages
// (`StatusName`, `Added`); TestExplainPlans checks the plans
// (CAP_TEST_EXPLAIN_ROWS rows).
//
// # Claims and outcomes
//
// A claim reads due rows with FOR UPDATE SKIP LOCKED and pushes their
// NextAttemptAt a lease ahead in one READ COMMITTED transaction, so
// concurrent instances never receive the same row and no gap lock holds up
// inserts; a crashed instance's rows come back when their lease ends.
// Inserts of many rows are one multi-row INSERT, and outcomes of many rows
// one UPDATE joined to a derived table of them. The storage's own
// transactions run again when InnoDB picks them as a deadlock victim.
//
// # Notifications
//
// MySQL has no LISTEN/NOTIFY. The bus hands over the rows of InTx at
// commit; for rows committed with a plain tx.Commit, Notifications reads
// the largest Id of the published table every Options.NotifyInterval
// (100 ms by default; one primary-key lookup) and wakes the bus when it
// grew, so that they are dispatched within about that interval. A
// transaction that commits after one holding a later message id is not
// seen this way and waits for the bus's poll (cap.Options.PollInterval).
package mysql
