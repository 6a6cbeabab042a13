package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-cap/cap/storage"
)

// migrateLockWait is how long Migrate waits for another instance's
// migration when ctx has no deadline.
const migrateLockWait = 5 * time.Minute

// Migrate checks the connection and the server, then creates the tables
// and their indexes when absent and upgrades tables created by
// DotNetCore.CAP in place: it adds the NextAttemptAt and MessageId columns
// and the indexes the storage uses, widens CAP's datetime columns to
// microseconds, and makes CAP's pending rows due. It holds a named lock
// (GET_LOCK) meanwhile, so instances starting together migrate one after
// the other; it is idempotent.
//
// It fails with ErrDSN when the connection is not set up as the storage
// needs (parseTime, utf8mb4, ...), and with ErrServerVersion on servers
// older than MySQL 8.0 or MariaDB 10.6. Upgrading a CAP table rebuilds it,
// which blocks writes to it while it runs.
func (s *Store) Migrate(ctx context.Context) (err error) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("mysql: migrate: %w", err)
	}
	defer conn.Close()
	var sess session
	if err := conn.QueryRowContext(ctx, s.q.session).Scan(&sess.version, &sess.database, &sess.charset,
		&sess.results, &sess.sqlMode, &sess.probe); err != nil {
		return fmt.Errorf("mysql: migrate: %w", err)
	}
	if err := checkVersion(sess.version); err != nil {
		return err
	}
	if p := sess.problems(); len(p) > 0 {
		return fmt.Errorf("%w: %s", ErrDSN, strings.Join(p, "; "))
	}
	q := s.q
	key := lockKey(sess.database, s.opts.TableNamePrefix)
	wait := migrateLockWait
	if dl, ok := ctx.Deadline(); ok {
		wait = time.Until(dl)
	}
	var got int
	if err := conn.QueryRowContext(ctx, q.lock, key, max(1, int(wait.Seconds()))).Scan(&got); err != nil {
		return fmt.Errorf("mysql: migrate: lock: %w", err)
	}
	if got != 1 {
		return fmt.Errorf("mysql: migrate: another instance held the migration lock %q for %s", key, wait.Round(time.Second))
	}
	defer func() {
		var released sql.NullInt64
		if uerr := conn.QueryRowContext(context.WithoutCancel(ctx), q.unlock, key).Scan(&released); uerr != nil && err == nil {
			err = fmt.Errorf("mysql: migrate: unlock: %w", uerr)
		}
	}()
	for _, t := range []storage.Table{storage.Received, storage.Published} {
		if err := s.migrateTable(ctx, conn, t); err != nil {
			return fmt.Errorf("mysql: migrate %s: %w", tableName(s.opts.TableNamePrefix, t), err)
		}
	}
	// CAP's Lock table, for the bus's leases; one CAP made is used as it is.
	if _, err := conn.ExecContext(ctx, s.q.createLock()); err != nil {
		return fmt.Errorf("mysql: migrate lock table: %w", err)
	}
	return nil
}

type columnInfo struct {
	dataType  string
	precision int
	charset   string
}

func (s *Store) migrateTable(ctx context.Context, conn *sql.Conn, t storage.Table) error {
	tq := &s.q.tables[t]
	name := tableName(s.opts.TableNamePrefix, t)
	var n int
	if err := conn.QueryRowContext(ctx, s.q.tableExists, name).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		_, err := conn.ExecContext(ctx, tq.createTable)
		return err
	}
	// An existing table: CAP's, or ours from an earlier start.
	cols := map[string]columnInfo{}
	rs, err := conn.QueryContext(ctx, s.q.columns, name)
	if err != nil {
		return err
	}
	for rs.Next() {
		var (
			c  string
			ci columnInfo
		)
		if err := rs.Scan(&c, &ci.dataType, &ci.precision, &ci.charset); err != nil {
			_ = rs.Close()
			return err
		}
		cols[strings.ToLower(c)] = ci
	}
	if err := rs.Err(); err != nil {
		return err
	}
	_ = rs.Close()
	if len(cols) == 0 {
		return errors.New("no columns found in information_schema")
	}
	idx := map[string]bool{}
	rs, err = conn.QueryContext(ctx, s.q.indexes, name)
	if err != nil {
		return err
	}
	for rs.Next() {
		var i string
		if err := rs.Scan(&i); err != nil {
			_ = rs.Close()
			return err
		}
		idx[strings.ToLower(i)] = true
	}
	if err := rs.Err(); err != nil {
		return err
	}
	_ = rs.Close()

	var clauses []string
	_, hadNext := cols["nextattemptat"]
	for _, c := range tq.addColumns {
		if _, ok := cols[strings.ToLower(c.name)]; !ok {
			clauses = append(clauses, "ADD COLUMN "+c.def)
		}
	}
	if c := cols["added"]; c.precision < 6 {
		clauses = append(clauses, modifyAdded)
	}
	if c, ok := cols["expiresat"]; ok && c.precision < 6 {
		clauses = append(clauses, modifyExpiresAt)
	}
	if c := cols["content"]; c.dataType != "longtext" || c.charset != "utf8mb4" {
		clauses = append(clauses, modifyContent)
	}
	for _, i := range tq.addIndexes {
		if !idx[strings.ToLower(i.name)] {
			clauses = append(clauses, "ADD "+i.def)
		}
	}
	if len(clauses) > 0 {
		if _, err := conn.ExecContext(ctx, tq.alter(clauses)); err != nil {
			return err
		}
	}
	if !hadNext {
		if _, err := conn.ExecContext(ctx, tq.backfill); err != nil {
			return err
		}
	}
	return nil
}
