// Command postgres-rabbitmq is a small order service on PostgreSQL and
// RabbitMQ. It places orders and publishes an "orders.created" event in the
// same database transaction (the outbox), and handles the events in two
// groups: billing writes an invoice in the transaction that records the
// message as handled (exactly once per order), notifications logs an e-mail.
// It exits once every order it placed has been billed and notified.
//
//	go run ./examples/postgres-rabbitmq
//
// DATABASE_URL (default postgres://postgres@localhost:5432/postgres) and
// RABBITMQ_URL (default amqp://guest:guest@localhost:5672/) locate the
// servers. The program creates the schemas "shop" (orders, invoices) and
// "cap" (the outbox and inbox tables) and the durable queues
// "example.billing.v1" and "example.notifications.v1".
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/storage/postgres"
	"github.com/go-cap/cap/transport/rabbitmq"
)

// OrderCreated is the event; its JSON is what a .NET CAP subscriber of
// "orders.created" receives.
type OrderCreated struct {
	OrderID  int64   `json:"OrderId"`
	Customer string  `json:"Customer"`
	Total    float64 `json:"Total"`
}

// config says where the servers are and which names to use, so that a test
// can run the service beside others.
type config struct {
	DatabaseURL string
	RabbitMQURL string
	ShopSchema  string // business tables
	CAPSchema   string // published and received tables
	GroupPrefix string // queues are "{GroupPrefix}.{group}.v1"
	TopicPrefix string // topics are "{TopicPrefix}.orders.created" when set
	Logger      *slog.Logger
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg := config{
		DatabaseURL: env("DATABASE_URL", "postgres://postgres@localhost:5432/postgres?sslmode=disable"),
		RabbitMQURL: env("RABBITMQ_URL", "amqp://guest:guest@localhost:5672/"),
		ShopSchema:  "shop",
		CAPSchema:   postgres.DefaultSchema,
		GroupPrefix: "example",
		Logger:      log,
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, cfg); err != nil {
		log.Error("order service failed", "error", err)
		os.Exit(1)
	}
}

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func run(ctx context.Context, cfg config) error {
	log := cfg.Logger
	pool, err := pgxpool.New(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := createShop(ctx, pool, cfg.ShopSchema); err != nil {
		return err
	}

	// The bus: the outbox in PostgreSQL, the broker RabbitMQ.
	store, err := postgres.New(pool, postgres.Options{Schema: cfg.CAPSchema, Logger: log})
	if err != nil {
		return err
	}
	tr, err := rabbitmq.New(rabbitmq.Config{URL: cfg.RabbitMQURL, ConnectionName: "postgres-rabbitmq example", Logger: log})
	if err != nil {
		return err
	}
	defer tr.Close()
	bus, err := cap.New(store, tr, cap.Options{GroupNamePrefix: cfg.GroupPrefix, TopicNamePrefix: cfg.TopicPrefix, Logger: log})
	if err != nil {
		return err
	}

	billed := make(chan int64, 16)
	notified := make(chan int64, 16)
	// Billing writes the invoice in the transaction that marks the message
	// handled: a redelivered event cannot bill twice.
	err = cap.SubscribeTx(bus, "orders.created", "billing", func(ctx context.Context, tx pgx.Tx, m cap.Msg[OrderCreated]) error {
		_, err := tx.Exec(ctx, `INSERT INTO `+cfg.ShopSchema+`.invoices (order_id, amount) VALUES ($1, $2)`,
			m.Payload.OrderID, m.Payload.Total)
		if err != nil {
			return err
		}
		log.Info("invoice written", "order", m.Payload.OrderID, "amount", m.Payload.Total, "message", m.ID)
		report(billed, m.Payload.OrderID)
		return nil
	})
	if err != nil {
		return err
	}
	err = cap.Subscribe(bus, "orders.created", "notifications", func(ctx context.Context, m cap.Msg[OrderCreated]) error {
		log.Info("confirmation e-mail sent", "order", m.Payload.OrderID, "customer", m.Payload.Customer)
		report(notified, m.Payload.OrderID)
		return nil
	})
	if err != nil {
		return err
	}
	if err := bus.Start(ctx); err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = bus.Shutdown(sctx)
	}()

	// Place orders: the order row and its event commit together or not at all.
	var placed []int64
	for _, o := range []OrderCreated{{Customer: "ada", Total: 42.5}, {Customer: "grace", Total: 17}, {Customer: "linus", Total: 99.9}} {
		err := bus.InTx(ctx, func(ctx context.Context, tx pgx.Tx) error {
			if err := tx.QueryRow(ctx, `INSERT INTO `+cfg.ShopSchema+`.orders (customer, total) VALUES ($1, $2) RETURNING id`,
				o.Customer, o.Total).Scan(&o.OrderID); err != nil {
				return err
			}
			return bus.PublishTx(ctx, tx, "orders.created", o)
		})
		if err != nil {
			return fmt.Errorf("place order: %w", err)
		}
		log.Info("order placed", "order", o.OrderID, "customer", o.Customer)
		placed = append(placed, o.OrderID)
	}

	// A plain pgx transaction works too: PostgreSQL's notification on commit
	// wakes the dispatcher.
	tx, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	o := OrderCreated{Customer: "barbara", Total: 5}
	if err := tx.QueryRow(ctx, `INSERT INTO `+cfg.ShopSchema+`.orders (customer, total) VALUES ($1, $2) RETURNING id`,
		o.Customer, o.Total).Scan(&o.OrderID); err != nil {
		_ = tx.Rollback(ctx)
		return err
	}
	if err := bus.PublishTx(ctx, tx, "orders.created", o); err != nil {
		_ = tx.Rollback(ctx)
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	log.Info("order placed with a plain transaction", "order", o.OrderID)
	placed = append(placed, o.OrderID)

	// A failed order rolls back its event with it: nothing is sent.
	errOutOfStock := errors.New("out of stock")
	err = bus.InTx(ctx, func(ctx context.Context, tx pgx.Tx) error {
		if err := bus.PublishTx(ctx, tx, "orders.created", OrderCreated{OrderID: -1, Customer: "nobody"}); err != nil {
			return err
		}
		return errOutOfStock
	})
	if !errors.Is(err, errOutOfStock) {
		return fmt.Errorf("rolled-back order: %v", err)
	}
	log.Info("order rolled back, its event with it")

	if err := waitAll(ctx, placed, billed, notified); err != nil {
		return err
	}
	log.Info("every order billed and notified", "orders", len(placed))
	return nil
}

// report tells waitAll about an order without ever blocking a handler.
func report(ch chan<- int64, id int64) {
	select {
	case ch <- id:
	default:
	}
}

// waitAll waits until every placed order was billed and notified. Orders of
// an earlier, interrupted run may come too; they are not waited for.
func waitAll(ctx context.Context, placed []int64, billed, notified <-chan int64) error {
	wantBilled, wantNotified := map[int64]bool{}, map[int64]bool{}
	for _, id := range placed {
		wantBilled[id], wantNotified[id] = true, true
	}
	for len(wantBilled)+len(wantNotified) > 0 {
		select {
		case id := <-billed:
			if id < 0 {
				return errors.New("the rolled-back order was billed")
			}
			delete(wantBilled, id)
		case id := <-notified:
			if id < 0 {
				return errors.New("the rolled-back order was notified")
			}
			delete(wantNotified, id)
		case <-ctx.Done():
			return fmt.Errorf("%d orders not billed, %d not notified: %w", len(wantBilled), len(wantNotified), ctx.Err())
		}
	}
	return nil
}

func createShop(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	_, err := pool.Exec(ctx, `
		CREATE SCHEMA IF NOT EXISTS `+schema+`;
		CREATE TABLE IF NOT EXISTS `+schema+`.orders (
			id       BIGSERIAL PRIMARY KEY,
			customer TEXT NOT NULL,
			total    NUMERIC(12, 2) NOT NULL,
			placed   TIMESTAMPTZ NOT NULL DEFAULT now()
		);
		CREATE TABLE IF NOT EXISTS `+schema+`.invoices (
			order_id BIGINT PRIMARY KEY REFERENCES `+schema+`.orders (id),
			amount   NUMERIC(12, 2) NOT NULL,
			issued   TIMESTAMPTZ NOT NULL DEFAULT now()
		);`)
	if err != nil {
		return fmt.Errorf("create tables: %w", err)
	}
	return nil
}
