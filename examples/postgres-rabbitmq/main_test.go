package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
)

// unreachable skips the test when a server is down (fails it when CI=true).
func unreachable(t *testing.T, what string, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s unreachable: %v", what, err)
	}
	t.Skipf("%s unreachable: %v", what, err)
}

func getenv(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// TestRun runs the service on its own schemas and queues, which it removes
// afterwards.
func TestRun(t *testing.T) {
	dbURL := getenv("CAP_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	mqURL := getenv("CAP_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Closed by cleanups, which run after the one that removes the test's
	// schemas and queues (registered later).
	pool, err := pgxpool.New(ctx, dbURL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	if err := pool.Ping(ctx); err != nil {
		unreachable(t, "PostgreSQL", err)
	}
	conn, err := amqp.Dial(mqURL)
	if err != nil {
		unreachable(t, "RabbitMQ", err)
	}
	t.Cleanup(func() { _ = conn.Close() })

	var b [5]byte
	_, _ = rand.Read(b[:])
	suffix := hex.EncodeToString(b[:])
	cfg := config{
		DatabaseURL: dbURL,
		RabbitMQURL: mqURL,
		ShopSchema:  "shop_test_" + suffix,
		CAPSchema:   "cap_test_" + suffix,
		GroupPrefix: "example-test-" + suffix,
		TopicPrefix: "test" + suffix, // the example's own queues must not get these orders
		Logger:      slog.New(slog.NewTextHandler(t.Output(), nil)),
	}
	t.Cleanup(func() {
		// Queues left behind would collect the orders of every later run.
		_, _ = pool.Exec(context.Background(), `DROP SCHEMA IF EXISTS `+cfg.ShopSchema+` CASCADE; DROP SCHEMA IF EXISTS `+cfg.CAPSchema+` CASCADE`)
		if ch, err := conn.Channel(); err == nil {
			for _, g := range []string{"billing", "notifications"} {
				_, _ = ch.QueueDelete(cfg.GroupPrefix+"."+g+".v1", false, false, false)
			}
		}
	})

	require.NoError(t, run(ctx, cfg))

	var orders, invoices int
	require.NoError(t, pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM `+cfg.ShopSchema+`.orders), (SELECT count(*) FROM `+cfg.ShopSchema+`.invoices)`).Scan(&orders, &invoices))
	require.Equal(t, 4, orders)
	require.Equal(t, 4, invoices)
}
