package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"time"

	_ "github.com/microsoft/go-mssqldb" // registers the "sqlserver" driver

	"github.com/go-cap/cap/storage/sqlserver"
)

func init() {
	addServerFlag("sqlserver", "CAP_TEST_SQLSERVER", "",
		"go-mssqldb DSN of the SQL Server database for -storage sqlserver, e.g. sqlserver://sa:pass@127.0.0.1:1433?database=test")
	registerStorage("sqlserver", openSQLServer)
}

// openSQLServer creates a schema of its own, dropped by close, holding both
// the outbox tables and the business tables.
func openSQLServer(ctx context.Context, cfg *config) (*database[*sql.Tx], error) {
	dsn := cfg.server("sqlserver")
	if dsn == "" {
		return nil, errors.New("sqlserver: no server: set -sqlserver or CAP_TEST_SQLSERVER to a go-mssqldb DSN")
	}
	sdb, err := sql.Open("sqlserver", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlserver: %w", err)
	}
	// Every writer, the bus's claimers, senders' outcome writers, consumers
	// and workers: the pool must not be what limits the run.
	conns := min(cfg.writers+16, 60)
	sdb.SetMaxOpenConns(conns)
	sdb.SetMaxIdleConns(conns)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := sdb.PingContext(cctx); err != nil {
		_ = sdb.Close()
		return nil, fmt.Errorf("sqlserver at %s (set -sqlserver or CAP_TEST_SQLSERVER): %w", redactURL(dsn), err)
	}
	schema := newName("capbench_")
	closeAll := func() {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := sdb.ExecContext(dctx, `DECLARE @sql nvarchar(max) = N'';
SELECT @sql = @sql + N'DROP TABLE ' + QUOTENAME(s.name) + N'.' + QUOTENAME(t.name) + N';'
FROM sys.tables AS t INNER JOIN sys.schemas AS s ON s.schema_id = t.schema_id WHERE s.name = @p1;
EXEC sp_executesql @sql;
IF SCHEMA_ID(@p1) IS NOT NULL EXEC(N'DROP SCHEMA [' + @p1 + N']');`, schema)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: drop schema %s: %v\n", schema, err)
		}
		_ = sdb.Close()
	}
	store, err := sqlserver.New(sdb, sqlserver.Options{Schema: schema})
	if err != nil {
		closeAll()
		return nil, err
	}
	q := `[` + schema + `].`
	db := &database[*sql.Tx]{
		store: store,
		execTx: func(ctx context.Context, tx *sql.Tx, query string, args ...any) error {
			_, err := tx.ExecContext(ctx, query, args...)
			return err
		},
		exec: func(ctx context.Context, query string, args ...any) error {
			_, err := sdb.ExecContext(ctx, query, args...)
			return err
		},
		insertOrder: `INSERT INTO ` + q + `[bench_orders] (id, customer, total) VALUES (@p1, @p2, @p3)`,
		insertPlain: `INSERT INTO ` + q + `[bench_plain] (id, body) VALUES (@p1, @p2)`,
		close:       closeAll,
	}
	// The schema first: Migrate creates it, the business tables go in it.
	if err := db.setup(ctx, []string{
		`CREATE TABLE ` + q + `[bench_orders] (id bigint PRIMARY KEY, customer nvarchar(100) NOT NULL, total int NOT NULL)`,
		`CREATE TABLE ` + q + `[bench_plain] (id bigint PRIMARY KEY, body nvarchar(max) NOT NULL)`,
	}); err != nil {
		closeAll()
		return nil, fmt.Errorf("sqlserver: %w", err)
	}
	return db, nil
}
