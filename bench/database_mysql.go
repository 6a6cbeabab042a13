package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"time"

	driver "github.com/go-sql-driver/mysql"

	"github.com/go-cap/cap/storage/mysql"
)

func init() {
	addServerFlag("mysql", "CAP_TEST_MYSQL", "root@tcp(127.0.0.1:3306)/test?parseTime=true&interpolateParams=true",
		"MySQL or MariaDB DSN (go-sql-driver/mysql; parseTime=true required)")
	registerStorage("mysql", openMySQL)
}

// openMySQL creates tables of a prefix of its own in the DSN's database,
// dropped by close: the outbox's `<prefix>.published` and `.received`, and
// the business tables `<prefix>_orders` and `<prefix>_plain`.
func openMySQL(ctx context.Context, cfg *config) (*database[*sql.Tx], error) {
	dsn := cfg.server("mysql")
	sdb, err := mysql.Open(dsn)
	if err != nil {
		return nil, err
	}
	// Every writer, the bus's claimers, senders' outcome writers, consumers
	// and workers: the pool must not be what limits the run.
	conns := min(cfg.writers+16, 60)
	sdb.SetMaxOpenConns(conns)
	sdb.SetMaxIdleConns(conns)
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := sdb.PingContext(cctx); err != nil {
		_ = sdb.Close()
		return nil, fmt.Errorf("mysql at %s (set -mysql or CAP_TEST_MYSQL): %w", redactDSN(dsn), err)
	}
	prefix := newName("capbench_")
	orders, plain := "`"+prefix+"_orders`", "`"+prefix+"_plain`"
	closeAll := func() {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := sdb.ExecContext(dctx, "DROP TABLE IF EXISTS `"+prefix+".published`, `"+prefix+".received`, "+
			orders+", "+plain); err != nil {
			fmt.Fprintf(os.Stderr, "bench: drop tables %s: %v\n", prefix, err)
		}
		_ = sdb.Close()
	}
	store, err := mysql.New(sdb, mysql.Options{TableNamePrefix: prefix, Logger: cfg.logger()})
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
		insertOrder: `INSERT INTO ` + orders + ` (id, customer, total) VALUES (?, ?, ?)`,
		insertPlain: `INSERT INTO ` + plain + ` (id, body) VALUES (?, ?)`,
		close:       closeAll,
	}
	if err := db.setup(ctx, []string{
		`CREATE TABLE ` + orders + ` (id bigint PRIMARY KEY, customer varchar(200) NOT NULL, total int NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`,
		`CREATE TABLE ` + plain + ` (id bigint PRIMARY KEY, body longtext NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`,
	}); err != nil {
		closeAll()
		return nil, fmt.Errorf("mysql: %w", err)
	}
	return db, nil
}

// redactDSN hides the password of a DSN for error messages.
func redactDSN(dsn string) string {
	c, err := driver.ParseDSN(dsn)
	if err != nil {
		return "(unparsable DSN)"
	}
	if c.Passwd != "" {
		c.Passwd = "xxxxx"
	}
	return c.FormatDSN()
}
