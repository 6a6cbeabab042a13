package mysql

import (
	"context"
	"fmt"
	"time"

	"github.com/go-cap/cap/storage"
)

var _ storage.HistoryReader = (*Store)(nil)

// countByHour counts rows of a status by hour over the (StatusName, Added)
// index. Arguments: status, since.
func (q *tableQueries) countByHour() string {
	return "SELECT DATE_FORMAT(`Added`, '%Y-%m-%d %H:00:00') AS h, COUNT(*) FROM " + q.name +
		" WHERE `StatusName` = ? AND `Added` >= ? GROUP BY h ORDER BY h"
}

// CountByHour implements storage.HistoryReader.
func (s *Store) CountByHour(ctx context.Context, t storage.Table, status storage.Status, since time.Time) ([]storage.HourCount, error) {
	if err := storage.CheckHistoryStatus(status); err != nil {
		return nil, err
	}
	rs, err := s.db.QueryContext(ctx, s.q.tables[t].countByHour(), string(status), since.UTC())
	if err != nil {
		return nil, fmt.Errorf("mysql: count %s by hour: %w", t, err)
	}
	defer rs.Close()
	var out []storage.HourCount
	for rs.Next() {
		var h string
		var c storage.HourCount
		if err := rs.Scan(&h, &c.Count); err != nil {
			return nil, fmt.Errorf("mysql: count %s by hour: %w", t, err)
		}
		if c.Hour, err = time.ParseInLocation(time.DateTime, h, time.UTC); err != nil {
			return nil, fmt.Errorf("mysql: count %s by hour: %w", t, err)
		}
		out = append(out, c)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("mysql: count %s by hour: %w", t, err)
	}
	return out, nil
}
