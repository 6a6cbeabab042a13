// Package faulttest is the fault-injection harness of the bus: it runs real
// producer and consumer processes (cmd/producer, cmd/consumer) against
// PostgreSQL and RabbitMQ, kills them with SIGKILL, restarts the broker and
// the database under them, and then checks that every committed message was
// handled, that no rolled-back one was, and that the transactional handler's
// effect happened exactly once.
//
// The harness itself is a test behind the build tag "faults":
//
//	go test -tags=faults -run TestFaults -v -timeout 30m ./internal/faulttest/
//
// This file holds what the programs and the test share: the payload, the
// names, the business tables and the bus's configuration.
package faulttest

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/retry"
	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/postgres"
	"github.com/go-cap/cap/transport"
	"github.com/go-cap/cap/transport/rabbitmq"
)

// Topic is the topic the producers publish to, after the run's prefix.
const Topic = "order.created"

// The consumer's two groups: GroupPlain's handler records each handling
// on its own (at least once), GroupInbox's in the transaction that marks the
// message handled (exactly once).
const (
	GroupPlain = "plain"
	GroupInbox = "inbox"
)

// RollbackEvery makes every order whose number n has n % RollbackEvery ==
// RollbackRemainder roll back: a known share (one in ten) of the business
// transactions.
const (
	RollbackEvery     = 10
	RollbackRemainder = 7
)

// RolledBack reports whether order n is one the producer rolls back.
func RolledBack(n int64) bool { return n%RollbackEvery == RollbackRemainder }

// Order is the payload of a message: the number of the business row
// committed with it.
type Order struct {
	N        int64  `json:"n"`
	Producer string `json:"producer"`
}

// Ready is the line a program writes to its standard output once its bus
// has started (for a consumer: once its groups are bound on the broker).
const Ready = "READY"

// Config is what both programs are told on their command line.
type Config struct {
	DSN       string // PostgreSQL
	Transport string // a name RegisterTransport knows: "rabbitmq" (default), ...
	AMQP      string // RabbitMQ
	Broker    string // the address of any other transport's broker
	Schema    string // cap tables and business tables
	Prefix    string // exchange, group and topic prefix: the run's own names
	Instance  string // instance name, recorded with each handling
	WorkerID  int64  // snowflake worker id, distinct per process
	Lease     time.Duration
	Poll      time.Duration
}

// Flags registers the configuration's flags on fs.
func (c *Config) Flags(fs *flag.FlagSet) {
	fs.StringVar(&c.DSN, "dsn", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "PostgreSQL connection string")
	fs.StringVar(&c.Transport, "transport", "rabbitmq", "transport: a name RegisterTransport knows")
	fs.StringVar(&c.Broker, "broker", "", "address of the broker of a transport other than rabbitmq")
	fs.StringVar(&c.AMQP, "amqp", "amqp://guest:guest@127.0.0.1:5672/", "RabbitMQ URL")
	fs.StringVar(&c.Schema, "schema", "", "schema of the cap and business tables")
	fs.StringVar(&c.Prefix, "prefix", "", "exchange, group and topic prefix")
	fs.StringVar(&c.Instance, "instance", "i0", "instance name")
	fs.Int64Var(&c.WorkerID, "worker-id", 1, "snowflake worker id, distinct per process")
	fs.DurationVar(&c.Lease, "lease", 3*time.Second, "cap.Options.Lease")
	fs.DurationVar(&c.Poll, "poll", 250*time.Millisecond, "cap.Options.PollInterval")
}

// Check reports a configuration a program cannot run with.
func (c *Config) Check() error {
	if err := storage.ValidateIdentifier("schema", c.Schema); err != nil {
		return err
	}
	if c.Prefix == "" {
		return fmt.Errorf("faulttest: -prefix is required")
	}
	if _, ok := transports[c.Transport]; !ok {
		return fmt.Errorf("faulttest: unknown -transport %q", c.Transport)
	}
	return nil
}

// TransportOpener opens the transport of a program from its configuration:
// c.Broker (or c.AMQP) locates the broker, c.Prefix is private to the
// scenario (the bus's group and topic prefix; RabbitMQ's exchange), and
// c.Instance names the program. The transport reconnects quickly (within
// about a second) after the broker comes back.
type TransportOpener func(c *Config, log *slog.Logger) (transport.Transport, error)

