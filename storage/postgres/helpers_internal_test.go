package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage"
)

// connectSchema connects to the test server (skipping when run by hand
// without one, failing in CI) and creates the tables of q's schema, which
// is dropped when the test ends. q comes from newQueries(schema, ...) with
// a schema of newSchemaName.
func connectSchema(t *testing.T, q *queries) *pgx.Conn {
	t.Helper()
	dsn := os.Getenv("CAP_TEST_POSTGRES")
	if dsn == "" {
		dsn = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL at %q is unreachable: %v", dsn, err)
		}
		t.Skipf("PostgreSQL at %q is unreachable: %v", dsn, err)
	}
	t.Cleanup(func() {
		_, err := conn.Exec(context.Background(), `DROP SCHEMA IF EXISTS "`+q.schema+`" CASCADE`)
		require.NoError(t, err)
		_ = conn.Close(context.Background())
	})
	_, err = conn.Exec(ctx, q.createSchema)
	require.NoError(t, err)
	for _, tbl := range []storage.Table{storage.Published, storage.Received} {
		tq := q.tables[tbl]
		_, err = conn.Exec(ctx, tq.createTable)
		require.NoError(t, err)
		for _, stmt := range tq.migrate {
			_, err = conn.Exec(ctx, stmt)
			require.NoError(t, err)
		}
	}
	return conn
}

// newSchemaName returns a fresh schema name.
func newSchemaName() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "cap_test_" + hex.EncodeToString(b)
}
