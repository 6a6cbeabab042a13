package memory

import (
	"context"
	"slices"
	"time"

	"github.com/go-cap/cap/storage"
)

var _ storage.HistoryReader = (*Storage)(nil)

// CountByHour implements storage.HistoryReader. It scans the table.
func (s *Storage) CountByHour(ctx context.Context, t storage.Table, status storage.Status, since time.Time) ([]storage.HourCount, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := storage.CheckHistoryStatus(status); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tb, err := s.table(t)
	if err != nil {
		return nil, err
	}
	byHour := map[time.Time]int64{}
	for _, r := range tb.rows {
		if r.rec.Status == status && !r.rec.Added.Before(since) {
			byHour[r.rec.Added.UTC().Truncate(time.Hour)]++
		}
	}
	out := make([]storage.HourCount, 0, len(byHour))
	for h, n := range byHour {
		out = append(out, storage.HourCount{Hour: h, Count: n})
	}
	slices.SortFunc(out, func(a, b storage.HourCount) int { return a.Hour.Compare(b.Hour) })
	return out, nil
}
