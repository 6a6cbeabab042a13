package sqlserver

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mssql "github.com/microsoft/go-mssqldb"
	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/internal/nodeinfo"
	"github.com/go-cap/cap/storage"
)

// The Store's methods run against a recording database/sql driver: the
// tests check which statements each method sends, with which arguments,
// in which transactions, and how it reads their results.

// call is one thing the driver was asked to do.
type call struct {
	op    string // begin, commit, rollback, exec, query
	query string
	args  []any
}

// answer is what the driver returns for a statement.
type answer struct {
	cols     []string
	rows     [][]driver.Value
	affected int64
	err      error
}

// recorder is the fake database: it logs calls and answers statements
// with the first matching responder.
type recorder struct {
	mu      sync.Mutex
	calls   []call
	respond func(query string, args []any) answer
}

func (r *recorder) log(c call) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, c)
}

func (r *recorder) answer(query string, args []any) answer {
	if r.respond == nil {
		return answer{}
	}
	return r.respond(query, args)
}

func (r *recorder) ops() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, c := range r.calls {
		out = append(out, c.op)
	}
	return out
}

func (r *recorder) statements() []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []call
	for _, c := range r.calls {
		if c.op == "exec" || c.op == "query" {
			out = append(out, c)
		}
	}
	return out
}

type recConnector struct{ r *recorder }

func (c recConnector) Connect(context.Context) (driver.Conn, error) { return &recConn{c.r}, nil }
func (c recConnector) Driver() driver.Driver                        { return recDriver{} }

type recDriver struct{}

func (recDriver) Open(string) (driver.Conn, error) { return nil, errors.New("use the connector") }

type recConn struct{ r *recorder }

func (c *recConn) Prepare(string) (driver.Stmt, error) {
	return nil, errors.New("no prepared statements")
}
func (c *recConn) Close() error { return nil }
func (c *recConn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}
func (c *recConn) BeginTx(context.Context, driver.TxOptions) (driver.Tx, error) {
	c.r.log(call{op: "begin"})
	return recTx{c.r}, nil
}

// plain is args as database/sql hands them to a driver without a
// NamedValueChecker: mssql.NVarCharMax becomes a string.
func plain(args []any) []any {
	if len(args) == 0 {
		return nil
	}
	out := make([]any, len(args))
	for i, a := range args {
		if v, ok := a.(mssql.NVarCharMax); ok {
			a = string(v)
		}
		out[i] = a
	}
	return out
}

func values(args []driver.NamedValue) []any {
	if len(args) == 0 {
		return nil
	}
	out := make([]any, len(args))
	for i, a := range args {
		out[i] = a.Value
	}
	return out
}

func (c *recConn) ExecContext(_ context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	a := values(args)
	c.r.log(call{op: "exec", query: query, args: a})
	ans := c.r.answer(query, a)
	if ans.err != nil {
		return nil, ans.err
	}
	return driver.RowsAffected(ans.affected), nil
}

func (c *recConn) QueryContext(_ context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	a := values(args)
	c.r.log(call{op: "query", query: query, args: a})
	ans := c.r.answer(query, a)
	if ans.err != nil {
		return nil, ans.err
	}
	cols := ans.cols
	if cols == nil && len(ans.rows) > 0 {
		cols = make([]string, len(ans.rows[0]))
		for i := range cols {
			cols[i] = "c"
		}
	}
	return &recRows{cols: cols, rows: ans.rows}, nil
}

type recTx struct{ r *recorder }

func (t recTx) Commit() error   { t.r.log(call{op: "commit"}); return nil }
func (t recTx) Rollback() error { t.r.log(call{op: "rollback"}); return nil }

type recRows struct {
	cols []string
	rows [][]driver.Value
}

func (r *recRows) Columns() []string { return r.cols }
func (r *recRows) Close() error      { return nil }
func (r *recRows) Next(dest []driver.Value) error {
	if len(r.rows) == 0 {
		return io.EOF
	}
	copy(dest, r.rows[0])
	r.rows = r.rows[1:]
	return nil
}

func newRecorded(t *testing.T, respond func(query string, args []any) answer) (*Store, *recorder) {
	t.Helper()
	r := &recorder{respond: respond}
	db := sql.OpenDB(recConnector{r})
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { _ = db.Close() })
	s, err := newStore(db, Options{})
	require.NoError(t, err)
	return s, r
}