// transports maps -transport names to their openers. Each transport other
// than RabbitMQ adds itself from an init function in a file of its own
// (transport_<name>.go), so the programs can run on it.
var transports = map[string]TransportOpener{"rabbitmq": openRabbitMQ}

// RegisterTransport makes -transport name available to the programs; it is
// called from init functions only.
func RegisterTransport(name string, open TransportOpener) { transports[name] = open }

func openRabbitMQ(c *Config, log *slog.Logger) (transport.Transport, error) {
	return rabbitmq.New(rabbitmq.Config{
		URL:               c.AMQP,
		ExchangeName:      c.Prefix,
		ConnectionName:    c.Prefix + " " + c.Instance,
		ReconnectDelay:    100 * time.Millisecond,
		MaxReconnectDelay: time.Second,
		Logger:            log,
	})
}

// Table returns the qualified name of a business table of the schema.
func Table(schema, name string) string { return `"` + schema + `"."` + name + `"` }

// CreateTables creates the schema and the business tables: orders (one row
// per committed business transaction), rolled_back (the numbers a producer
// rolled back, recorded after the fact) and handled (one row per handling,
// with no uniqueness, so that duplicates show).
func CreateTables(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	for _, stmt := range []string{
		`CREATE SCHEMA IF NOT EXISTS "` + schema + `"`,
		`CREATE SEQUENCE IF NOT EXISTS ` + Table(schema, "order_n"),
		`CREATE TABLE IF NOT EXISTS ` + Table(schema, "orders") + ` (n bigint PRIMARY KEY, producer text NOT NULL,
			via text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())`,
		`CREATE TABLE IF NOT EXISTS ` + Table(schema, "rolled_back") + ` (n bigint PRIMARY KEY)`,
		`CREATE TABLE IF NOT EXISTS ` + Table(schema, "handled") + ` (n bigint NOT NULL, grp text NOT NULL,
			instance text NOT NULL, msg_id text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())`,
		`CREATE INDEX IF NOT EXISTS handled_n ON ` + Table(schema, "handled") + ` (grp, n)`,
	} {
		if _, err := pool.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("faulttest: create tables: %w", err)
		}
	}
	return nil
}

// Retry is the retry policy of the programs: CAP's three immediate
// attempts, then one every half second, for long enough to outlast the
// outages the harness causes (a message that gives up counts as lost).
var Retry = retry.CAP{MaxRetries: 1000, Interval: 500 * time.Millisecond}

// Connect opens the pool, the storage and the transport of a program.
func (c *Config) Connect(ctx context.Context, log *slog.Logger) (*pgxpool.Pool, *postgres.Store[pgx.Tx], transport.Transport, error) {
	pcfg, err := pgxpool.ParseConfig(c.DSN)
	if err != nil {
		return nil, nil, nil, err
	}
	pcfg.MaxConns = 12
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, nil, nil, err
	}
	store, err := postgres.New(pool, postgres.Options{Schema: c.Schema, Logger: log})
	if err != nil {
		pool.Close()
		return nil, nil, nil, err
	}
	open, ok := transports[c.Transport]
	if !ok {
		pool.Close()
		return nil, nil, nil, fmt.Errorf("faulttest: unknown -transport %q", c.Transport)
	}
	tr, err := open(c, log)
	if err != nil {
		pool.Close()
		return nil, nil, nil, err
	}
	return pool, store, tr, nil
}

// NewBus returns the bus of a program.
func (c *Config) NewBus(store *postgres.Store[pgx.Tx], tr transport.Transport, log *slog.Logger) (*cap.Bus[pgx.Tx], error) {
	wid := c.WorkerID
	return cap.New(store, tr, cap.Options{
		GroupNamePrefix: c.Prefix,
		TopicNamePrefix: c.Prefix,
		Lease:           c.Lease,
		PollInterval:    c.Poll,
		RetryPolicy:     Retry,
		InstanceID:      c.Instance,
		WorkerID:        &wid,
		ShutdownTimeout: 5 * time.Second,
		Logger:          log,
	})
}
