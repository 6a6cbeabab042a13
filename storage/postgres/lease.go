package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/go-cap/cap/storage"
)

// The lock table is CAP's ("Key", "Instance", "LastLockTime"). For the
// bus's leases LastLockTime is when the lease runs out, so that each holder's
// own ttl counts, whatever the ttl of the instance that asks. CAP uses the
// keys publish_retry_{version} and received_retry_{version}; the bus's
// leases have keys of their own, so both can share the table.

func (q *queries) lockTable() string { return quoteIdent(q.schema) + `."lock"` }

func (q *queries) createLock() string {
	return `CREATE TABLE IF NOT EXISTS ` + q.lockTable() + ` (
			"Key" VARCHAR(128) PRIMARY KEY NOT NULL,
			"Instance" VARCHAR(256) NULL,
			"LastLockTime" TIMESTAMP NOT NULL
		)`
}

// acquireLease inserts the lease, or takes it over when it is the caller's
// or has run out; a row comes back only when the caller holds it. $3 is the
// ttl in microseconds.
func (q *queries) acquireLease() string {
	return `INSERT INTO ` + q.lockTable() + ` AS l ("Key", "Instance", "LastLockTime")
		VALUES ($1, $2, ` + nowUTC + ` + ` + micros("$3") + `)
		ON CONFLICT ("Key") DO UPDATE SET "Instance" = EXCLUDED."Instance", "LastLockTime" = EXCLUDED."LastLockTime"
		WHERE l."Instance" = EXCLUDED."Instance" OR l."LastLockTime" < ` + nowUTC + `
		RETURNING 1`
}

func (q *queries) releaseLease() string {
	return `UPDATE ` + q.lockTable() + ` SET "Instance" = '', "LastLockTime" = '0001-01-01 00:00:00'
		WHERE "Key" = $1 AND "Instance" = $2`
}

// AcquireLease implements storage.Leaser with a row of CAP's Lock table.
func (s *Store[TTx]) AcquireLease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	rs, err := s.b.db().query(ctx, s.q.acquireLease(), name, owner, ttl.Microseconds())
	if err != nil {
		return false, fmt.Errorf("postgres: acquire lease %q: %w", name, err)
	}
	defer rs.Close()
	held := rs.Next()
	if err := rs.Err(); err != nil {
		return false, fmt.Errorf("postgres: acquire lease %q: %w", name, err)
	}
	return held, nil
}

// ReleaseLease implements storage.Leaser.
func (s *Store[TTx]) ReleaseLease(ctx context.Context, name, owner string) error {
	if _, err := s.b.db().exec(ctx, s.q.releaseLease(), name, owner); err != nil {
		return fmt.Errorf("postgres: release lease %q: %w", name, err)
	}
	return nil
}

// Ping implements storage.Pinger.
func (s *Store[TTx]) Ping(ctx context.Context) error {
	if _, err := s.b.db().exec(ctx, `SELECT 1`); err != nil {
		return fmt.Errorf("postgres: ping: %w", err)
	}
	return nil
}

// backlog reads the gauges of one table: due rows and Failed rows, by group.
// Both conditions are served by the claims' and the dashboard's partial
// indexes.
func (q *queries) backlog(t storage.Table) string {
	tq := q.tables[t]
	group := `''`
	if t == storage.Received {
		group = `COALESCE("Group", '')`
	}
	due := `"NextAttemptAt" IS NOT NULL AND "NextAttemptAt" <= ` + nowUTC
	failed := `"StatusName" = 'Failed' AND "NextAttemptAt" IS NULL`
	return `SELECT ` + group + `, count(*) FILTER (WHERE ` + due + `),
			COALESCE(min("NextAttemptAt") FILTER (WHERE ` + due + `), ` + nowUTC + `),
			count(*) FILTER (WHERE ` + failed + `), ` + nowUTC + `
		FROM ` + tq.name + ` WHERE "Version" = $1 AND ((` + due + `) OR (` + failed + `))
		GROUP BY 1`
}

// Backlog implements storage.BacklogReader.
func (s *Store[TTx]) Backlog(ctx context.Context, t storage.Table, version string) ([]storage.Backlog, error) {
	rs, err := s.b.db().query(ctx, s.q.backlog(t), version)
	if err != nil {
		return nil, fmt.Errorf("postgres: backlog %s: %w", t, err)
	}
	defer rs.Close()
	var out []storage.Backlog
	for rs.Next() {
		var b storage.Backlog
		var oldest time.Time
		if err := rs.Scan(&b.Group, &b.Due, &oldest, &b.Failed, &b.Now); err != nil {
			return nil, fmt.Errorf("postgres: backlog %s: %w", t, err)
		}
		if b.Due > 0 {
			b.OldestDue = oldest.UTC()
		}
		b.Now = b.Now.UTC()
		out = append(out, b)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("postgres: backlog %s: %w", t, err)
	}
	return out, nil
}
