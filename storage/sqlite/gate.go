package sqlite

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrWriteLockTimeout: a write waited BusyTimeout for the database's write
// lock, which another transaction of this *sql.DB held all along (the same
// condition as SQLITE_BUSY after busy_timeout).
var ErrWriteLockTimeout = errors.New("sqlite: timed out waiting for the write lock")

// gate queues the writers of one *sql.DB opened by Open in the process.
//
// SQLite lets one connection write at a time. A connection that finds the
// write lock taken waits in SQLite's busy handler, which sleeps and tries
// again: it may sleep up to 100 ms at a time, and a busy writer that begins
// its next transaction at once takes the lock again before the sleeper
// wakes. Under load some writers wait for seconds. The gate makes writers
// wait in the process instead, in the order they came, and wakes the next
// one as soon as the lock is free.
//
// A transaction holds the gate from BEGIN (IMMEDIATE, so it is a write
// transaction) to its end; a statement outside a transaction holds it while
// it runs if it is executed (ExecContext), not queried.
type gate struct {
	ch      chan struct{}
	timeout time.Duration
}

func newGate(timeout time.Duration) *gate { return &gate{ch: make(chan struct{}, 1), timeout: timeout} }

func (g *gate) acquire(ctx context.Context) error {
	select {
	case g.ch <- struct{}{}:
		return nil
	default:
	}
	t := time.NewTimer(g.timeout)
	defer t.Stop()
	select {
	case g.ch <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("%w (%s)", ErrWriteLockTimeout, g.timeout)
	}
}

func (g *gate) release() { <-g.ch }

// gatedConnector opens connections whose writes pass the gate.
type gatedConnector struct {
	driver.Connector
	gate *gate
}

func (c *gatedConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &gatedConn{Conn: conn, gate: c.gate}, nil
}

// gatedConn is a connection of the driver whose transactions and executed
// statements hold the gate. database/sql uses a connection from one
// goroutine at a time, so inTx needs no lock.
type gatedConn struct {
	driver.Conn
	gate *gate
	inTx bool
}

func (c *gatedConn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

func (c *gatedConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if err := c.gate.acquire(ctx); err != nil {
		return nil, err
	}
	var (
		tx  driver.Tx
		err error
	)
	if b, ok := c.Conn.(driver.ConnBeginTx); ok {
		tx, err = b.BeginTx(ctx, opts)
	} else {
		tx, err = c.Conn.Begin() //nolint:staticcheck // the driver's only way then
	}
	if err != nil {
		c.gate.release()
		return nil, err
	}
	c.inTx = true
	return &gatedTx{Tx: tx, conn: c}, nil
}

// ExecContext runs a statement; outside a transaction it waits for the
// gate first.
func (c *gatedConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	e, ok := c.Conn.(driver.ExecerContext)
	if !ok {
		return nil, driver.ErrSkip
	}
	if !c.inTx {
		if err := c.gate.acquire(ctx); err != nil {
			return nil, err
		}
		defer c.gate.release()
	}
	return e.ExecContext(ctx, query, args)
}

func (c *gatedConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	if q, ok := c.Conn.(driver.QueryerContext); ok {
		return q.QueryContext(ctx, query, args)
	}
	return nil, driver.ErrSkip
}

// PrepareContext prepares a statement whose executions outside a
// transaction wait for the gate.
func (c *gatedConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	var (
		st  driver.Stmt
		err error
	)
	if p, ok := c.Conn.(driver.ConnPrepareContext); ok {
		st, err = p.PrepareContext(ctx, query)
	} else {
		st, err = c.Conn.Prepare(query)
	}
	if err != nil {
		return nil, err
	}
	return &gatedStmt{Stmt: st, conn: c}, nil
}

func (c *gatedConn) Prepare(query string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
}

func (c *gatedConn) Ping(ctx context.Context) error {
	if p, ok := c.Conn.(driver.Pinger); ok {
		return p.Ping(ctx)
	}
	return nil
}

func (c *gatedConn) ResetSession(ctx context.Context) error {
	if r, ok := c.Conn.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

func (c *gatedConn) IsValid() bool {
	if v, ok := c.Conn.(driver.Validator); ok {
		return v.IsValid()
	}
	return true
}

// gatedTx releases the gate when the transaction ends, however it ends.
type gatedTx struct {
	driver.Tx
	conn *gatedConn
	once sync.Once
}

func (t *gatedTx) end() {
	t.once.Do(func() {
		t.conn.inTx = false
		t.conn.gate.release()
	})
}

func (t *gatedTx) Commit() error {
	defer t.end()
	return t.Tx.Commit()
}

func (t *gatedTx) Rollback() error {
	defer t.end()
	return t.Tx.Rollback()
}

// gatedStmt is a prepared statement of a gatedConn.
type gatedStmt struct {
	driver.Stmt
	conn *gatedConn
}

func (s *gatedStmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	if !s.conn.inTx {
		if err := s.conn.gate.acquire(ctx); err != nil {
			return nil, err
		}
		defer s.conn.gate.release()
	}
	if e, ok := s.Stmt.(driver.StmtExecContext); ok {
		return e.ExecContext(ctx, args)
	}
	return s.Stmt.Exec(values(args)) //nolint:staticcheck // the driver's only way then
}

func (s *gatedStmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	if q, ok := s.Stmt.(driver.StmtQueryContext); ok {
		return q.QueryContext(ctx, args)
	}
	return s.Stmt.Query(values(args)) //nolint:staticcheck // the driver's only way then
}

// values drops the names of args, for a statement without the context
// methods.
func values(args []driver.NamedValue) []driver.Value {
	vals := make([]driver.Value, len(args))
	for i, a := range args {
		vals[i] = a.Value
	}
	return vals
}

var (
	_ driver.ConnBeginTx        = (*gatedConn)(nil)
	_ driver.ExecerContext      = (*gatedConn)(nil)
	_ driver.QueryerContext     = (*gatedConn)(nil)
	_ driver.ConnPrepareContext = (*gatedConn)(nil)
	_ driver.Pinger             = (*gatedConn)(nil)
	_ driver.SessionResetter    = (*gatedConn)(nil)
	_ driver.Validator          = (*gatedConn)(nil)
	_ driver.StmtExecContext    = (*gatedStmt)(nil)
	_ driver.StmtQueryContext   = (*gatedStmt)(nil)
)
