package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/go-cap/cap/storage"
)

var _ storage.HistoryReader = (*Storage)(nil)

// CountByHour implements storage.HistoryReader over the status index.
func (s *Storage) CountByHour(ctx context.Context, t storage.Table, status storage.Status, since time.Time) ([]storage.HourCount, error) {
	if err := storage.CheckHistoryStatus(status); err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, s.sql.table(kind(t)).countByHour, string(status), formatTime(since))
	if err != nil {
		return nil, fmt.Errorf("sqlite: count %s by hour: %w", t, err)
	}
	defer rows.Close()
	var out []storage.HourCount
	for rows.Next() {
		var h string
		var c storage.HourCount
		if err := rows.Scan(&h, &c.Count); err != nil {
			return nil, fmt.Errorf("sqlite: count %s by hour: %w", t, err)
		}
		if c.Hour, err = time.ParseInLocation("2006-01-02 15", h, time.UTC); err != nil {
			return nil, fmt.Errorf("sqlite: count %s by hour: bad stored time %q: %w", t, h, err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: count %s by hour: %w", t, err)
	}
	return out, nil
}
