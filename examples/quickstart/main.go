// Command quickstart shows the outbox and the bus with no server: a SQLite
// file in a temporary directory and the in-memory broker.
//
//	go run ./examples/quickstart
package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/retry"
	"github.com/go-cap/cap/storage/sqlite"
	"github.com/go-cap/cap/transport/memory"
)

// OrderCreated is the event the shop publishes.
type OrderCreated struct {
	ID    int     `json:"id"`
	Item  string  `json:"item"`
	Total float64 `json:"total"`
}

// Invoice is the reply the billing service sends back.
type Invoice struct {
	OrderID int    `json:"orderId"`
	Number  string `json:"number"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	dir, err := os.MkdirTemp("", "cap-quickstart")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	db, err := sqlite.Open(filepath.Join(dir, "shop.db"))
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT, total REAL)`); err != nil {
		return err
	}
	store, err := sqlite.New(db, sqlite.Options{})
	if err != nil {
		return err
	}
	broker := memory.New()
	defer broker.Close()

	bus, err := cap.New(store, broker, cap.Options{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		// Retry quickly so the demo shows it; CAP's default waits 60 s
		// after three immediate attempts.
		RetryPolicy: retry.CAP{MaxRetries: 5, ImmediateAttempts: -1, Interval: 200 * time.Millisecond},
	})
	if err != nil {
		return err
	}

	var wg sync.WaitGroup
	wg.Add(3) // billing, shipping (after one retry) and the invoice reply
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Printf(format+"\n", args...)
	}

	// Billing handles the order and replies with an invoice to the callback
	// topic the shop named.
	if err := cap.SubscribeReply(bus, "order.created", "billing", func(ctx context.Context, m cap.Msg[OrderCreated]) (Invoice, error) {
		say("billing:  order %d (%s, %.2f) received", m.Payload.ID, m.Payload.Item, m.Payload.Total)
		wg.Done()
		return Invoice{OrderID: m.Payload.ID, Number: fmt.Sprintf("INV-%04d", m.Payload.ID)}, nil
	}); err != nil {
		return err
	}
	// Shipping fails the first time (its warehouse is "down") and succeeds
	// on the retry.
	attempts := 0
	if err := cap.Subscribe(bus, "order.created", "shipping", func(ctx context.Context, m cap.Msg[OrderCreated]) error {
		attempts++
		if attempts == 1 {
			say("shipping: order %d failed: warehouse unreachable (attempt %d, will retry)", m.Payload.ID, attempts)
			return errors.New("warehouse unreachable")
		}
		say("shipping: order %d shipped on attempt %d (retries so far: %d)", m.Payload.ID, attempts, m.Retries)
		wg.Done()
		return nil
	}); err != nil {
		return err
	}
	// The shop receives the invoice.
	if err := cap.Subscribe(bus, "invoice.issued", "shop", func(ctx context.Context, m cap.Msg[Invoice]) error {
		say("shop:     invoice %s for order %d (reply to message %s)", m.Payload.Number, m.Payload.OrderID, m.Headers["cap-corr-id"])
		wg.Done()
		return nil
	}); err != nil {
		return err
	}

	if err := bus.Start(ctx); err != nil {
		return err
	}
	defer bus.Shutdown(context.Background())

	// Order 1: the business row and the message commit together.
	err = bus.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO orders VALUES (1, 'book', 12.5)`); err != nil {
			return err
		}
		return bus.PublishTx(ctx, tx, "order.created", OrderCreated{ID: 1, Item: "book", Total: 12.5},
			cap.WithCallback("invoice.issued"))
	})
	if err != nil {
		return err
	}
	say("shop:     order 1 committed with its message")

	// Order 2: the transaction rolls back, and so does its message.
	err = bus.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO orders VALUES (2, 'lamp', 30)`); err != nil {
			return err
		}
		if err := bus.PublishTx(ctx, tx, "order.created", OrderCreated{ID: 2, Item: "lamp", Total: 30}); err != nil {
			return err
		}
		return errors.New("payment declined")
	})
	say("shop:     order 2 rolled back (%v): its message is never sent", err)

	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("timed out waiting for the handlers: %w", ctx.Err())
	}

	var orders, published int
	_ = db.QueryRowContext(ctx, `SELECT COUNT(*) FROM orders`).Scan(&orders)
	_ = db.QueryRowContext(ctx, `SELECT COUNT(*) FROM "cap.published"`).Scan(&published)
	say("done:     %d order row, %d published messages (the order and its invoice reply)", orders, published)
	return nil
}
