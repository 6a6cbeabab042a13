// Package faulttest is the fault-injection harness of the bus: it runs real
// producer and consumer processes (cmd/producer, cmd/consumer) against
// PostgreSQL (or MySQL/MariaDB, -storage mysql, or MongoDB, -storage
// mongodb, publishing without a business transaction) and RabbitMQ, kills them
// with SIGKILL, restarts the broker and the database under them, and then checks that every committed message was
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
	"database/sql"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/retry"
	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/mongodb"
	"github.com/go-cap/cap/storage/mysql"
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
	Storage   string // "postgres" (default), "mysql" or "mongodb"
	DSN       string // PostgreSQL URL, MySQL DSN (-storage mysql) or MongoDB URI (-storage mongodb)
	Business  string // -storage mongodb: the PostgreSQL URL of the business tables
	Transport string // a name RegisterTransport knows: "rabbitmq" (default), ...
	AMQP      string // RabbitMQ
	Broker    string // the address of any other transport's broker
	Schema    string // cap tables and business tables (MySQL: their prefix; MongoDB: the database too)
	Prefix    string // exchange, group and topic prefix: the run's own names
	Instance  string // instance name, recorded with each handling
	WorkerID  int64  // snowflake worker id, distinct per process
	Lease     time.Duration
	Poll      time.Duration
}

