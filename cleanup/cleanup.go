// Package cleanup deletes expired messages: Succeeded rows a day after
// success and Failed rows fifteen days after they were added, by default, in
// batches so no statement holds long locks.
package cleanup

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/go-cap/cap/storage"
)

// Defaults of a Collector (CAP's CollectorCleaningInterval and batch size).
const (
	DefaultInterval  = 5 * time.Minute
	DefaultBatchSize = 1000
)

// Deleter is the part of a storage the collector needs.
type Deleter interface {
	DeleteExpired(ctx context.Context, t storage.Table, limit int) (int64, error)
}

// Collector deletes expired Succeeded and Failed rows of both tables.
type Collector struct {
	Store     Deleter
	Interval  time.Duration // between passes; zero means DefaultInterval
	BatchSize int           // rows per statement; zero means DefaultBatchSize
	// Pause between two full batches, to leave the database room; zero
	// means none.
	Pause  time.Duration
	Logger *slog.Logger
}

// Collect runs one pass: it deletes expired rows of the Published and then
// the Received table, batch after batch, until none is left, and returns how
// many it deleted.
func (c *Collector) Collect(ctx context.Context) (int64, error) {
	limit := c.BatchSize
	if limit <= 0 {
		limit = DefaultBatchSize
	}
	var total int64
	for _, t := range []storage.Table{storage.Published, storage.Received} {
		for {
			n, err := c.Store.DeleteExpired(ctx, t, limit)
			total += n
			if err != nil {
				return total, err
			}
			if n < int64(limit) {
				break
			}
			if c.Pause > 0 {
				select {
				case <-ctx.Done():
					return total, ctx.Err()
				case <-time.After(c.Pause):
				}
			}
		}
	}
	return total, nil
}

// Run calls Collect at once and then every Interval until ctx ends. Errors
// are logged and the next pass tries again.
func (c *Collector) Run(ctx context.Context) {
	interval := c.Interval
	if interval <= 0 {
		interval = DefaultInterval
	}
	log := c.Logger
	if log == nil {
		log = slog.Default()
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		n, err := c.Collect(ctx)
		switch {
		case err != nil && !errors.Is(err, context.Canceled):
			log.WarnContext(ctx, "cap: deleting expired messages failed", "error", err, "deleted", n)
		case n > 0:
			log.DebugContext(ctx, "cap: deleted expired messages", "deleted", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
