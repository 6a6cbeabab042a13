// Command producer is the publishing side of the fault harness
// (internal/faulttest). It commits numbered orders, each in a business
// transaction that also publishes one message: the order's row and its
// message commit together or not at all. One order in ten is rolled back on
// purpose and its number recorded afterwards. Two orders in three go
// through bus.InTx, the others through a plain tx.Commit (woken by
// PostgreSQL's NOTIFY, or the poll on MySQL). -storage mysql runs it on
// MySQL or MariaDB. -storage mongodb runs it on MongoDB without business
// transactions (the harness's FerretDB has none): each order is published
// with Publish, and recorded only once Publish returned.
//
// It writes "READY" to its standard output once its bus has started, and
// publishes until SIGTERM or SIGINT, then shuts the bus down. A failed start
// exits with status 1, for the harness to restart it as a supervisor would.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/internal/faulttest"
)

var errRollback = errors.New("rolled back on purpose")

func main() {
	var (
		cfg     faulttest.Config
		rate    float64
		writers int
	)
	cfg.Flags(flag.CommandLine)
	flag.Float64Var(&rate, "rate", 100, "orders per second, across writers")
	flag.IntVar(&writers, "writers", 4, "concurrent business transactions")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: faulttest.LogLevel()})).
		With("program", "producer", "instance", cfg.Instance)
	if err := cfg.Check(); err != nil {
		log.Error("bad configuration", "error", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, &cfg, rate, writers, log); err != nil {
		log.Error("producer failed", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg *faulttest.Config, rate float64, writers int, log *slog.Logger) error {
	switch cfg.Storage {
	case "mysql":
		db, err := cfg.ConnectMySQL(ctx, log)
		if err != nil {
			return err
		}
		return produce(ctx, cfg, db, rate, writers, log)
	case "mongodb":
		db, err := cfg.ConnectMongo(ctx, log)
		if err != nil {
			return err
		}
		return produce(ctx, cfg, db, rate, writers, log)
	}
	db, err := cfg.ConnectPostgres(ctx, log)
	if err != nil {
		return err
	}
	return produce(ctx, cfg, db, rate, writers, log)
}

func produce[TTx any](ctx context.Context, cfg *faulttest.Config, db *faulttest.DB[TTx], rate float64, writers int,
	log *slog.Logger) error {
	defer db.Close()
	tr, err := cfg.OpenTransport(log)
	if err != nil {
		return err
	}
	defer tr.Close()
	bus, err := faulttest.NewBus(cfg, db.Store, tr, log)
	if err != nil {
		return err
	}
	if err := bus.Start(ctx); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	fmt.Println(faulttest.Ready)
	p := &producer[TTx]{cfg: cfg, db: db, bus: bus, log: log}

	tokens := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Duration(float64(time.Second) / rate))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				close(tokens)
				return
			case <-t.C:
				select {
				case tokens <- struct{}{}:
				default: // writers are behind: skip, the rate is a ceiling
				}
			}
		}
	}()
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for range tokens {
				if err := p.order(ctx); err != nil && ctx.Err() == nil {
					p.failed(err)
				}
			}
		})
	}
	wg.Wait()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bus.Shutdown(sctx); err != nil {
		log.Warn("shutdown", "error", err)
	}
	log.Info("stopped", "committed", p.committed, "rolled_back", p.rolledBack, "failed", p.errors)
	return nil
}

type producer[TTx any] struct {
	cfg *faulttest.Config
	db  *faulttest.DB[TTx]
	bus *cap.Bus[TTx]
	log *slog.Logger

	mu                            sync.Mutex
	committed, rolledBack, errors int
	lastLog                       time.Time
}

// order runs one business transaction.
func (p *producer[TTx]) order(ctx context.Context) error {
	if p.db.NoTx {
		return p.orderNoTx(ctx)
	}
	var n int64
	business := func(ctx context.Context, tx TTx, via string) error {
		var err error
		if n, err = p.db.NextOrder(ctx, tx); err != nil {
			return err
		}
		if err := p.db.InsertOrder(ctx, tx, n, p.cfg.Instance, via); err != nil {
			return err
		}
		if err := p.bus.PublishTx(ctx, tx, faulttest.Topic, faulttest.Order{N: n, Producer: p.cfg.Instance}); err != nil {
			return err
		}
		if faulttest.RolledBack(n) {
			return errRollback
		}
		return nil
	}
	var err error
	if rand.IntN(3) == 0 {
		err = p.plain(ctx, business)
	} else {
		err = p.bus.InTx(ctx, func(ctx context.Context, tx TTx) error { return business(ctx, tx, "intx") })
	}
	switch {
	case errors.Is(err, errRollback):
		// Recorded after the fact; a kill in between only leaves it out of
		// the report, the checks do not depend on it.
		if err := p.db.RecordRollback(ctx, n); err != nil {
			return fmt.Errorf("record rollback of %d: %w", n, err)
		}
		p.count(&p.rolledBack)
		return nil
	case err != nil:
		return err
	}
	p.count(&p.committed)
	return nil
}

// orderNoTx publishes one order without a transaction: the order's number,
// then its message, then its row, each on its own. The orders that the
// others roll back are not published at all (there is no transaction to
// roll back) and recorded as rolled back, so that a handling of one shows.
// A kill between Publish's return and the row, or a stop while Publish
// waits on a document already written (it returns the context's error),
// leaves a message handled without its order: the harness counts those
// apart, as unconfirmed.
func (p *producer[TTx]) orderNoTx(ctx context.Context) error {
	var none TTx
	n, err := p.db.NextOrder(ctx, none)
	if err != nil {
		return err
	}
	if faulttest.RolledBack(n) {
		if err := p.db.RecordRollback(ctx, n); err != nil {
			return fmt.Errorf("record rollback of %d: %w", n, err)
		}
		p.count(&p.rolledBack)
		return nil
	}
	if err := p.bus.Publish(ctx, faulttest.Topic, faulttest.Order{N: n, Producer: p.cfg.Instance}); err != nil {
		return err
	}
	// The message is stored: record its order even when the producer is
	// stopping, so that only a kill leaves one unrecorded.
	if err := p.db.InsertOrder(context.WithoutCancel(ctx), none, n, p.cfg.Instance, "publish"); err != nil {
		return fmt.Errorf("record order %d after its Publish: %w", n, err)
	}
	p.count(&p.committed)
	return nil
}

// plain runs business in a transaction committed with tx.Commit, which the
// bus does not see: PostgreSQL's notification wakes the dispatcher (MySQL:
// its poll).
func (p *producer[TTx]) plain(ctx context.Context, business func(context.Context, TTx, string) error) error {
	tx, err := p.db.Store.Begin(ctx)
	if err != nil {
		return err
	}
	if err := business(ctx, tx, "commit"); err != nil {
		_ = p.db.Store.Rollback(context.WithoutCancel(ctx), tx)
		return err
	}
	return p.db.Store.Commit(ctx, tx)
}

func (p *producer[TTx]) count(c *int) {
	p.mu.Lock()
	*c++
	p.mu.Unlock()
}

// failed logs a failed transaction, at most once a second, and slows down.
func (p *producer[TTx]) failed(err error) {
	p.mu.Lock()
	p.errors++
	logIt := time.Since(p.lastLog) > time.Second
	if logIt {
		p.lastLog = time.Now()
	}
	p.mu.Unlock()
	if logIt {
		p.log.Warn("business transaction failed", "error", err)
	}
	time.Sleep(50 * time.Millisecond)
}