func TestNewChecksDriverAndSchema(t *testing.T) {
	_, err := New(nil, Options{})
	require.Error(t, err)

	other := sql.OpenDB(recConnector{&recorder{}})
	defer other.Close()
	_, err = New(other, Options{})
	require.ErrorIs(t, err, ErrNotMSSQL)

	// sql.Open does not connect: the checks need no server.
	db, err := sql.Open("sqlserver", "sqlserver://sa:x@127.0.0.1:1?database=test")
	require.NoError(t, err)
	defer db.Close()
	s, err := New(db, Options{})
	require.NoError(t, err)
	require.Equal(t, "cap", s.Schema())
	require.Equal(t, "SqlServer", s.Name())
	require.Same(t, db, s.DB())
	for _, bad := range []string{"cap]; DROP TABLE x; --", "a.b", "1cap", "ca p", "[cap]", strings.Repeat("x", 64)} {
		_, err := New(db, Options{Schema: bad})
		require.ErrorIs(t, err, storage.ErrInvalidIdentifier, bad)
	}
	s, err = New(db, Options{Schema: "Shop_2"})
	require.NoError(t, err)
	require.Equal(t, "[Shop_2].[Published]", s.q.table(storage.Published).name)

	legacy, err := sql.Open("mssql", "sqlserver://sa:x@127.0.0.1:1")
	require.NoError(t, err)
	defer legacy.Close()
	_, err = New(legacy, Options{})
	require.NoError(t, err, "both of go-mssqldb's driver names")
}

func TestStoreInsertPublished(t *testing.T) {
	ctx := context.Background()
	added := time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)
	next := added.Add(time.Minute)
	s, r := newRecorded(t, func(query string, args []any) answer {
		var rows [][]driver.Value
		for i := 0; i < len(args); i += publishedPerRow {
			rows = append(rows, []driver.Value{args[i], added, nil, next})
		}
		return answer{rows: rows}
	})
	recs := []*storage.Record{{ID: 1, Version: "v1", Name: "a", DueIn: time.Minute}, {ID: 2, Version: "v1", Name: "b"}}
	require.NoError(t, s.InsertPublished(ctx, recs))
	// One statement, no transaction of its own.
	require.Equal(t, []string{"query"}, r.ops())
	st := s.q.insertPublished(recs, true)[0]
	require.Equal(t, st.query, r.statements()[0].query)
	require.Equal(t, plain(st.args), r.statements()[0].args)
	for _, rec := range recs {
		require.Equal(t, storage.StatusScheduled, rec.Status)
		require.Equal(t, added, rec.Added)
		require.Nil(t, rec.ExpiresAt)
		require.Equal(t, next, *rec.NextAttemptAt)
	}

	// Past one statement: a transaction, every row written back.
	r.calls = nil
	many := make([]*storage.Record, 300)
	for i := range many {
		many[i] = &storage.Record{ID: int64(i + 1), Version: "v1", Name: "n"}
	}
	require.NoError(t, s.InsertPublished(ctx, many))
	require.Equal(t, []string{"begin", "query", "query", "commit"}, r.ops())
	for _, rec := range many {
		require.Equal(t, added, rec.Added, rec.ID)
	}
}

func TestStoreInsertPublishedTx(t *testing.T) {
	ctx := context.Background()
	s, r := newRecorded(t, nil)
	tx, err := s.Begin(ctx)
	require.NoError(t, err)
	recs := []*storage.Record{{ID: 1, Version: "v1", Name: "a"}}
	require.NoError(t, s.InsertPublishedTx(ctx, tx, recs))
	require.NoError(t, s.Commit(ctx, tx))
	require.Equal(t, []string{"begin", "exec", "commit"}, r.ops())
	st := s.q.insertPublished(recs, false)[0]
	require.Equal(t, st.query, r.statements()[0].query)
	require.Equal(t, plain(st.args), r.statements()[0].args)
	require.NoError(t, s.Rollback(ctx, tx), "rolling back a finished tx is not an error")
}

