package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/go-cap/cap/storage"
)

// The lock table is CAP's `cap.lock` (Key, Instance, LastLockTime). For the
// bus's leases LastLockTime is when the lease runs out, so each holder's own
// ttl counts; CAP's own keys (publish_retry_..., received_retry_...) are left
// alone.

func (q *queries) lockTable() string { return quoteIdent(q.prefix + ".lock") }

func (q *queries) createLock() string {
	return `CREATE TABLE IF NOT EXISTS ` + q.lockTable() + ` (
		` + "`Key`" + ` varchar(128) NOT NULL,
		Instance varchar(256) DEFAULT NULL,
		LastLockTime datetime(6) DEFAULT NULL,
		PRIMARY KEY (` + "`Key`" + `)
	) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`
}

// acquireLease upserts the lease: LastLockTime is assigned first, and only
// when the lease is the caller's or has run out; Instance then follows it.
// Arguments: key, owner, ttl in microseconds.
func (q *queries) acquireLease() string {
	return `INSERT INTO ` + q.lockTable() + ` (` + "`Key`" + `, Instance, LastLockTime)
		VALUES (?, ?, UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND)
		ON DUPLICATE KEY UPDATE
		LastLockTime = IF(Instance = VALUES(Instance) OR LastLockTime IS NULL OR LastLockTime < UTC_TIMESTAMP(6),
			VALUES(LastLockTime), LastLockTime),
		Instance = IF(LastLockTime = VALUES(LastLockTime), VALUES(Instance), Instance)`
}

func (q *queries) leaseHolder() string {
	return `SELECT COALESCE(Instance, '') FROM ` + q.lockTable() + ` WHERE ` + "`Key`" + ` = ?`
}

func (q *queries) releaseLease() string {
	return `UPDATE ` + q.lockTable() + ` SET Instance = '', LastLockTime = '1000-01-01 00:00:00'
		WHERE ` + "`Key`" + ` = ? AND Instance = ?`
}

// AcquireLease implements storage.Leaser with a row of CAP's Lock table.
func (s *Store) AcquireLease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	if _, err := s.db.ExecContext(ctx, s.q.acquireLease(), name, owner, ttl.Microseconds()); err != nil {
		return false, fmt.Errorf("mysql: acquire lease %q: %w", name, err)
	}
	var holder string
	if err := s.db.QueryRowContext(ctx, s.q.leaseHolder(), name).Scan(&holder); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return false, nil
		}
		return false, fmt.Errorf("mysql: acquire lease %q: %w", name, err)
	}
	return holder == owner, nil
}

// ReleaseLease implements storage.Leaser.
func (s *Store) ReleaseLease(ctx context.Context, name, owner string) error {
	if _, err := s.db.ExecContext(ctx, s.q.releaseLease(), name, owner); err != nil {
		return fmt.Errorf("mysql: release lease %q: %w", name, err)
	}
	return nil
}

// Ping implements storage.Pinger.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.db.PingContext(ctx); err != nil {
		return fmt.Errorf("mysql: ping: %w", err)
	}
	return nil
}

var (
	_ storage.Leaser = (*Store)(nil)
	_ storage.Pinger = (*Store)(nil)
)

// backlog reads the gauges of one table by group (see storage.Backlog), over
// the claims' and the dashboard's indexes. Arguments: version.
func (q *queries) backlog(t storage.Table) string {
	group := "''"
	if t == storage.Received {
		group = "COALESCE(`Group`, '')"
	}
	due := "`NextAttemptAt` IS NOT NULL AND `NextAttemptAt` <= UTC_TIMESTAMP(6)"
	failed := "`StatusName` = 'Failed' AND `NextAttemptAt` IS NULL"
	return "SELECT " + group + " AS g, CAST(COALESCE(SUM(" + due + "), 0) AS SIGNED), " +
		"COALESCE(MIN(CASE WHEN " + due + " THEN `NextAttemptAt` END), UTC_TIMESTAMP(6)), " +
		"CAST(COALESCE(SUM(" + failed + "), 0) AS SIGNED), UTC_TIMESTAMP(6) " +
		"FROM " + q.tables[t].name + " WHERE `Version` = ? AND ((" + due + ") OR (" + failed + ")) GROUP BY g"
}

// Backlog implements storage.BacklogReader.
func (s *Store) Backlog(ctx context.Context, t storage.Table, version string) ([]storage.Backlog, error) {
	rows, err := s.db.QueryContext(ctx, s.q.backlog(t), version)
	if err != nil {
		return nil, fmt.Errorf("mysql: backlog %s: %w", t, err)
	}
	defer rows.Close()
	var out []storage.Backlog
	for rows.Next() {
		var b storage.Backlog
		var oldest time.Time
		if err := rows.Scan(&b.Group, &b.Due, &oldest, &b.Failed, &b.Now); err != nil {
			return nil, fmt.Errorf("mysql: backlog %s: %w", t, err)
		}
		if b.Due > 0 {
			b.OldestDue = oldest.UTC()
		}
		b.Now = b.Now.UTC()
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("mysql: backlog %s: %w", t, err)
	}
	return out, nil
}

var _ storage.BacklogReader = (*Store)(nil)
