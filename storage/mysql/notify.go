package mysql

import (
	"context"
	"time"
)

// DefaultNotifyInterval is the default Options.NotifyInterval.
const DefaultNotifyInterval = 100 * time.Millisecond

// Notifications returns a channel that receives a value soon after new
// Published rows were committed, by any instance, and is closed when ctx
// ends. MySQL has no LISTEN/NOTIFY: every Options.NotifyInterval the
// storage reads the largest Id of the published table (the last entry of
// the primary key, one index lookup) and signals when it grew. It is a
// hint that wakes the bus early, for rows committed with a plain
// tx.Commit; the bus's poll still finds what it misses (a transaction that
// commits after one with a later message id). With a negative
// NotifyInterval the channel never receives and the bus only polls.
func (s *Store) Notifications(ctx context.Context) (<-chan struct{}, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ch := make(chan struct{}, 1)
	if s.opts.NotifyInterval < 0 {
		context.AfterFunc(ctx, func() { close(ch) })
		return ch, nil
	}
	go s.watch(ctx, ch)
	return ch, nil
}

// watch polls the largest published Id until ctx ends, then closes ch.
func (s *Store) watch(ctx context.Context, ch chan<- struct{}) {
	defer close(ch)
	t := time.NewTicker(s.opts.NotifyInterval)
	defer t.Stop()
	last, known := int64(0), false
	for {
		var top int64
		if err := s.db.QueryRowContext(ctx, s.q.tables[0].maxID).Scan(&top); err == nil {
			if known && top > last {
				select {
				case ch <- struct{}{}:
				default: // a wake-up is already pending
				}
			}
			last, known = top, true
		} else if ctx.Err() == nil {
			s.opts.Logger.Debug("mysql: notifications: reading the published table failed", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
