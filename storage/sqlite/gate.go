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

// driverConn is what the gate needs of the driver's connections, which
// modernc.org/sqlite's have; Connect checks it once.
type driverConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ExecerContext
	driver.QueryerContext
	driver.ConnPrepareContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
}

// driverStmt is what the gate needs of the driver's prepared statements.
type driverStmt interface {
	driver.Stmt
	driver.StmtExecContext
	driver.StmtQueryContext
}

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
	dc, ok := conn.(driverConn)
	if !ok {
		_ = conn.Close()
		return nil, fmt.Errorf("sqlite: the driver's connection %T lacks a context method", conn)
	}
	return &gatedConn{driverConn: dc, gate: c.gate}, nil
}

// gatedConn is a connection of the driver whose transactions and executed
// statements hold the gate. database/sql uses a connection from one
// goroutine at a time, so inTx needs no lock.
type gatedConn struct {
	driverConn
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
	tx, err := c.driverConn.BeginTx(ctx, opts)
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
	if !c.inTx {
		if err := c.gate.acquire(ctx); err != nil {
			return nil, err
		}
		defer c.gate.release()
	}
	return c.driverConn.ExecContext(ctx, query, args)
}

// PrepareContext prepares a statement whose executions outside a
// transaction wait for the gate.
func (c *gatedConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	st, err := c.driverConn.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	ds, ok := st.(driverStmt)
	if !ok {
		_ = st.Close()
		return nil, fmt.Errorf("sqlite: the driver's statement %T lacks a context method", st)
	}
	return &gatedStmt{driverStmt: ds, conn: c}, nil
}

func (c *gatedConn) Prepare(query string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
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
	driverStmt
	conn *gatedConn
}

func (s *gatedStmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	if !s.conn.inTx {
		if err := s.conn.gate.acquire(ctx); err != nil {
			return nil, err
		}
		defer s.conn.gate.release()
	}
	return s.driverStmt.ExecContext(ctx, args)
}

var (
	_ driverConn = (*gatedConn)(nil)
	_ driverStmt = (*gatedStmt)(nil)
)
