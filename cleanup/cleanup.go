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
	// Lease, when set, makes Run collect on one instance at a time (see
	// Run).
	Lease *Lease
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
//
// With a Lease, Run collects only while it holds the lease: it tries to take
// or renew it every third of its TTL, and the instance that holds it runs
// the passes. An instance that stops with Release hands the lease over at
// once; one that dies loses it when its TTL runs out, and another instance
// takes it at its next try. Run does not release the lease when ctx ends
// (an abrupt stop); call Release after it returns for a graceful one.
func (c *Collector) Run(ctx context.Context) {
	interval := c.Interval
	if interval <= 0 {
		interval = DefaultInterval
	}
	log := c.Logger
	if log == nil {
		log = slog.Default()
	}
	if c.Lease != nil {
		c.runLeased(ctx, interval, log)
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		c.pass(ctx, log)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (c *Collector) pass(ctx context.Context, log *slog.Logger) {
	n, err := c.Collect(ctx)
	switch {
	case err != nil && !errors.Is(err, context.Canceled):
		log.WarnContext(ctx, "cap: deleting expired messages failed", "error", err, "deleted", n)
	case n > 0:
		log.DebugContext(ctx, "cap: deleted expired messages", "deleted", n)
	}
}

// Lease elects the one instance that collects among those sharing a
// database.
type Lease struct {
	Leaser storage.Leaser
	Name   string        // the lease's name; empty means DefaultLeaseName
	Owner  string        // this instance, unique among those that compete
	TTL    time.Duration // how long a lease lasts unrenewed; zero means DefaultLeaseTTL
}

// Defaults of a Lease.
const (
	DefaultLeaseName = "cap.collector"
	DefaultLeaseTTL  = 30 * time.Second
)

func (l *Lease) name() string {
	if l.Name == "" {
		return DefaultLeaseName
	}
	return l.Name
}

func (l *Lease) ttl() time.Duration {
	if l.TTL <= 0 {
		return DefaultLeaseTTL
	}
	return l.TTL
}

func (c *Collector) runLeased(ctx context.Context, interval time.Duration, log *slog.Logger) {
	l := c.Lease
	t := time.NewTicker(l.ttl() / 3)
	defer t.Stop()
	var last time.Time // of this instance's last pass while it held the lease
	held := false
	for {
		ok, err := l.Leaser.AcquireLease(ctx, l.name(), l.Owner, l.ttl())
		switch {
		case err != nil:
			if ctx.Err() == nil {
				log.WarnContext(ctx, "cap: collector lease failed", "lease", l.name(), "error", err)
			}
			ok = false
		case ok && !held:
			log.DebugContext(ctx, "cap: collector lease taken", "lease", l.name(), "owner", l.Owner)
			last = time.Time{}
		case !ok && held:
			log.DebugContext(ctx, "cap: collector lease lost", "lease", l.name(), "owner", l.Owner)
		}
		held = ok
		if held && time.Since(last) >= interval {
			last = time.Now()
			c.pass(ctx, log)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Release gives the collector's lease up, so another instance collects at
// once. It does nothing without a Lease.
func (c *Collector) Release(ctx context.Context) error {
	if c.Lease == nil {
		return nil
	}
	return c.Lease.Leaser.ReleaseLease(ctx, c.Lease.name(), c.Lease.Owner)
}
