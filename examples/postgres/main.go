// Command postgres shows the outbox on PostgreSQL with the in-memory
// transport: it places an order and publishes its event in one database
// transaction committed with a plain tx.Commit, rolls back a second one,
// handles the event, and exits once the event is handled and its outbox row
// is marked Succeeded.
//
//	go run ./examples/postgres [-dsn postgres://...] [-schema cap]
//
// The DSN defaults to $CAP_TEST_POSTGRES, else
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable. The program
// creates the schema holding CAP's published and received tables and a
// table example_orders.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/postgres"
	"github.com/go-cap/cap/transport/memory"
)

// OrderCreated is the event published when an order is placed.
type OrderCreated struct {
	OrderID  int64   `json:"OrderId"`
	Customer string  `json:"Customer"`
	Total    float64 `json:"Total"`
}

func main() {
	dsn := os.Getenv("CAP_TEST_POSTGRES")
	if dsn == "" {
		dsn = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	flag.StringVar(&dsn, "dsn", dsn, "PostgreSQL connection string")
	schema := flag.String("schema", postgres.DefaultSchema, "schema of CAP's tables")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, dsn, *schema, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, dsn, schema string, out io.Writer) error {
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := pool.Ping(ctx); err != nil {
		return fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS example_orders (
		id bigserial PRIMARY KEY, customer text NOT NULL, total numeric NOT NULL)`); err != nil {
		return err
	}

	store, err := postgres.New(pool, postgres.Options{Schema: schema})
	if err != nil {
		return err
	}
	broker := memory.New()
	defer broker.Close()
	bus, err := cap.New(store, broker, cap.Options{
		DefaultGroup: "example",
		Logger:       slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return err
	}

	type handled struct {
		msg cap.Msg[OrderCreated]
		at  time.Time
	}
	got := make(chan handled, 2)
	err = cap.Subscribe(bus, "orders.created", "billing", func(ctx context.Context, m cap.Msg[OrderCreated]) error {
		got <- handled{m, time.Now()}
		return nil
	})
	if err != nil {
		return err
	}
	// Start migrates the tables, binds the group and starts dispatching.
	if err := bus.Start(ctx); err != nil {
		return err
	}
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = bus.Shutdown(sctx)
	}()
	fmt.Fprintf(out, "bus started: tables %q.published and %q.received ready\n", schema, schema)

	// The order and its event commit together, with the driver's own
	// tx.Commit; PostgreSQL's NOTIFY tells the bus at once.
	ordered, err := placeOrder(ctx, pool, bus, "Alice", 42.50, true)
	if err != nil {
		return err
	}
	committed := time.Now()
	fmt.Fprintf(out, "order %d committed with its event in one transaction\n", ordered)

	// A rolled back order takes its event with it: nothing is sent.
	dropped, err := placeOrder(ctx, pool, bus, "Bob", 7, false)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "order %d rolled back: its event is gone too\n", dropped)

	var h handled
	select {
	case h = <-got:
	case <-ctx.Done():
		return errors.New("the event was not handled in time")
	}
	fmt.Fprintf(out, "billing handled order %d for %s (%.2f) %s after the commit, group %s\n",
		h.msg.Payload.OrderID, h.msg.Payload.Customer, h.msg.Payload.Total,
		h.at.Sub(committed).Round(time.Millisecond), h.msg.Group)
	if h.msg.Payload.OrderID != ordered {
		return fmt.Errorf("handled order %d, want %d", h.msg.Payload.OrderID, ordered)
	}

	// The outbox row is marked Succeeded once the broker took the message.
	var id int64
	if _, err := fmt.Sscan(h.msg.ID, &id); err != nil {
		return err
	}
	for {
		r, err := store.Get(ctx, storage.Published, id)
		if err != nil {
			return err
		}
		if r.Status == storage.StatusSucceeded && r.ExpiresAt != nil {
			fmt.Fprintf(out, "outbox row %d: %s, kept until %s UTC\n", id, r.Status, r.ExpiresAt.Format(time.DateTime))
			break
		}
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("outbox row %d still %s", id, r.Status)
		}
	}
	select {
	case extra := <-got:
		return fmt.Errorf("unexpected event for order %d", extra.msg.Payload.OrderID)
	case <-time.After(200 * time.Millisecond):
	}
	return nil
}

// placeOrder inserts an order and publishes its event in one transaction,
// then commits it or rolls it back.
func placeOrder(ctx context.Context, pool *pgxpool.Pool, bus *cap.Bus[pgx.Tx], customer string, total float64, commit bool) (int64, error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	var id int64
	err = tx.QueryRow(ctx, `INSERT INTO example_orders (customer, total) VALUES ($1, $2) RETURNING id`,
		customer, total).Scan(&id)
	if err != nil {
		return 0, err
	}
	if err := bus.PublishTx(ctx, tx, "orders.created", OrderCreated{OrderID: id, Customer: customer, Total: total}); err != nil {
		return 0, err
	}
	if !commit {
		return id, tx.Rollback(ctx)
	}
	return id, tx.Commit(ctx)
}
