package sqlserver

import (
	"context"
	"fmt"
	"time"

	"github.com/go-cap/cap/storage"
)

var _ storage.HistoryReader = (*Store)(nil)

// hourOf is the start of the hour of [Added]: the hours from a fixed
// datetime2 origin added back to it. (The usual DATEDIFF(hour, 0, ...)
// with the integer 0 stands for a datetime, which a datetime2 column is
// better not mixed with.)
const hourOf = `DATEADD(hour, DATEDIFF(hour, CAST('2000-01-01T00:00:00' AS datetime2(7)), [Added]), CAST('2000-01-01T00:00:00' AS datetime2(7)))`

// countByHour counts the rows of a status added at or after since, by hour,
// over the dashboard's ([StatusName], [Added]) index (not filtered, so no
// redundant condition is needed). go-mssqldb sends a time.Time as a
// datetimeoffset: since goes in UTC and is cast to the column's type, which
// keeps its UTC clock time and lets the index seek on it.
func (q *queries) countByHour(t storage.Table, status storage.Status, since time.Time) stmt {
	return stmt{`SELECT ` + hourOf + ` AS h, COUNT_BIG(*) FROM ` + q.table(t).name + `
WHERE [StatusName] = @p1 AND [Added] >= CAST(@p2 AS datetime2(7))
GROUP BY ` + hourOf + `
ORDER BY h`, []any{string(status), since.UTC()}}
}

// CountByHour implements storage.HistoryReader.
func (s *Store) CountByHour(ctx context.Context, t storage.Table, status storage.Status, since time.Time) ([]storage.HourCount, error) {
	if err := storage.CheckHistoryStatus(status); err != nil {
		return nil, err
	}
	st := s.q.countByHour(t, status, since)
	rs, err := s.db.QueryContext(ctx, st.query, st.args...)
	if err != nil {
		return nil, fmt.Errorf("sqlserver: count %s by hour: %w", t, err)
	}
	defer rs.Close()
	var out []storage.HourCount
	for rs.Next() {
		var c storage.HourCount
		if err := rs.Scan(&c.Hour, &c.Count); err != nil {
			return nil, fmt.Errorf("sqlserver: count %s by hour: %w", t, err)
		}
		c.Hour = c.Hour.UTC()
		out = append(out, c)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("sqlserver: count %s by hour: %w", t, err)
	}
	return out, nil
}
