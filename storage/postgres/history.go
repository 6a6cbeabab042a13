package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/go-cap/cap/storage"
)

var _ storage.HistoryReader = (*Store[pgx.Tx])(nil)

// countByHour counts rows of a status by hour from the dashboard's status
// index; the redundant condition lets a generic plan use that partial
// index. Arguments: status, since.
func (q *queries) countByHour(t storage.Table) string {
	return `SELECT date_trunc('hour', "Added"), count(*) FROM ` + q.tables[t].name + `
		WHERE "StatusName" = $1 AND "StatusName" <> 'Scheduled' AND "Added" >= $2
		GROUP BY 1 ORDER BY 1`
}

// CountByHour implements storage.HistoryReader.
func (s *Store[TTx]) CountByHour(ctx context.Context, t storage.Table, status storage.Status, since time.Time) ([]storage.HourCount, error) {
	if err := storage.CheckHistoryStatus(status); err != nil {
		return nil, err
	}
	rs, err := s.b.db().query(ctx, s.q.countByHour(t), string(status), since.UTC())
	if err != nil {
		return nil, fmt.Errorf("postgres: count %s by hour: %w", t, err)
	}
	defer rs.Close()
	var out []storage.HourCount
	for rs.Next() {
		var c storage.HourCount
		if err := rs.Scan(&c.Hour, &c.Count); err != nil {
			return nil, fmt.Errorf("postgres: count %s by hour: %w", t, err)
		}
		c.Hour = c.Hour.UTC()
		out = append(out, c)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("postgres: count %s by hour: %w", t, err)
	}
	return out, nil
}