func TestStoreInsertReceivedBatch(t *testing.T) {
	ctx := context.Background()
	added := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	// The database already has m2: only ids 1 and 4 come back.
	s, r := newRecorded(t, func(query string, args []any) answer {
		var rows [][]driver.Value
		for i := 0; i < len(args); i += receivedPerRow {
			if args[i+4] != "m2" {
				rows = append(rows, []driver.Value{args[i], added, nil, added})
			}
		}
		return answer{rows: rows}
	})
	recs := []*storage.Record{
		{ID: 1, Version: "v1", Name: "a", Group: "g", MessageID: "m1"},
		{ID: 2, Version: "v1", Name: "a", Group: "g", MessageID: "m2"},
		{ID: 3, Version: "v1", Name: "a", Group: "g", MessageID: "m1"}, // a duplicate within the batch
		{ID: 4, Version: "v1", Name: "a", Group: "h", MessageID: "m1"}, // another group
	}
	inserted, err := s.InsertReceivedBatch(ctx, recs)
	require.NoError(t, err)
	require.Equal(t, []bool{true, false, false, true}, inserted)
	stmts := r.statements()
	require.Len(t, stmts, 1)
	want := s.q.insertReceived([]*storage.Record{recs[0], recs[1], recs[3]})[0]
	require.Equal(t, want.query, stmts[0].query)
	require.Equal(t, plain(want.args), stmts[0].args)
	require.Equal(t, added, recs[0].Added)
	require.True(t, recs[2].Added.IsZero())

	ok, err := s.InsertReceived(ctx, &storage.Record{ID: 5, Version: "v1", Name: "a", Group: "g", MessageID: "m2"})
	require.NoError(t, err)
	require.False(t, ok, "a duplicate delivery")
	_, err = s.InsertReceived(ctx, nil)
	require.Error(t, err)
}

func TestStoreInsertRefused(t *testing.T) {
	s, _ := newRecorded(t, func(string, []any) answer {
		return answer{err: mssql.Error{Number: errTruncatedNamed, Message: "String or binary data would be truncated in table"}}
	})
	_, err := s.InsertReceived(context.Background(), &storage.Record{ID: 1, Version: "v1", Name: strings.Repeat("n", 300)})
	require.ErrorIs(t, err, storage.ErrRefused)
	err = s.InsertPublished(context.Background(), []*storage.Record{{ID: 1}})
	require.ErrorIs(t, err, storage.ErrRefused)
}

// TestStoreRefusesInvalidUTF8: text that is not UTF-8 would be stored
// altered; it is refused before any statement, with storage.ErrRefused.
func TestStoreRefusesInvalidUTF8(t *testing.T) {
	ctx := context.Background()
	s, r := newRecorded(t, nil)
	bad := []*storage.Record{
		{ID: 1, Version: "v1", Name: "n", Content: []byte("{\"Value\":\"\xff\"}")},
		{ID: 2, Version: "v1", Name: "n\xc3", Content: []byte("{}")},
		{ID: 3, Version: "v1", Name: "n", Group: "\xfe", MessageID: "m"},
		{ID: 4, Version: "v1", Name: "n", MessageID: "m\x80"},
	}
	for _, rec := range bad {
		_, err := s.InsertReceived(ctx, rec)
		require.ErrorIs(t, err, storage.ErrRefused, rec.ID)
		require.ErrorIs(t, s.InsertPublished(ctx, []*storage.Record{rec}), storage.ErrRefused, rec.ID)
		tx, err := s.Begin(ctx)
		require.NoError(t, err)
		require.ErrorIs(t, s.InsertPublishedTx(ctx, tx, []*storage.Record{rec}), storage.ErrRefused, rec.ID)
		require.NoError(t, s.Rollback(ctx, tx))
	}
	require.Empty(t, r.statements())
	require.Error(t, s.InsertPublished(ctx, []*storage.Record{nil}))
	_, err := s.InsertReceivedBatch(ctx, []*storage.Record{{ID: 5, MessageID: "m"}, nil})
	require.Error(t, err)
}

