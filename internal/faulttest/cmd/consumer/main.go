// Command consumer is the handling side of the fault harness
// (internal/faulttest). It subscribes two groups to the producers' topic:
// "plain", whose handler records each handling with a statement of its own
// (at least once: a crash between the record and the outcome runs it
// again), and "inbox", a transactional handler whose record commits
// together with the message's outcome (exactly once). On a storage without
// transactions (-storage mongodb here) it subscribes "plain" only.
//
// It writes "READY" to its standard output once both groups are bound on
// the broker, and runs until SIGTERM or SIGINT, then shuts the bus down. A
// failed start exits with status 1, for the harness to restart it as a
// supervisor would.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/internal/faulttest"
)

func main() {
	var cfg faulttest.Config
	cfg.Flags(flag.CommandLine)
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: faulttest.LogLevel()})).
		With("program", "consumer", "instance", cfg.Instance)
	if err := cfg.Check(); err != nil {
		log.Error("bad configuration", "error", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, &cfg, log); err != nil {
		log.Error("consumer failed", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg *faulttest.Config, log *slog.Logger) error {
	switch cfg.Storage {
	case "mysql":
		db, err := cfg.ConnectMySQL(ctx, log)
		if err != nil {
			return err
		}
		return consume(ctx, cfg, db, log)
	case "mongodb":
		db, err := cfg.ConnectMongo(ctx, log)
		if err != nil {
			return err
		}
		return consume(ctx, cfg, db, log)
	}
	db, err := cfg.ConnectPostgres(ctx, log)
	if err != nil {
		return err
	}
	return consume(ctx, cfg, db, log)
}

func consume[TTx any](ctx context.Context, cfg *faulttest.Config, db *faulttest.DB[TTx], log *slog.Logger) error {
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
	err = cap.Subscribe(bus, faulttest.Topic, faulttest.GroupPlain, func(ctx context.Context, m cap.Msg[faulttest.Order]) error {
		return db.RecordHandled(ctx, m.Payload.N, faulttest.GroupPlain, cfg.Instance, m.ID)
	})
	if err != nil {
		return err
	}
	if !db.NoTx {
		err = cap.SubscribeTx(bus, faulttest.Topic, faulttest.GroupInbox, func(ctx context.Context, tx TTx, m cap.Msg[faulttest.Order]) error {
			return db.RecordHandledTx(ctx, tx, m.Payload.N, faulttest.GroupInbox, cfg.Instance, m.ID)
		})
		if err != nil {
			return err
		}
	}
	if err := bus.Start(ctx); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	fmt.Println(faulttest.Ready)
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bus.Shutdown(sctx); err != nil {
		log.Warn("shutdown", "error", err)
	}
	log.Info("stopped")
	return nil
}
