// Package postgres keeps the bus's Published and Received tables in
// PostgreSQL, with pgx v5. One implementation has two faces:
//
//   - New(pool, opts) over a *pgxpool.Pool: a storage.Storage[pgx.Tx], for
//     services that use pgx directly;
//   - NewSQL(db, opts) over a *sql.DB opened with pgx's stdlib driver
//     (sql.Open("pgx", dsn), stdlib.OpenDB, stdlib.OpenDBFromPool): a
//     storage.Storage[*sql.Tx].
//
// # Tables
//
// The tables are CAP's (schema "cap" by default, Options.Schema):
// "cap"."published" and "cap"."received" with CAP's columns and indexes,
// plus a "NextAttemptAt" column (when the row is next due: the claim
// lease) and, on received, "MessageId" with a unique index on ("MessageId",
// "Group") that de-duplicates deliveries. All times are UTC, in TIMESTAMP
// columns, and due times are compared with the database's clock.
//
// Migrate creates what is missing, in one transaction under an advisory
// lock, so several instances may start at once. On a database created by
// DotNetCore.CAP it adds the columns, makes CAP's pending rows (Scheduled
// or Failed below 50 retries, Delayed, Queued) due, and drops the INCLUDE
// variant of CAP 8.3.1–8.3.2's Version index, which rejects large
// contents. CAP's "lock" table is left alone.
//
// Claims, the collector's deletes and the dashboard's status pages use
// indexes: a partial index on ("Version", "NextAttemptAt") holds only the
// rows still to be attempted, CAP's ("ExpiresAt", "StatusName") serves the
// deletes (created partial, WHERE "ExpiresAt" IS NOT NULL, so that inserts
// do not write to it), and ("StatusName", "Added") the status pages. CAP's
// ("Version", "ExpiresAt", "StatusName") serves only CAP's own retry query
// and is not created; one CAP made is kept. TestExplainPlans
// checks the plans on a large table (CAP_TEST_EXPLAIN_ROWS rows).
//
// # Claims and outcomes
//
// Claim leases due rows with one UPDATE over a FOR UPDATE SKIP LOCKED
// sub-select, so concurrent instances never receive the same row; a
// crashed instance's rows come back when their lease ends. Inserts of many
// rows and outcomes of many rows are single statements over arrays.
//
// # Notifications
//
// A transaction that inserts rows due at once (a plain tx.Commit the bus
// does not see) runs pg_notify, which PostgreSQL delivers only if it
// commits. Notifications LISTENs on a dedicated connection and wakes the
// bus, which then dispatches within milliseconds; its poll stays as a
// fallback, and the listener reconnects with backoff when its connection
// drops.
//
// A NOTIFY takes a database-wide lock while its transaction commits, which
// serialises the commits of concurrent publishers. So a storage sends at
// most one per Options.NotifyInterval (50 ms by default), and the listener
// wakes the bus again shortly after each notification for the
// transactions that skipped theirs. BenchmarkPublishTx measures it: with
// 16 writers on a two-core machine, a NOTIFY in every transaction cost a
// third to a half of the committed transactions per second, the limited
// mode at most a tenth.
//
// The listener's connection is opened outside the pool. By default it uses
// the pool's configuration (New) or the configuration of a connection of
// the *sql.DB (NewSQL; host, credentials and TLS included). Set
// Options.ListenConnString to connect elsewhere, for example directly to
// PostgreSQL when the pool goes through PgBouncer. When LISTEN is not
// available at all, Options.DisableNotify turns off both NOTIFY and LISTEN
// and the bus polls.
package postgres