func TestStoreClaim(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	lease := t0.Add(time.Hour)
	row := func(id int64, was time.Time) []driver.Value {
		return []driver.Value{id, "v1", "n", "g", "m", "{}", int64(2), t0, nil, "Scheduled", lease, was}
	}
	s, r := newRecorded(t, func(string, []any) answer {
		// OUTPUT has no order.
		return answer{rows: [][]driver.Value{row(3, t0.Add(2*time.Second)), row(1, t0.Add(time.Second)), row(2, t0.Add(time.Second))}}
	})
	req := storage.ClaimRequest{Version: "v1", Limit: 3, Lease: time.Hour, Groups: []string{"g"}}
	recs, err := s.Claim(ctx, storage.Received, req)
	require.NoError(t, err)
	require.Len(t, recs, 3)
	require.Equal(t, []int64{1, 2, 3}, []int64{recs[0].ID, recs[1].ID, recs[2].ID}, "in due order, then id")
	require.Equal(t, storage.Record{ID: 1, Version: "v1", Name: "n", Group: "g", MessageID: "m", Content: []byte("{}"),
		Retries: 2, Added: t0, Status: storage.StatusScheduled, NextAttemptAt: &lease}, *recs[0])
	want := s.q.claim(storage.Received, req)
	require.Equal(t, []call{{op: "query", query: want.query, args: plain(want.args)}}, r.statements())

	r.calls = nil
	recs, err = s.Claim(ctx, storage.Received, storage.ClaimRequest{Version: "v1", Limit: 0})
	require.NoError(t, err)
	require.Empty(t, recs)
	require.Empty(t, r.calls, "no statement for a zero limit")
}

// TestStoreRetriesDeadlockVictims: work in a transaction of its own runs
// again after SQL Server chose it as a deadlock victim; other errors are
// returned at once.
func TestStoreRetriesDeadlockVictims(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	fails := 2
	s, r := newRecorded(t, func(string, []any) answer {
		mu.Lock()
		defer mu.Unlock()
		if fails > 0 {
			fails--
			return answer{err: mssql.Error{Number: errDeadlock, Message: "deadlock victim"}}
		}
		return answer{affected: 4}
	})
	n, err := s.DeleteExpired(ctx, storage.Published, 10)
	require.NoError(t, err)
	require.Equal(t, int64(4), n)
	require.Len(t, r.statements(), 3)

	s, _ = newRecorded(t, func(string, []any) answer {
		return answer{err: mssql.Error{Number: 208, Message: "Invalid object name"}}
	})
	_, err = s.DeleteExpired(ctx, storage.Published, 10)
	var me mssql.Error
	require.ErrorAs(t, err, &me)
	require.Equal(t, int32(208), me.Number)
}

func TestStoreSetOutcomesTx(t *testing.T) {
	ctx := context.Background()
	outs := []storage.Outcome{{ID: 1, Status: storage.StatusSucceeded}, {ID: 2, Status: storage.StatusSucceeded}}
	for _, c := range []struct {
		name     string
		written  []int64
		existing []int64
		want     error
	}{
		{"all written", []int64{1, 2}, nil, nil},
		{"stale", []int64{1}, []int64{2}, storage.ErrStale},
		{"not found", []int64{1}, nil, storage.ErrNotFound},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, r := newRecorded(t, func(query string, _ []any) answer {
				ids := c.written
				if strings.HasPrefix(query, "SELECT [Id]") {
					ids = c.existing
				}
				var rows [][]driver.Value
				for _, id := range ids {
					rows = append(rows, []driver.Value{id})
				}
				return answer{rows: rows}
			})
			tx, err := s.Begin(ctx)
			require.NoError(t, err)
			err = s.SetOutcomesTx(ctx, tx, storage.Received, outs)
			if c.want == nil {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, c.want)
			}
			require.NoError(t, s.Rollback(ctx, tx))
			stmts := r.statements()
			want := s.q.outcomes(storage.Received, outs, true)[0]
			require.Equal(t, want.query, stmts[0].query)
			require.Equal(t, plain(want.args), stmts[0].args)
			if c.want != nil {
				require.Len(t, stmts, 2)
				ex := s.q.existing(storage.Received, []int64{2})[0]
				require.Equal(t, ex.query, stmts[1].query)
				require.Equal(t, plain(ex.args), stmts[1].args)
			}
		})
	}
}

