package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
)

// world is what every library shares in a run: the pool, a schema of the
// run's own with the business tables, and the names on RabbitMQ.
type world struct {
	cfg    *config
	pool   *pgxpool.Pool
	run    string // private to the run: the schema and every broker name hold it
	schema string
	ids    atomic.Int64

	body      []byte // the payload, JSON
	plainBody string // the baseline's row, as long as the outbox's Content

	mu        sync.Mutex
	queues    []string // AMQP names of the run, deleted by close
	exchanges []string
}

type payload struct {
	Seq int64  `json:"seq"`
	Pad string `json:"pad"`
}

func openWorld(ctx context.Context, cfg *config) (*world, error) {
	pcfg, err := pgxpool.ParseConfig(cfg.pgURL)
	if err != nil {
		return nil, err
	}
	pcfg.MaxConns = int32(min(cfg.writers+40, 90))
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err == nil {
		err = pool.Ping(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres (-postgres or CAP_TEST_POSTGRES): %w", err)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	w := &world{cfg: cfg, pool: pool, run: "peers" + hex.EncodeToString(b[:])}
	w.schema = w.run
	w.body, _ = json.Marshal(payload{Seq: 123456, Pad: strings.Repeat("x", cfg.size-30)})
	// The library's stored row holds the headers too (about 330 bytes).
	w.plainBody = strings.Repeat("y", len(w.body)+330)
	q := `"` + w.schema + `".`
	for _, stmt := range []string{
		`CREATE SCHEMA "` + w.schema + `"`,
		`CREATE TABLE ` + q + `orders (id bigint PRIMARY KEY, customer text NOT NULL, total int NOT NULL)`,
		`CREATE TABLE ` + q + `plain (id bigint PRIMARY KEY, body text NOT NULL)`,
	} {
		if _, err := pool.Exec(ctx, stmt); err != nil {
			pool.Close()
			return nil, err
		}
	}
	return w, nil
}

func (w *world) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := w.pool.Exec(ctx, `DROP SCHEMA IF EXISTS "`+w.schema+`" CASCADE`); err != nil {
		fmt.Fprintln(os.Stderr, "peers: drop schema:", err)
	}
	w.pool.Close()
	w.deleteAMQP()
}

func (w *world) table(name string) string { return `"` + w.schema + `"."` + name + `"` }

// order is the business statement every library's transaction runs.
func (w *world) order(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `INSERT INTO `+w.table("orders")+` (id, customer, total) VALUES ($1, $2, $3)`,
		w.ids.Add(1), "customer", 42)
	return err
}

// baselineTx is the order and a plain row as long as the outbox row.
func (w *world) baselineTx(ctx context.Context) error {
	return pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
		if err := w.order(ctx, tx); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO `+w.table("plain")+` (id, body) VALUES ($1, $2)`, w.ids.Add(1), w.plainBody)
		return err
	})
}

// declared remembers an exchange and a queue to delete at the end.
func (w *world) declared(exchange, queue string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.exchanges = append(w.exchanges, exchange)
	w.queues = append(w.queues, queue)
}

func (w *world) deleteAMQP() {
	conn, err := amqp.Dial(w.cfg.amqpURL)
	if err != nil {
		fmt.Fprintln(os.Stderr, "peers: rabbitmq clean-up:", err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, q := range w.queues {
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			if ch, err = conn.Channel(); err != nil {
				return
			}
		}
	}
	for _, x := range w.exchanges {
		if err := ch.ExchangeDelete(x, false, false); err != nil {
			if ch, err = conn.Channel(); err != nil {
				return
			}
		}
	}
}

// rawSend is the burn-down baseline: n messages of the payload's size to a
// topic exchange with a bound durable queue, persistent, on one channel
// with asynchronous confirms.
func (w *world) rawSend(ctx context.Context, n int) error {
	conn, err := amqp.Dial(w.cfg.amqpURL)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	exchange, queue := w.run+".raw", w.run+".raw.q"
	w.declared(exchange, queue)
	if err := ch.ExchangeDeclare(exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return err
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		return err
	}
	if err := ch.QueueBind(queue, "#", exchange, false, nil); err != nil {
		return err
	}
	if err := ch.Confirm(false); err != nil {
		return err
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, n+1))
	for i := range n {
		p := amqp.Publishing{DeliveryMode: amqp.Persistent, MessageId: strconv.Itoa(i), Body: w.body,
			Headers: amqp.Table{"cap-msg-id": strconv.Itoa(i), "cap-msg-name": "order.created"}}
		if err := ch.PublishWithContext(ctx, exchange, "order.created", false, false, p); err != nil {
			return err
		}
	}
	for range n {
		select {
		case c, ok := <-confirms:
			if !ok || !c.Ack {
				return errors.New("a raw publish was not confirmed")
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// closedLoop runs op from writers goroutines for d; it returns how many
// calls succeeded and the time taken. The first error stops it.
func closedLoop(ctx context.Context, writers int, d time.Duration, op func(context.Context) error) (int64, time.Duration, error) {
	var (
		n       atomic.Int64
		errOnce sync.Once
		first   error
		wg      sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	deadline := start.Add(d)
	for range writers {
		wg.Go(func() {
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if err := op(ctx); err != nil {
					errOnce.Do(func() { first = err; cancel() })
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	return n.Load(), time.Since(start), first
}

// counts is what every library's harness counts.
type counts struct {
	pub, got atomic.Int64
}

func (c *counts) published() int64 { return c.pub.Load() }
func (c *counts) handled() int64   { return c.got.Load() }

// drain waits until the consumer has every message published.
func (c *counts) drain(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for c.got.Load() < c.pub.Load() {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d consumed after %s", c.got.Load(), c.pub.Load(), limit)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(2 * time.Millisecond)
	}
	return nil
}

// lib is one library under test.
type lib interface {
	start(ctx context.Context) error // the background and the consumer
	stop()
	publishTx(ctx context.Context) error // one business transaction
	store(ctx context.Context, n int) error
	published() int64
	handled() int64
	drain(ctx context.Context, limit time.Duration) error
}

func (w *world) newLib(ctx context.Context, name string) (lib, error) {
	switch name {
	case "cap":
		return newCapLib(ctx, w)
	case "watermill":
		return newWatermillLib(ctx, w)
	default:
		return newRiverLib(ctx, w)
	}
}

// startLibs opens and starts the named libraries.
func (w *world) startLibs(ctx context.Context, names []string) (map[string]lib, error) {
	libs := map[string]lib{}
	for _, name := range names {
		l, err := w.newLib(ctx, name)
		if err != nil {
			stopLibs(libs)
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if err := l.start(ctx); err != nil {
			l.stop()
			stopLibs(libs)
			return nil, fmt.Errorf("%s: start: %w", name, err)
		}
		libs[name] = l
	}
	return libs, nil
}

func stopLibs(libs map[string]lib) {
	for _, l := range libs {
		l.stop()
	}
}
