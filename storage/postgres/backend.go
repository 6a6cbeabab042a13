package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
)

// rows is what the storage reads query results through; pgx.Rows has this
// shape and *sql.Rows is adapted to it.
type rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

// querier runs statements on a pool or in a transaction.
type querier interface {
	exec(ctx context.Context, sql string, args ...any) (int64, error)
	query(ctx context.Context, sql string, args ...any) (rows, error)
}

// backend is the part of the storage that differs between database/sql and
// native pgx: transactions, and where the listener's configuration comes
// from. Everything else is one implementation.
type backend[TTx any] interface {
	db() querier
	in(tx TTx) querier
	begin(ctx context.Context) (TTx, error)
	commit(ctx context.Context, tx TTx) error
	rollback(ctx context.Context, tx TTx) error
	// connConfig returns a configuration for a dedicated connection.
	connConfig(ctx context.Context) (*pgx.ConnConfig, error)
}

// --- native pgx ---

// pgxQueryer is shared by *pgxpool.Pool and pgx.Tx.
type pgxQueryer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

type pgxQuerier struct{ c pgxQueryer }

func (q pgxQuerier) exec(ctx context.Context, sql string, args ...any) (int64, error) {
	tag, err := q.c.Exec(ctx, sql, args...)
	return tag.RowsAffected(), err
}

func (q pgxQuerier) query(ctx context.Context, sql string, args ...any) (rows, error) {
	return q.c.Query(ctx, sql, args...)
}

type pgxBackend struct{ pool *pgxpool.Pool }

func (b pgxBackend) db() querier          { return pgxQuerier{b.pool} }
func (b pgxBackend) in(tx pgx.Tx) querier { return pgxQuerier{tx} }
func (b pgxBackend) commit(ctx context.Context, tx pgx.Tx) error {
	return tx.Commit(ctx)
}

func (b pgxBackend) begin(ctx context.Context) (pgx.Tx, error) { return b.pool.Begin(ctx) }

func (b pgxBackend) rollback(ctx context.Context, tx pgx.Tx) error {
	if err := tx.Rollback(ctx); err != nil && !errors.Is(err, pgx.ErrTxClosed) {
		return err
	}
	return nil
}

func (b pgxBackend) connConfig(context.Context) (*pgx.ConnConfig, error) {
	return b.pool.Config().ConnConfig.Copy(), nil
}

// --- database/sql over pgx's stdlib driver ---

// sqlQueryer is shared by *sql.DB and *sql.Tx.
type sqlQueryer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

type sqlQuerier struct{ c sqlQueryer }

func (q sqlQuerier) exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := q.c.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (q sqlQuerier) query(ctx context.Context, query string, args ...any) (rows, error) {
	r, err := q.c.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return sqlRows{r}, nil
}

type sqlRows struct{ *sql.Rows }

// Close drops the error: Err reports the errors of a read, and every read
// checks it.
func (r sqlRows) Close() { _ = r.Rows.Close() }

type sqlBackend struct{ sdb *sql.DB }

func (b sqlBackend) db() querier           { return sqlQuerier{b.sdb} }
func (b sqlBackend) in(tx *sql.Tx) querier { return sqlQuerier{tx} }
func (b sqlBackend) commit(_ context.Context, tx *sql.Tx) error {
	return tx.Commit()
}

func (b sqlBackend) begin(ctx context.Context) (*sql.Tx, error) { return b.sdb.BeginTx(ctx, nil) }

func (b sqlBackend) rollback(_ context.Context, tx *sql.Tx) error {
	if err := tx.Rollback(); err != nil && !errors.Is(err, sql.ErrTxDone) {
		return err
	}
	return nil
}

// connConfig borrows a connection of the *sql.DB for a moment to copy its
// pgx configuration, host and credentials included.
func (b sqlBackend) connConfig(ctx context.Context) (*pgx.ConnConfig, error) {
	c, err := b.sdb.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var cfg *pgx.ConnConfig
	err = c.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("%w: the *sql.DB's driver connection is %T, not pgx's stdlib", ErrNoListenConfig, dc)
		}
		cfg = sc.Conn().Config()
		return nil
	})
	if err != nil {
		return nil, err
	}
	// The copy carries the pooled connection's notification handler; the
	// listener installs its own.
	cfg.OnNotification = nil
	return cfg, nil
}

// isStdlib reports whether db runs on pgx's stdlib driver, which passes Go
// slices through as PostgreSQL arrays.
func isStdlib(db *sql.DB) bool {
	_, ok := db.Driver().(*stdlib.Driver)
	return ok
}