func TestStoreOtherMethods(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s, r := newRecorded(t, func(query string, _ []any) answer {
		switch {
		case strings.HasPrefix(query, "SELECT COUNT_BIG(*)"):
			return answer{rows: [][]driver.Value{{int64(7)}}}
		case strings.HasPrefix(query, "SELECT [StatusName], COUNT_BIG(*)"):
			return answer{rows: [][]driver.Value{{"Succeeded", int64(5)}, {"Failed", int64(2)}}}
		case strings.HasPrefix(query, "SELECT [Id], [Version]"):
			return answer{rows: [][]driver.Value{{int64(9), "v1", "n", "", "", nil, int64(0), t0, t0, "Failed", nil}}}
		}
		return answer{}
	})
	check := func(ops []string, want ...stmt) {
		t.Helper()
		require.Equal(t, ops, r.ops())
		var got []call
		for _, st := range want {
			got = append(got, call{op: "exec", query: st.query, args: st.args})
		}
		stmts := r.statements()
		require.Len(t, stmts, len(got))
		for i := range got {
			require.Equal(t, got[i].query, stmts[i].query)
			require.Equal(t, plain(got[i].args), stmts[i].args)
		}
		r.calls = nil
	}

	require.NoError(t, s.Reschedule(ctx, storage.Published, []int64{1, 2}, time.Minute))
	check([]string{"exec"}, s.q.reschedule(storage.Published, []int64{1, 2}, time.Minute)...)
	require.NoError(t, s.Reschedule(ctx, storage.Published, nil, time.Minute))
	check(nil)

	outs := []storage.Outcome{{ID: 1, Status: storage.StatusFailed, Retry: true, RetryIn: time.Second}}
	require.NoError(t, s.SetOutcomes(ctx, storage.Received, outs))
	check([]string{"exec"}, s.q.outcomes(storage.Received, outs, false)...)
	many := make([]storage.Outcome, 300)
	for i := range many {
		many[i] = storage.Outcome{ID: int64(i), Status: storage.StatusSucceeded}
	}
	require.NoError(t, s.SetOutcomes(ctx, storage.Received, many))
	check([]string{"begin", "exec", "exec", "commit"}, s.q.outcomes(storage.Received, many, false)...)

	ids := make([]int64, 3000)
	for i := range ids {
		ids[i] = int64(i)
	}
	require.NoError(t, s.Delete(ctx, storage.Published, ids))
	check([]string{"begin", "exec", "exec", "commit"}, s.q.delete(storage.Published, ids)...)

	_, err := s.DeleteExpired(ctx, storage.Received, 1000)
	require.NoError(t, err)
	check([]string{"exec"}, s.q.deleteExpired(storage.Received, 1000))

	rec, err := s.Get(ctx, storage.Received, 9)
	require.NoError(t, err)
	require.Equal(t, int64(9), rec.ID)
	require.Nil(t, rec.Content, "NULL content")
	require.Equal(t, t0, *rec.ExpiresAt)
	check([]string{"query"}, s.q.get(storage.Received, 9))

	q := storage.ListQuery{Status: storage.StatusFailed, Name: "n", Limit: 5}
	recs, total, err := s.List(ctx, storage.Received, q)
	require.NoError(t, err)
	require.Len(t, recs, 1)
	require.Equal(t, int64(7), total)
	page, count := s.q.list(storage.Received, q)
	check([]string{"query", "query"}, page, count)

	counts, err := s.Counts(ctx, storage.Published)
	require.NoError(t, err)
	require.Equal(t, map[storage.Status]int64{storage.StatusSucceeded: 5, storage.StatusFailed: 2}, counts)
	check([]string{"query"}, s.q.counts(storage.Published))

	// Get of a missing row.
	s2, _ := newRecorded(t, nil)
	_, err = s2.Get(ctx, storage.Published, 1)
	require.ErrorIs(t, err, storage.ErrNotFound)
}

