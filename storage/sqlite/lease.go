package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/go-cap/cap/storage"
)

// AcquireLease implements storage.Leaser with a row of CAP's Lock table
// ("cap.lock"), for buses of several processes on one database file.
func (s *Storage) AcquireLease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	at := now()
	res, err := s.db.ExecContext(ctx, s.sql.lock.acquire, name, owner, formatTime(at.Add(ttl)), formatTime(at))
	if err != nil {
		return false, fmt.Errorf("sqlite: acquire lease %q: %w", name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("sqlite: acquire lease %q: %w", name, err)
	}
	return n == 1, nil
}

// ReleaseLease implements storage.Leaser.
func (s *Storage) ReleaseLease(ctx context.Context, name, owner string) error {
	if _, err := s.db.ExecContext(ctx, s.sql.lock.release, name, owner); err != nil {
		return fmt.Errorf("sqlite: release lease %q: %w", name, err)
	}
	return nil
}

// Ping implements storage.Pinger.
func (s *Storage) Ping(ctx context.Context) error {
	if err := s.db.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	return nil
}

// Backlog implements storage.BacklogReader with one query over the claims'
// and the dashboard's indexes.
func (s *Storage) Backlog(ctx context.Context, t storage.Table, version string) ([]storage.Backlog, error) {
	at := now()
	rows, err := s.db.QueryContext(ctx, s.sql.table(kind(t)).backlog, version, formatTime(at))
	if err != nil {
		return nil, fmt.Errorf("sqlite: backlog %s: %w", t, err)
	}
	defer rows.Close()
	var out []storage.Backlog
	for rows.Next() {
		b := storage.Backlog{Now: at}
		var oldest string
		if err := rows.Scan(&b.Group, &b.Due, &oldest, &b.Failed); err != nil {
			return nil, fmt.Errorf("sqlite: backlog %s: %w", t, err)
		}
		if b.Due > 0 {
			if b.OldestDue, err = parseTime(oldest); err != nil {
				return nil, fmt.Errorf("sqlite: backlog %s: %w", t, err)
			}
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: backlog %s: %w", t, err)
	}
	return out, nil
}