// Flags registers the configuration's flags on fs.
func (c *Config) Flags(fs *flag.FlagSet) {
	fs.StringVar(&c.Storage, "storage", "postgres", "storage: postgres, mysql or mongodb")
	fs.StringVar(&c.DSN, "dsn", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "PostgreSQL connection string, MySQL DSN or MongoDB URI")
	fs.StringVar(&c.Business, "business", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
		"with -storage mongodb: PostgreSQL connection string of the business tables")
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
	if c.Storage != "postgres" && c.Storage != "mysql" && c.Storage != "mongodb" {
		return fmt.Errorf("faulttest: unknown -storage %q", c.Storage)
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

// DB is a program's database: the bus's storage and the business
// statements, for the storage's transaction type.
type DB[TTx any] struct {
	Store storage.Storage[TTx]
	Close func()
	// NextOrder takes the next order number in tx, from a sequence: the
	// number of a rolled-back transaction is not used again.
	NextOrder func(ctx context.Context, tx TTx) (int64, error)
	// InsertOrder records the business row of order n in tx.
	InsertOrder func(ctx context.Context, tx TTx, n int64, producer, via string) error
	// RecordRollback records, on its own, that order n was rolled back.
	RecordRollback func(ctx context.Context, n int64) error
	// RecordHandled records a handling on its own, RecordHandledTx in tx.
	RecordHandled   func(ctx context.Context, n int64, group, instance, msgID string) error
	RecordHandledTx func(ctx context.Context, tx TTx, n int64, group, instance, msgID string) error
	// NoTx: the storage runs no business transaction (MongoDB on a server
	// without multi-document transactions). NextOrder, InsertOrder and
	// RecordHandled then ignore tx and commit on their own, the producer
	// publishes without a transaction and the consumer has no inbox group
	// (RecordHandledTx is nil).
	NoTx bool
}

// ConnectMongo opens the storage of a program on MongoDB (database
// c.Schema) and the business tables on PostgreSQL (c.Business, schema
// c.Schema): the harness's MongoDB server is FerretDB, which has no
// multi-document transactions, so the business rows and the messages
// cannot commit together and the programs run without a transaction.
func (c *Config) ConnectMongo(ctx context.Context, _ *slog.Logger) (*DB[*mongo.Session], error) {
	pg, err := c.connectBusiness(ctx)
	if err != nil {
		return nil, err
	}
	client, err := mongo.Connect(options.Client().ApplyURI(c.DSN).SetTimeout(10 * time.Second).
		SetServerSelectionTimeout(5 * time.Second))
	if err != nil {
		pg.Close()
		return nil, err
	}
	closeAll := func() {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = client.Disconnect(dctx)
		pg.Close()
	}
	store, err := mongodb.New(ctx, client, mongodb.Options{Database: c.Schema})
	if err != nil {
		closeAll()
		return nil, err
	}
	db := c.businessDB(pg, closeAll)
	return &DB[*mongo.Session]{
		Store:     store,
		Close:     closeAll,
		NextOrder: func(ctx context.Context, _ *mongo.Session) (int64, error) { return db.NextOrder(ctx, nil) },
		InsertOrder: func(ctx context.Context, _ *mongo.Session, n int64, p, v string) error {
			return db.InsertOrder(ctx, nil, n, p, v)
		},
		RecordRollback: db.RecordRollback,
		RecordHandled:  db.RecordHandled,
		NoTx:           true,
	}, nil
}

func (c *Config) connectBusiness(ctx context.Context) (*pgxpool.Pool, error) {
	pcfg, err := pgxpool.ParseConfig(c.Business)
	if err != nil {
		return nil, err
	}
	pcfg.MaxConns = 12
	return pgxpool.NewWithConfig(ctx, pcfg)
}

// ConnectPostgres opens the pool and the storage of a program.
func (c *Config) ConnectPostgres(ctx context.Context, log *slog.Logger) (*DB[pgx.Tx], error) {
	pcfg, err := pgxpool.ParseConfig(c.DSN)
	if err != nil {
		return nil, err
	}
	pcfg.MaxConns = 12
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, err
	}
	store, err := postgres.New(pool, postgres.Options{Schema: c.Schema, Logger: log})
	if err != nil {
		pool.Close()
		return nil, err
	}
	db := c.businessDB(pool, pool.Close)
	db.Store = store
	return db, nil
}

// businessDB returns the business statements on PostgreSQL, in the
// schema's tables; NextOrder's and InsertOrder's tx may be nil (autocommit).
func (c *Config) businessDB(pool *pgxpool.Pool, closeFn func()) *DB[pgx.Tx] {
	record := `INSERT INTO ` + Table(c.Schema, "handled") + ` (n, grp, instance, msg_id) VALUES ($1, $2, $3, $4)`
	next := `SELECT nextval('` + Table(c.Schema, "order_n") + `')`
	return &DB[pgx.Tx]{
		Close: closeFn,
		NextOrder: func(ctx context.Context, tx pgx.Tx) (int64, error) {
			var n int64
			if tx == nil {
				err := pool.QueryRow(ctx, next).Scan(&n)
				return n, err
			}
			err := tx.QueryRow(ctx, next).Scan(&n)
			return n, err
		},
		InsertOrder: func(ctx context.Context, tx pgx.Tx, n int64, producer, via string) error {
			q := `INSERT INTO ` + Table(c.Schema, "orders") + ` (n, producer, via) VALUES ($1, $2, $3)`
			var err error
			if tx == nil {
				_, err = pool.Exec(ctx, q, n, producer, via)
			} else {
				_, err = tx.Exec(ctx, q, n, producer, via)
			}
			return err
		},
		RecordRollback: func(ctx context.Context, n int64) error {
			_, err := pool.Exec(ctx, `INSERT INTO `+Table(c.Schema, "rolled_back")+` (n) VALUES ($1)`, n)
			return err
		},
		RecordHandled: func(ctx context.Context, n int64, group, instance, msgID string) error {
			_, err := pool.Exec(ctx, record, n, group, instance, msgID)
			return err
		},
		RecordHandledTx: func(ctx context.Context, tx pgx.Tx, n int64, group, instance, msgID string) error {
			_, err := tx.Exec(ctx, record, n, group, instance, msgID)
			return err
		},
	}
}

// MySQLTable returns the name of a business table of a MySQL run: the
// prefix of the run's cap tables, an underscore and the name.
func MySQLTable(prefix, name string) string { return "`" + prefix + "_" + name + "`" }

// CreateTablesMySQL creates the business tables of CreateTables in MySQL,
// beside the cap tables of the prefix; order_n is an AUTO_INCREMENT table
// standing for the sequence.
func CreateTablesMySQL(ctx context.Context, db *sql.DB, prefix string) error {
	for _, stmt := range []string{
		`CREATE TABLE IF NOT EXISTS ` + MySQLTable(prefix, "order_n") + ` (n bigint AUTO_INCREMENT PRIMARY KEY) ENGINE=InnoDB`,
		`CREATE TABLE IF NOT EXISTS ` + MySQLTable(prefix, "orders") + ` (n bigint PRIMARY KEY, producer varchar(50) NOT NULL,
			via varchar(20) NOT NULL, at datetime(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB`,
		`CREATE TABLE IF NOT EXISTS ` + MySQLTable(prefix, "rolled_back") + ` (n bigint PRIMARY KEY) ENGINE=InnoDB`,
		`CREATE TABLE IF NOT EXISTS ` + MySQLTable(prefix, "handled") + ` (n bigint NOT NULL, grp varchar(50) NOT NULL,
			instance varchar(50) NOT NULL, msg_id varchar(100) NOT NULL, at datetime(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
			INDEX handled_n (grp, n)) ENGINE=InnoDB`,
	} {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("faulttest: create tables: %w", err)
		}
	}
	return nil
}