// TestStoreMigrate: Migrate takes the application lock first, in one
// transaction, creates the schema, CAP's Lock table and both message
// tables with their columns and indexes, and backfills only a table CAP
// created (existing, without NextAttemptAt).
func TestStoreMigrate(t *testing.T) {
	for _, c := range []struct {
		name     string
		existed  int64
		hasNext  int64
		backfill bool
	}{
		{"new database", 0, 0, false},
		{"CAP's database", 1, 0, true},
		{"migrated before", 1, 1, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, r := newRecorded(t, func(query string, _ []any) answer {
				switch {
				case strings.Contains(query, "sp_getapplock"):
					return answer{rows: [][]driver.Value{{int64(0)}}}
				case strings.HasPrefix(query, "SELECT CASE WHEN OBJECT_ID"):
					return answer{rows: [][]driver.Value{{c.existed}}}
				case strings.HasPrefix(query, "SELECT CASE WHEN COL_LENGTH"):
					return answer{rows: [][]driver.Value{{c.hasNext}}}
				}
				return answer{}
			})
			require.NoError(t, s.Migrate(context.Background()))
			ops := r.ops()
			require.Equal(t, "begin", ops[0])
			require.Equal(t, "commit", ops[len(ops)-1])
			stmts := r.statements()
			lock := s.q.lock()
			require.Equal(t, lock.query, stmts[0].query)
			require.Equal(t, plain(lock.args), stmts[0].args)
			require.Equal(t, s.q.createSchema(), stmts[1].query)
			want := []string{s.q.createLock()}
			for _, tb := range []*table{s.q.table(storage.Received), s.q.table(storage.Published)} {
				want = append(want, tb.tableExists())
				if c.existed == 1 {
					want = append(want, tb.columnExists("NextAttemptAt"))
				}
				want = append(want, tb.createTable())
				want = append(want, tb.migrate()...)
				if c.backfill {
					want = append(want, tb.backfill())
				}
			}
			var got []string
			for _, st := range stmts[2:] {
				got = append(got, st.query)
			}
			require.Equal(t, want, got)
		})
	}

	s, r := newRecorded(t, func(query string, _ []any) answer {
		return answer{rows: [][]driver.Value{{int64(-3)}}}
	})
	err := s.Migrate(context.Background())
	require.ErrorContains(t, err, "sp_getapplock returned -3")
	require.Equal(t, []string{"begin", "query", "rollback"}, r.ops())
}

// sent checks that r received exactly want, in order, and forgets them.
func sent(t *testing.T, r *recorder, ops []string, want ...stmt) {
	t.Helper()
	require.Equal(t, ops, r.ops())
	stmts := r.statements()
	require.Len(t, stmts, len(want))
	for i, st := range want {
		require.Equal(t, st.query, stmts[i].query)
		require.Equal(t, plain(st.args), stmts[i].args, st.query)
	}
	r.mu.Lock()
	r.calls = nil
	r.mu.Unlock()
}

// failing answers every statement with a SQL Server error.
func failing(number int32) func(string, []any) answer {
	return func(string, []any) answer {
		return answer{err: mssql.Error{Number: number, Message: "refused"}}
	}
}

// requireSQLError checks that err is wrapped with prefix and still holds
// the driver's error.
func requireSQLError(t *testing.T, err error, prefix string, number int32) {
	t.Helper()
	require.ErrorContains(t, err, prefix)
	require.True(t, strings.HasPrefix(err.Error(), prefix), err.Error())
	var me mssql.Error
	require.ErrorAs(t, err, &me)
	require.Equal(t, number, me.Number)
}

func TestStoreLease(t *testing.T) {
	ctx := context.Background()
	var held bool
	s, r := newRecorded(t, func(query string, args []any) answer {
		if held {
			return answer{rows: [][]driver.Value{{args[1]}}}
		}
		return answer{}
	})
	held = true
	ok, err := s.AcquireLease(ctx, "cap.collector", "a", time.Minute)
	require.NoError(t, err)
	require.True(t, ok, "a row back: the lease is the caller's")
	sent(t, r, []string{"query"}, s.q.acquireLease("cap.collector", "a", time.Minute))

	held = false
	ok, err = s.AcquireLease(ctx, "cap.collector", "b", time.Minute)
	require.NoError(t, err)
	require.False(t, ok, "no row back: another owner holds it")
	sent(t, r, []string{"query"}, s.q.acquireLease("cap.collector", "b", time.Minute))

	require.NoError(t, s.ReleaseLease(ctx, "cap.collector", "a"))
	sent(t, r, []string{"exec"}, s.q.releaseLease("cap.collector", "a"))

	// A duplicate key on the insert: another instance inserted the lease.
	for _, n := range []int32{errDuplicateKey, errDuplicateIndexKey} {
		dup, _ := newRecorded(t, failing(n))
		ok, err := dup.AcquireLease(ctx, "cap.collector", "a", time.Minute)
		require.NoError(t, err)
		require.False(t, ok)
	}

	// Other errors are returned, wrapped; a deadlock victim runs again.
	bad, r := newRecorded(t, failing(208))
	_, err = bad.AcquireLease(ctx, "cap.collector", "a", time.Minute)
	requireSQLError(t, err, `sqlserver: acquire lease "cap.collector"`, 208)
	requireSQLError(t, bad.ReleaseLease(ctx, "cap.collector", "a"), `sqlserver: release lease "cap.collector"`, 208)
	require.Equal(t, []string{"query", "exec"}, r.ops(), "no retry of other errors")

	var mu sync.Mutex
	fails := 1
	victim, r := newRecorded(t, func(_ string, args []any) answer {
		mu.Lock()
		defer mu.Unlock()
		if fails > 0 {
			fails--
			return answer{err: mssql.Error{Number: errDeadlock}}
		}
		return answer{rows: [][]driver.Value{{args[1]}}}
	})
	ok, err = victim.AcquireLease(ctx, "cap.collector", "a", time.Minute)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, []string{"query", "query"}, r.ops())
}

