package mysql_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql" // registers the "mysql" database/sql driver
	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage/mysql"
)

const defaultDSN = "root@tcp(127.0.0.1:3306)/test?parseTime=true&interpolateParams=true"

func dsn() string {
	if s := os.Getenv("CAP_TEST_MYSQL"); s != "" {
		return s
	}
	return defaultDSN
}

// preparedDSN is dsn() without interpolateParams: the driver prepares every
// statement that has parameters.
func preparedDSN() string {
	s := dsn()
	for _, p := range []string{"&interpolateParams=true", "interpolateParams=true&", "?interpolateParams=true"} {
		s = strings.Replace(s, p, "", 1)
	}
	return s
}

// One *sql.DB per DSN for the whole test binary: the server's connections
// are shared with other packages' tests.
var (
	connectOnce sync.Once
	sharedDB    *sql.DB
	preparedDB  *sql.DB
	connectErr  error
)

func open(dsn string, conns int) (*sql.DB, error) {
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, err
	}
	return db, nil
}

// connect returns the shared *sql.DB, skipping the test when the server is
// unreachable (failing in CI).
func connect(t testing.TB) *sql.DB {
	t.Helper()
	connectOnce.Do(func() {
		if sharedDB, connectErr = open(dsn(), 16); connectErr != nil {
			return
		}
		preparedDB, connectErr = open(preparedDSN(), 8)
	})
	if connectErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("MySQL at CAP_TEST_MYSQL=%q is unreachable: %v", dsn(), connectErr)
		}
		t.Skipf("MySQL at CAP_TEST_MYSQL=%q is unreachable: %v", dsn(), connectErr)
	}
	return sharedDB
}

// newPrefix returns a fresh table name prefix; its tables are dropped when
// the test ends.
func newPrefix(t testing.TB) string {
	t.Helper()
	db := connect(t)
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	prefix := "cap_test_" + hex.EncodeToString(b)
	t.Cleanup(func() { dropTables(t, db, prefix) })
	return prefix
}

func dropTables(t testing.TB, db *sql.DB, prefix string, extra ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	names := []string{"`" + prefix + ".published`", "`" + prefix + ".received`", "`" + prefix + ".lock`"}
	for _, e := range extra {
		names = append(names, "`"+e+"`")
	}
	_, err := db.ExecContext(ctx, `DROP TABLE IF EXISTS `+strings.Join(names, ", "))
	require.NoError(t, err)
}

// newStore returns a migrated storage over db (the shared one when nil)
// with tables of its own.
func newStore(t testing.TB, db *sql.DB, opts mysql.Options) *mysql.Store {
	t.Helper()
	if db == nil {
		db = connect(t)
	}
	if opts.TableNamePrefix == "" {
		opts.TableNamePrefix = newPrefix(t)
	}
	s, err := mysql.New(db, opts)
	require.NoError(t, err)
	require.NoError(t, s.Migrate(context.Background()))
	return s
}

// exec runs a statement on the shared *sql.DB.
func exec(t testing.TB, query string, args ...any) {
	t.Helper()
	_, err := connect(t).ExecContext(context.Background(), query, args...)
	require.NoError(t, err, query)
}