// ConnectMySQL opens the *sql.DB and the storage of a program.
func (c *Config) ConnectMySQL(_ context.Context, log *slog.Logger) (*DB[*sql.Tx], error) {
	db, err := mysql.Open(c.DSN)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(12)
	db.SetMaxIdleConns(12)
	store, err := mysql.New(db, mysql.Options{TableNamePrefix: c.Schema, Logger: log})
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	record := `INSERT INTO ` + MySQLTable(c.Schema, "handled") + ` (n, grp, instance, msg_id) VALUES (?, ?, ?, ?)`
	return &DB[*sql.Tx]{
		Store: store,
		Close: func() { _ = db.Close() },
		NextOrder: func(ctx context.Context, tx *sql.Tx) (int64, error) {
			res, err := tx.ExecContext(ctx, `INSERT INTO `+MySQLTable(c.Schema, "order_n")+` () VALUES ()`)
			if err != nil {
				return 0, err
			}
			return res.LastInsertId()
		},
		InsertOrder: func(ctx context.Context, tx *sql.Tx, n int64, producer, via string) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO `+MySQLTable(c.Schema, "orders")+` (n, producer, via) VALUES (?, ?, ?)`,
				n, producer, via)
			return err
		},
		RecordRollback: func(ctx context.Context, n int64) error {
			_, err := db.ExecContext(ctx, `INSERT INTO `+MySQLTable(c.Schema, "rolled_back")+` (n) VALUES (?)`, n)
			return err
		},
		RecordHandled: func(ctx context.Context, n int64, group, instance, msgID string) error {
			_, err := db.ExecContext(ctx, record, n, group, instance, msgID)
			return err
		},
		RecordHandledTx: func(ctx context.Context, tx *sql.Tx, n int64, group, instance, msgID string) error {
			_, err := tx.ExecContext(ctx, record, n, group, instance, msgID)
			return err
		},
	}, nil
}

// OpenTransport opens the transport of a program.
func (c *Config) OpenTransport(log *slog.Logger) (transport.Transport, error) {
	open, ok := transports[c.Transport]
	if !ok {
		return nil, fmt.Errorf("faulttest: unknown -transport %q", c.Transport)
	}
	return open(c, log)
}

// NewBus returns the bus of a program.
func NewBus[TTx any](c *Config, store storage.Storage[TTx], tr transport.Transport, log *slog.Logger) (*cap.Bus[TTx], error) {
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

// LogLevel is the level of the programs' logs: Info, or Debug when
// CAP_FAULT_LOG=debug (the programs inherit the harness's environment), to
// see, for instance, a Kafka consumer's group generations.
func LogLevel() slog.Level {
	if os.Getenv("CAP_FAULT_LOG") == "debug" {
		return slog.LevelDebug
	}
	return slog.LevelInfo
}
