package sqlserver

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/go-cap/cap/storage"
)

var (
	_ storage.Leaser        = (*Store)(nil)
	_ storage.Pinger        = (*Store)(nil)
	_ storage.BacklogReader = (*Store)(nil)
)

// The lock table is CAP's [cap].[Lock] ([Key], [Instance], [LastLockTime]).
// For the bus's leases LastLockTime is when the lease runs out, so that
// each holder's own ttl counts, whatever the ttl of the instance that asks.
// CAP uses the keys publish_retry_{version} and received_retry_{version};
// the bus's leases and nodes have keys of their own, so both share the
// table.

// errDuplicateKey and errDuplicateIndexKey: an insert found the key taken.
const (
	errDuplicateKey      = 2627 // violation of a PRIMARY KEY or UNIQUE constraint
	errDuplicateIndexKey = 2601 // duplicate key row in a unique index
)

// ownerCollation compares lease owners exactly: the Instance column has the
// database's collation, case-insensitive by default.
const ownerCollation = `COLLATE Latin1_General_BIN2`

// lockTable is the Lock table of the schema: [cap].[Lock].
func (q *queries) lockTable() string { return quoteIdent(q.schema) + `.[Lock]` }

// createLock is CAP's DDL of the Lock table (reference section 3.3), when
// the table is absent. CAP's primary key ignores duplicate keys
// (IGNORE_DUP_KEY = ON): CAP inserts its rows at every start and relies on
// it, so a table created here keeps it. The MERGE statements below do not
// depend on it: MERGE raises duplicate keys whatever the option.
func (q *queries) createLock() string {
	return `IF OBJECT_ID(` + literal(q.lockTable()) + `, N'U') IS NULL
CREATE TABLE ` + q.lockTable() + ` (
	[Key] nvarchar(128) NOT NULL,
	[Instance] nvarchar(256) NOT NULL,
	[LastLockTime] datetime2(7) NOT NULL,
	CONSTRAINT ` + quoteIdent("PK_"+q.schema+".Lock") + ` PRIMARY KEY CLUSTERED ([Key] ASC) WITH (IGNORE_DUP_KEY = ON)
)`
}

// acquireLease inserts the lease, or takes it over when it is the caller's
// or has run out, and returns a row only when the caller holds it then.
// HOLDLOCK keeps the key's range locked from the match to the insert, so
// two instances asking for a lease not yet in the table do not both insert
// it. Arguments: name, owner, ttl in microseconds.
func (q *queries) acquireLease(name, owner string, ttl time.Duration) stmt {
	return stmt{`MERGE ` + q.lockTable() + ` WITH (HOLDLOCK) AS l
USING (SELECT @p1 AS k, @p2 AS inst, ` + addMicros("@p3", nowUTC) + ` AS ends) AS v
ON l.[Key] = v.k
WHEN MATCHED AND (l.[Instance] = v.inst ` + ownerCollation + ` OR l.[LastLockTime] < ` + nowUTC + `) THEN
	UPDATE SET [Instance] = v.inst, [LastLockTime] = v.ends
WHEN NOT MATCHED THEN
	INSERT ([Key], [Instance], [LastLockTime]) VALUES (v.k, v.inst, v.ends)
OUTPUT inserted.[Instance];`, []any{name, owner, micros(ttl)}}
}

// releaseLease frees the lease if owner holds it, as CAP releases its
// locks: no instance, the earliest time.
func (q *queries) releaseLease(name, owner string) stmt {
	return stmt{`UPDATE ` + q.lockTable() + ` SET [Instance] = N'', [LastLockTime] = CAST('0001-01-01T00:00:00' AS datetime2(7))
WHERE [Key] = @p1 AND [Instance] = @p2 ` + ownerCollation, []any{name, owner}}
}

// AcquireLease implements storage.Leaser with a row of CAP's Lock table:
// one MERGE statement takes the lease for owner, or renews it, until ttl
// from the database's now, unless another owner holds it and it has not
// run out.
func (s *Store) AcquireLease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	st := s.q.acquireLease(name, owner, ttl)
	var held bool
	err := s.retry(ctx, func() error {
		rs, err := s.db.QueryContext(ctx, st.query, st.args...)
		if err != nil {
			return err
		}
		defer rs.Close()
		held = rs.Next()
		return rs.Err()
	})
	if n := sqlNumber(err); n == errDuplicateKey || n == errDuplicateIndexKey {
		// Another instance inserted the lease between the match and the
		// insert (HOLDLOCK should prevent it): it holds the lease.
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("sqlserver: acquire lease %q: %w", name, err)
	}
	return held, nil
}

// ReleaseLease implements storage.Leaser. Releasing a lease that owner
// does not hold changes nothing.
func (s *Store) ReleaseLease(ctx context.Context, name, owner string) error {
	if err := s.execOne(ctx, s.q.releaseLease(name, owner)); err != nil {
		return fmt.Errorf("sqlserver: release lease %q: %w", name, err)
	}
	return nil
}

// Ping implements storage.Pinger with SELECT 1 on a connection of the
// pool.
func (s *Store) Ping(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `SELECT 1`); err != nil {
		return fmt.Errorf("sqlserver: ping: %w", err)
	}
	return nil
}

// backlog reads the gauges of one table of a version (see storage.Backlog):
// due rows, the due time of the oldest, Failed rows, and the database's
// now, by group for Received. The due rows are read from the claims'
// filtered index; the Published table, which has no group, gives one row,
// or none when it has no due or Failed row, as the other storages do.
func (q *queries) backlog(t storage.Table, version string) stmt {
	tb := q.table(t)
	due := `[NextAttemptAt] IS NOT NULL AND [NextAttemptAt] <= ` + nowUTC
	failed := `[StatusName] = N'Failed' AND [NextAttemptAt] IS NULL`
	group, tail := `N''`, "\nHAVING COUNT_BIG(*) > 0"
	if t == storage.Received {
		group = `ISNULL([Group], N'')`
		tail = "\nGROUP BY " + group
	}
	return stmt{`SELECT ` + group + `, COUNT_BIG(CASE WHEN ` + due + ` THEN 1 END),
	MIN(CASE WHEN ` + due + ` THEN [NextAttemptAt] END), COUNT_BIG(CASE WHEN ` + failed + ` THEN 1 END), ` + nowUTC + `
FROM ` + tb.name + `
WHERE [Version] = @p1 AND ((` + due + `) OR (` + failed + `))` + tail, []any{version}}
}

// Backlog implements storage.BacklogReader, in one query per table.
func (s *Store) Backlog(ctx context.Context, t storage.Table, version string) ([]storage.Backlog, error) {
	st := s.q.backlog(t, version)
	rs, err := s.db.QueryContext(ctx, st.query, st.args...)
	if err != nil {
		return nil, fmt.Errorf("sqlserver: backlog %s: %w", t, err)
	}
	defer rs.Close()
	var out []storage.Backlog
	for rs.Next() {
		var (
			b      storage.Backlog
			oldest sql.NullTime
		)
		if err := rs.Scan(&b.Group, &b.Due, &oldest, &b.Failed, &b.Now); err != nil {
			return nil, fmt.Errorf("sqlserver: backlog %s: %w", t, err)
		}
		if b.Due > 0 && oldest.Valid {
			b.OldestDue = oldest.Time.UTC()
		}
		b.Now = b.Now.UTC()
		out = append(out, b)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("sqlserver: backlog %s: %w", t, err)
	}
	return out, nil
}