func TestStorePing(t *testing.T) {
	ctx := context.Background()
	s, r := newRecorded(t, nil)
	require.NoError(t, s.Ping(ctx))
	sent(t, r, []string{"exec"}, stmt{query: `SELECT 1`})
	bad, _ := newRecorded(t, failing(4060))
	requireSQLError(t, bad.Ping(ctx), "sqlserver: ping", 4060)
}

func TestStoreBacklog(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	oldest := now.Add(-time.Minute)
	s, r := newRecorded(t, func(query string, _ []any) answer {
		if strings.Contains(query, "[Received]") {
			return answer{rows: [][]driver.Value{
				{"g1", int64(2), oldest, int64(0), now},
				{"g2", int64(0), nil, int64(3), now}, // Failed rows only: no due time
			}}
		}
		return answer{rows: [][]driver.Value{{"", int64(5), oldest, int64(1), now}}}
	})
	pub, err := s.Backlog(ctx, storage.Published, "v1")
	require.NoError(t, err)
	require.Equal(t, []storage.Backlog{{Due: 5, OldestDue: oldest, Failed: 1, Now: now}}, pub)
	sent(t, r, []string{"query"}, s.q.backlog(storage.Published, "v1"))

	rec, err := s.Backlog(ctx, storage.Received, "v1")
	require.NoError(t, err)
	require.Equal(t, []storage.Backlog{
		{Group: "g1", Due: 2, OldestDue: oldest, Now: now},
		{Group: "g2", Failed: 3, Now: now},
	}, rec)
	sent(t, r, []string{"query"}, s.q.backlog(storage.Received, "v1"))

	empty, _ := newRecorded(t, nil)
	got, err := empty.Backlog(ctx, storage.Published, "v1")
	require.NoError(t, err)
	require.Empty(t, got)

	bad, _ := newRecorded(t, failing(208))
	_, err = bad.Backlog(ctx, storage.Received, "v1")
	requireSQLError(t, err, "sqlserver: backlog received", 208)
}

func TestStoreReceivedExists(t *testing.T) {
	ctx := context.Background()
	// The database has the rows of message ids ending in 0.
	s, r := newRecorded(t, func(_ string, args []any) answer {
		var rows [][]driver.Value
		for i := 0; i < len(args); i += 2 {
			if strings.HasSuffix(args[i].(string), "0") {
				rows = append(rows, []driver.Value{int64(i/2 + 1)})
			}
		}
		return answer{rows: rows}
	})
	got, err := s.ReceivedExists(ctx, nil)
	require.NoError(t, err)
	require.Empty(t, got)
	require.Empty(t, r.calls, "no statement for no keys")

	keys := []storage.ReceivedKey{{MessageID: "m10", Group: "g"}, {MessageID: "m11", Group: "g"}, {MessageID: "m20", Group: ""}}
	got, err = s.ReceivedExists(ctx, keys)
	require.NoError(t, err)
	require.Equal(t, []bool{true, false, true}, got)
	sent(t, r, []string{"query"}, s.q.receivedExists(keys)...)

	// More keys than one statement takes: one transaction, the positions
	// of each statement offset by the keys before it.
	many := make([]storage.ReceivedKey, 2*maxExistsKeys+5)
	for i := range many {
		many[i] = storage.ReceivedKey{MessageID: "m" + strconv.Itoa(i), Group: "g"}
	}
	got, err = s.ReceivedExists(ctx, many)
	require.NoError(t, err)
	require.Len(t, got, len(many))
	for i, ok := range got {
		require.Equal(t, i%10 == 0, ok, i)
	}
	sent(t, r, []string{"begin", "query", "query", "query", "commit"}, s.q.receivedExists(many)...)

	bad, _ := newRecorded(t, failing(208))
	_, err = bad.ReceivedExists(ctx, keys)
	requireSQLError(t, err, "sqlserver: look up received rows", 208)
}

