package postgres_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage/postgres"
)

const defaultDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

func dsn() string {
	if s := os.Getenv("CAP_TEST_POSTGRES"); s != "" {
		return s
	}
	return defaultDSN
}

// One pool and one *sql.DB for the whole test binary: parallel tests would
// otherwise exhaust the server's connections.
var (
	connectOnce sync.Once
	sharedPool  *pgxpool.Pool
	sharedDB    *sql.DB
	connectErr  error
)

func connect(t testing.TB) (*pgxpool.Pool, *sql.DB) {
	t.Helper()
	connectOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cfg, err := pgxpool.ParseConfig(dsn())
		if err != nil {
			connectErr = err
			return
		}
		cfg.MaxConns = 24
		sharedPool, connectErr = pgxpool.NewWithConfig(ctx, cfg)
		if connectErr != nil {
			return
		}
		if connectErr = sharedPool.Ping(ctx); connectErr != nil {
			return
		}
		sharedDB, connectErr = sql.Open("pgx", dsn())
		if connectErr != nil {
			return
		}
		sharedDB.SetMaxOpenConns(24)
		sharedDB.SetMaxIdleConns(24)
		connectErr = sharedDB.PingContext(ctx)
	})
	if connectErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL at CAP_TEST_POSTGRES=%q is unreachable: %v", dsn(), connectErr)
		}
		t.Skipf("PostgreSQL at CAP_TEST_POSTGRES=%q is unreachable: %v", dsn(), connectErr)
	}
	return sharedPool, sharedDB
}

// newSchema returns a fresh schema name, dropped when the test ends.
func newSchema(t testing.TB) string {
	t.Helper()
	pool, _ := connect(t)
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema := "cap_test_" + hex.EncodeToString(b)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := pool.Exec(ctx, `DROP SCHEMA IF EXISTS "`+schema+`" CASCADE`)
		require.NoError(t, err)
	})
	return schema
}

// newPgx returns a migrated storage over the pool in a schema of its own.
func newPgx(t testing.TB, opts postgres.Options) *postgres.Store[pgx.Tx] {
	t.Helper()
	pool, _ := connect(t)
	if opts.Schema == "" {
		opts.Schema = newSchema(t)
	}
	s, err := postgres.New(pool, opts)
	require.NoError(t, err)
	require.NoError(t, s.Migrate(context.Background()))
	return s
}

// newSQL returns a migrated storage over the *sql.DB in a schema of its own.
func newSQL(t testing.TB, opts postgres.Options) *postgres.Store[*sql.Tx] {
	t.Helper()
	_, db := connect(t)
	if opts.Schema == "" {
		opts.Schema = newSchema(t)
	}
	s, err := postgres.NewSQL(db, opts)
	require.NoError(t, err)
	require.NoError(t, s.Migrate(context.Background()))
	return s
}

// psql runs a statement on the shared pool.
func psql(t testing.TB, query string, args ...any) {
	t.Helper()
	pool, _ := connect(t)
	_, err := pool.Exec(context.Background(), query, args...)
	require.NoError(t, err, query)
}
