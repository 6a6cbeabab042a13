// Command consumer is the handling side of the fault harness
// (internal/faulttest). It subscribes two groups to the producers' topic:
// "plain", whose handler records each handling with a statement of its own
// (at least once: a crash between the record and the outcome runs it
// again), and "inbox", a transactional handler whose record commits
// together with the message's outcome (exactly once).
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

	"github.com/jackc/pgx/v5"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/internal/faulttest"
)

func main() {
	var cfg faulttest.Config
	cfg.Flags(flag.CommandLine)
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).
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
	pool, store, tr, err := cfg.Connect(ctx, log)
	if err != nil {
		return err
	}
	defer pool.Close()
	defer tr.Close()
	bus, err := cfg.NewBus(store, tr, log)
	if err != nil {
		return err
	}
	record := `INSERT INTO ` + faulttest.Table(cfg.Schema, "handled") + ` (n, grp, instance, msg_id) VALUES ($1, $2, $3, $4)`
	err = cap.Subscribe(bus, faulttest.Topic, faulttest.GroupPlain, func(ctx context.Context, m cap.Msg[faulttest.Order]) error {
		_, err := pool.Exec(ctx, record, m.Payload.N, faulttest.GroupPlain, cfg.Instance, m.ID)
		return err
	})
	if err != nil {
		return err
	}
	err = cap.SubscribeTx(bus, faulttest.Topic, faulttest.GroupInbox, func(ctx context.Context, tx pgx.Tx, m cap.Msg[faulttest.Order]) error {
		_, err := tx.Exec(ctx, record, m.Payload.N, faulttest.GroupInbox, cfg.Instance, m.ID)
		return err
	})
	if err != nil {
		return err
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