func TestStoreNodes(t *testing.T) {
	ctx := context.Background()
	seen := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	started := seen.Add(-time.Hour)
	n := storage.Node{ID: "orders/1", Name: "orders", Host: "h1", Version: "v1.2.3", Started: started}
	s, r := newRecorded(t, func(query string, _ []any) answer {
		if strings.HasPrefix(query, "SELECT [Key]") {
			return answer{rows: [][]driver.Value{
				{nodeinfo.Key(n.ID), nodeinfo.Instance(n), seen},
				{"cap.node:broken", "not a node's instance", seen}, // left out
			}}
		}
		return answer{}
	})
	require.NoError(t, s.Heartbeat(ctx, n))
	key := nodeinfo.Key(n.ID)
	sent(t, r, []string{"exec", "exec"}, s.q.heartbeat(key, nodeinfo.Instance(n)), s.q.pruneNodes(key, nodeinfo.Retention))

	got, err := s.Nodes(ctx, time.Minute)
	require.NoError(t, err)
	want := n
	want.LastSeen = seen
	require.Equal(t, []storage.Node{want}, got)
	sent(t, r, []string{"query"}, s.q.nodes(time.Minute))

	require.NoError(t, s.RemoveNode(ctx, n.ID))
	sent(t, r, []string{"exec"}, s.q.removeNode(key))

	bad, r := newRecorded(t, failing(208))
	requireSQLError(t, bad.Heartbeat(ctx, n), "sqlserver: heartbeat", 208)
	require.Len(t, r.statements(), 1, "no pruning after a failed heartbeat")
	_, err = bad.Nodes(ctx, time.Minute)
	requireSQLError(t, err, "sqlserver: nodes", 208)
	requireSQLError(t, bad.RemoveNode(ctx, n.ID), "sqlserver: remove node", 208)

	// The heartbeat's row written, the pruning refused.
	prune, _ := newRecorded(t, func(query string, _ []any) answer {
		if strings.HasPrefix(query, "DELETE") {
			return answer{err: mssql.Error{Number: 229, Message: "permission denied"}}
		}
		return answer{}
	})
	requireSQLError(t, prune.Heartbeat(ctx, n), "sqlserver: heartbeat: forget old nodes", 229)
}

func TestStoreCountByHour(t *testing.T) {
	ctx := context.Background()
	h1 := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	since := h1.Add(-24 * time.Hour)
	s, r := newRecorded(t, func(string, []any) answer {
		return answer{rows: [][]driver.Value{{h1, int64(4)}, {h1.Add(time.Hour).In(time.FixedZone("X", 7200)), int64(1)}}}
	})
	got, err := s.CountByHour(ctx, storage.Received, storage.StatusFailed, since)
	require.NoError(t, err)
	require.Equal(t, []storage.HourCount{{Hour: h1, Count: 4}, {Hour: h1.Add(time.Hour), Count: 1}}, got)
	require.Equal(t, time.UTC, got[1].Hour.Location())
	sent(t, r, []string{"query"}, s.q.countByHour(storage.Received, storage.StatusFailed, since))

	_, err = s.CountByHour(ctx, storage.Published, storage.StatusScheduled, since)
	require.Error(t, err)
	require.Empty(t, r.calls, "a status not counted sends no statement")

	bad, _ := newRecorded(t, failing(208))
	_, err = bad.CountByHour(ctx, storage.Published, storage.StatusSucceeded, since)
	requireSQLError(t, err, "sqlserver: count published by hour", 208)
}
