// Command kafka runs the quickstart's shop on Kafka: the outbox in a SQLite
// file in a temporary directory, the messages through a Kafka cluster.
//
//	go run ./examples/kafka -brokers 127.0.0.1:9092
//
// The topics order.created and invoice.issued are created on first use
// with the broker's default partition count; the consumer groups are
// cap.queue.billing.v1, cap.queue.shipping.v1 and cap.queue.shop.v1. Each
// run tags its orders, so that messages an earlier run left on the topics
// are recognised and skipped.
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/retry"
	"github.com/go-cap/cap/storage/sqlite"
	"github.com/go-cap/cap/transport/kafka"
)

// OrderCreated is the event the shop publishes. Run tells this run's
// orders from those of earlier runs still on the topic.
type OrderCreated struct {
	Run   string  `json:"run"`
	ID    int     `json:"id"`
	Item  string  `json:"item"`
	Total float64 `json:"total"`
}

// Invoice is the reply the billing service sends back.
type Invoice struct {
	Run     string `json:"run"`
	OrderID int    `json:"orderId"`
	Number  string `json:"number"`
}

func main() {
	brokers := flag.String("brokers", "127.0.0.1:9092", "comma-separated Kafka bootstrap brokers (host:port)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, kafka.Config{Brokers: splitBrokers(*brokers)}, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kafka example:", err)
		os.Exit(1)
	}
}

// splitBrokers returns the addresses of a comma-separated list.
func splitBrokers(s string) []string {
	var out []string
	for _, b := range strings.Split(s, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// run publishes two orders (one commits, one rolls back) through Kafka and
// waits, for at most a minute, until billing, shipping (after one failed
// attempt) and the shop's invoice handler have run; it writes what happens
// to out.
func run(ctx context.Context, kcfg kafka.Config, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(out, format+"\n", args...)
	}

	dir, err := os.MkdirTemp("", "cap-kafka-example")
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

	if kcfg.Logger == nil {
		kcfg.Logger = log
	}
	tr, err := kafka.New(kcfg)
	if err != nil {
		return err
	}
	defer tr.Close()
	// Fail early, with the reason, when no broker answers or the
	// credentials are refused.
	if err := tr.Check(ctx); err != nil {
		return err
	}
	say("kafka:    connected to %s", strings.Join(kcfg.Brokers, ","))

	bus, err := cap.New(store, tr, cap.Options{
		Logger: log,
		// Retry quickly so the demo shows it; CAP's default waits 60 s
		// after three immediate attempts.
		RetryPolicy: retry.CAP{MaxRetries: 5, ImmediateAttempts: -1, Interval: 200 * time.Millisecond},
	})
	if err != nil {
		return err
	}

	runID := strconv.FormatInt(time.Now().UnixNano(), 36)
	var handled sync.WaitGroup
	var billed, shipped, invoiced sync.Once
	handled.Add(3)

	// Billing handles the order and replies with an invoice to the callback
	// topic the shop named.
	if err := cap.SubscribeReply(bus, "order.created", "billing", func(ctx context.Context, m cap.Msg[OrderCreated]) (Invoice, error) {
		if m.Payload.Run != runID {
			return Invoice{}, nil // an earlier run's order; its invoice is ignored too
		}
		say("billing:  order %d (%s, %.2f) received", m.Payload.ID, m.Payload.Item, m.Payload.Total)
		billed.Do(handled.Done)
		return Invoice{Run: runID, OrderID: m.Payload.ID, Number: fmt.Sprintf("INV-%04d", m.Payload.ID)}, nil
	}); err != nil {
		return err
	}
	// Shipping fails the first time (its warehouse is "down") and succeeds
	// on the retry.
	var attempts atomic.Int32
	if err := cap.Subscribe(bus, "order.created", "shipping", func(ctx context.Context, m cap.Msg[OrderCreated]) error {
		if m.Payload.Run != runID {
			return nil
		}
		n := attempts.Add(1)
		if n == 1 {
			say("shipping: order %d failed: warehouse unreachable (attempt %d, will retry)", m.Payload.ID, n)
			return errors.New("warehouse unreachable")
		}
		say("shipping: order %d shipped on attempt %d", m.Payload.ID, n)
		shipped.Do(handled.Done)
		return nil
	}); err != nil {
		return err
	}
	// The shop receives the invoice.
	if err := cap.Subscribe(bus, "invoice.issued", "shop", func(ctx context.Context, m cap.Msg[Invoice]) error {
		if m.Payload.Run != runID {
			return nil
		}
		say("shop:     invoice %s for order %d (reply to message %s)", m.Payload.Number, m.Payload.OrderID, m.Headers["cap-corr-id"])
		invoiced.Do(handled.Done)
		return nil
	}); err != nil {
		return err
	}

	// Start creates the topics and subscribes the groups; a new group
	// reads from the earliest offset, so nothing published after Start is
	// missed while it joins.
	if err := bus.Start(ctx); err != nil {
		return err
	}
	defer bus.Shutdown(context.Background())

	// Order 1: the business row and the message commit together.
	err = bus.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO orders VALUES (1, 'book', 12.5)`); err != nil {
			return err
		}
		return bus.PublishTx(ctx, tx, "order.created", OrderCreated{Run: runID, ID: 1, Item: "book", Total: 12.5},
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
		if err := bus.PublishTx(ctx, tx, "order.created", OrderCreated{Run: runID, ID: 2, Item: "lamp", Total: 30}); err != nil {
			return err
		}
		return errors.New("payment declined")
	})
	say("shop:     order 2 rolled back (%v): its message is never sent", err)

	done := make(chan struct{})
	go func() {
		handled.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("timed out waiting for the handlers: %w", ctx.Err())
	}

	var orders, published int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM orders`).Scan(&orders); err != nil {
		return err
	}
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM "cap.published"`).Scan(&published); err != nil {
		return err
	}
	say("done:     %d order row, %d published messages (the order and its invoice reply)", orders, published)
	h := bus.Health(ctx)
	say("health:   healthy %v (storage %v, transport %s %v)", h.Healthy, h.Storage.Healthy, h.Transport.Name, h.Transport.Healthy)
	return nil
}
