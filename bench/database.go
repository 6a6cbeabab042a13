package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/postgres"
	"github.com/go-cap/cap/storage/sqlite"
)

// database is a storage under test, with the business tables the scenarios
// write beside the outbox.
type database[TTx any] struct {
	store storage.Storage[TTx]
	// execTx runs a statement in the caller's transaction.
	execTx func(ctx context.Context, tx TTx, query string, args ...any) error
	// exec runs a statement in a transaction of its own.
	exec func(ctx context.Context, query string, args ...any) error
	// orders is the business table (id, customer, total); plain is a table
	// of (id, body) rows with no index but its primary key.
	insertOrder string
	insertPlain string
	close       func()

	ids   atomic.Int64
	stats *statStore[TTx] // with -stats: the bus's storage, counted

	// pg is the PostgreSQL pool, for -profile-db; nil on other databases.
	pg *pgxpool.Pool
}

// busStore is the storage the bus runs on.
func (db *database[TTx]) busStore() storage.Storage[TTx] {
	if db.stats != nil {
		if _, ok := db.store.(storage.ReceivedChecker); ok {
			return checkedStatStore[TTx]{db.stats}
		}
		return db.stats
	}
	return db.store
}

// nextID returns a fresh primary key for the business tables.
func (db *database[TTx]) nextID() int64 { return db.ids.Add(1) }

// newName returns a name private to this run.
func newName(prefix string) string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// openSQLite creates a database file in a directory of its own, removed by
// close.
func openSQLite(ctx context.Context, cfg *config) (*database[*sql.Tx], error) {
	dir, err := os.MkdirTemp("", "capbench-")
	if err != nil {
		return nil, err
	}
	sdb, err := sqlite.Open(filepath.Join(dir, "bench.db"))
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	closeAll := func() {
		_ = sdb.Close()
		_ = os.RemoveAll(dir)
	}
	store, err := sqlite.New(sdb, sqlite.Options{})
	if err != nil {
		closeAll()
		return nil, err
	}
	db := &database[*sql.Tx]{
		store: store,
		execTx: func(ctx context.Context, tx *sql.Tx, q string, args ...any) error {
			_, err := tx.ExecContext(ctx, q, args...)
			return err
		},
		exec: func(ctx context.Context, q string, args ...any) error {
			_, err := sdb.ExecContext(ctx, q, args...)
			return err
		},
		insertOrder: `INSERT INTO bench_orders (id, customer, total) VALUES (?, ?, ?)`,
		insertPlain: `INSERT INTO bench_plain (id, body) VALUES (?, ?)`,
		close:       closeAll,
	}
	if err := db.setup(ctx, []string{
		`CREATE TABLE bench_orders (id INTEGER PRIMARY KEY NOT NULL, customer TEXT NOT NULL, total INTEGER NOT NULL)`,
		`CREATE TABLE bench_plain (id INTEGER PRIMARY KEY NOT NULL, body TEXT NOT NULL)`,
	}); err != nil {
		closeAll()
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	return db, nil
}

// openPostgres creates a schema of its own, dropped by close, holding both
// the outbox tables and the business tables.
func openPostgres(ctx context.Context, cfg *config) (*database[pgx.Tx], error) {
	pcfg, err := pgxpool.ParseConfig(cfg.postgresURL)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	// Every writer, the bus's claimers, senders' outcome writers, consumers
	// and workers: the pool must not be what limits the run.
	pcfg.MaxConns = int32(min(cfg.writers+16, 60))
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(cctx, pcfg)
	if err == nil {
		err = pool.Ping(cctx)
	}
	if err != nil {
		if pool != nil {
			pool.Close()
		}
		return nil, fmt.Errorf("postgres at %s (set -postgres or CAP_TEST_POSTGRES): %w", redactURL(cfg.postgresURL), err)
	}
	schema := newName("capbench_")
	closeAll := func() {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := pool.Exec(dctx, `DROP SCHEMA IF EXISTS "`+schema+`" CASCADE`); err != nil {
			fmt.Fprintf(os.Stderr, "bench: drop schema %s: %v\n", schema, err)
		}
		pool.Close()
	}
	store, err := postgres.New(pool, postgres.Options{Schema: schema, Logger: cfg.logger()})
	if err != nil {
		closeAll()
		return nil, err
	}
	q := `"` + schema + `".`
	db := &database[pgx.Tx]{
		store: store,
		execTx: func(ctx context.Context, tx pgx.Tx, query string, args ...any) error {
			_, err := tx.Exec(ctx, query, args...)
			return err
		},
		exec: func(ctx context.Context, query string, args ...any) error {
			_, err := pool.Exec(ctx, query, args...)
			return err
		},
		insertOrder: `INSERT INTO ` + q + `bench_orders (id, customer, total) VALUES ($1, $2, $3)`,
		insertPlain: `INSERT INTO ` + q + `bench_plain (id, body) VALUES ($1, $2)`,
		close:       closeAll,
		pg:          pool,
	}
	// The schema first: Migrate creates it, the business tables go in it.
	if err := db.setup(ctx, []string{
		`CREATE TABLE ` + q + `bench_orders (id bigint PRIMARY KEY, customer text NOT NULL, total int NOT NULL)`,
		`CREATE TABLE ` + q + `bench_plain (id bigint PRIMARY KEY, body text NOT NULL)`,
	}); err != nil {
		closeAll()
		return nil, fmt.Errorf("postgres: %w", err)
	}
	return db, nil
}

// setup migrates the storage and creates the business tables.
func (db *database[TTx]) setup(ctx context.Context, ddl []string) error {
	if err := db.store.Migrate(ctx); err != nil {
		return err
	}
	for _, q := range ddl {
		if err := db.exec(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

// inTx runs fn in a transaction of the storage, committed when fn succeeds.
func (db *database[TTx]) inTx(ctx context.Context, fn func(tx TTx) error) error {
	tx, err := db.store.Begin(ctx)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = db.store.Rollback(context.WithoutCancel(ctx), tx)
		return err
	}
	return db.store.Commit(ctx, tx)
}

// succeeded returns the number of Published rows marked Succeeded.
func (db *database[TTx]) succeeded(ctx context.Context, t storage.Table) (int64, error) {
	c, err := db.store.Counts(ctx, t)
	if err != nil {
		return 0, err
	}
	return c[storage.StatusSucceeded], nil
}

// redactURL hides the password of a URL for error messages.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}
