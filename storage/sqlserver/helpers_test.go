package sqlserver_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"sync"
	"testing"
	"time"

	_ "github.com/microsoft/go-mssqldb" // registers the "sqlserver" database/sql driver
	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage/sqlserver"
)

// envDSN names the variable holding the DSN of the SQL Server the
// integration tests run against. No SQL Server runs where this package is
// developed, so without it they are skipped, in CI too.
const envDSN = "CAP_TEST_SQLSERVER"

const skipMessage = "no SQL Server: set " + envDSN + " to a go-mssqldb DSN of a database this test may create " +
	"schemas in, e.g. " + envDSN + "='sqlserver://sa:Secret_123@127.0.0.1:1433?database=test', " +
	"to run the integration tests against it"

// One *sql.DB for the whole test binary.
var (
	connectOnce sync.Once
	sharedDB    *sql.DB
	connectErr  error
)

// connect returns the shared database, skipping the test when
// CAP_TEST_SQLSERVER is empty and failing it when the server it names is
// unreachable.
func connect(t testing.TB) *sql.DB {
	t.Helper()
	dsn := os.Getenv(envDSN)
	if dsn == "" {
		t.Skip(skipMessage)
	}
	connectOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		sharedDB, connectErr = sql.Open("sqlserver", dsn)
		if connectErr != nil {
			return
		}
		sharedDB.SetMaxOpenConns(48)
		sharedDB.SetMaxIdleConns(48)
		connectErr = sharedDB.PingContext(ctx)
	})
	if connectErr != nil {
		t.Fatalf("SQL Server at %s is unreachable: %v", envDSN, connectErr)
	}
	return sharedDB
}

// openDB returns a *sql.DB of its own with at most conns connections, for
// a bus test, so that the bus's workers do not starve the other tests.
func openDB(t *testing.T, conns int) *sql.DB {
	t.Helper()
	connect(t)
	db, err := sql.Open("sqlserver", os.Getenv(envDSN))
	require.NoError(t, err)
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// newSchema returns a fresh schema name; the schema and every table in it
// are dropped when the test ends.
func newSchema(t testing.TB) string {
	t.Helper()
	db := connect(t)
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema := "cap_test_" + hex.EncodeToString(b)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := db.ExecContext(ctx, `DECLARE @sql nvarchar(max) = N'';
SELECT @sql = @sql + N'DROP TABLE ' + QUOTENAME(s.name) + N'.' + QUOTENAME(t.name) + N';'
FROM sys.tables AS t INNER JOIN sys.schemas AS s ON s.schema_id = t.schema_id WHERE s.name = @p1;
EXEC sp_executesql @sql;
IF SCHEMA_ID(@p1) IS NOT NULL EXEC(N'DROP SCHEMA [' + @p1 + N']');`, schema)
		require.NoError(t, err)
	})
	return schema
}

// newStore returns a migrated storage in a schema of its own.
func newStore(t testing.TB, opts sqlserver.Options) *sqlserver.Store {
	t.Helper()
	db := connect(t)
	if opts.Schema == "" {
		opts.Schema = newSchema(t)
	}
	s, err := sqlserver.New(db, opts)
	require.NoError(t, err)
	require.NoError(t, s.Migrate(context.Background()))
	return s
}

// execSQL runs a statement on the shared database.
func execSQL(t testing.TB, query string, args ...any) {
	t.Helper()
	_, err := connect(t).ExecContext(context.Background(), query, args...)
	require.NoError(t, err, query)
}
