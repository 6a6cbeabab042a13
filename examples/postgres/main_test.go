package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// TestRun runs the example in a schema of its own.
func TestRun(t *testing.T) {
	dsn := os.Getenv("CAP_TEST_POSTGRES")
	if dsn == "" {
		dsn = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL at %q is unreachable: %v", dsn, err)
		}
		t.Skipf("PostgreSQL at %q is unreachable: %v", dsn, err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema := "cap_test_" + hex.EncodeToString(b)
	t.Cleanup(func() {
		_, err := conn.Exec(context.Background(), `DROP SCHEMA IF EXISTS "`+schema+`" CASCADE`)
		require.NoError(t, err)
	})

	var out bytes.Buffer
	require.NoError(t, run(ctx, dsn, schema, &out))
	require.Regexp(t, `(?s)committed with its event.*rolled back.*billing handled order \d+ for Alice \(42\.50\).*: Succeeded`, out.String())
}
