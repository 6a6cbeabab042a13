package sqlserver

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	mssql "github.com/microsoft/go-mssqldb"

	"github.com/go-cap/cap/storage"
)

// ErrNotMSSQL: New was given a *sql.DB whose driver is not go-mssqldb's;
// the storage's statements use its @p1, @p2 ... parameters.
var ErrNotMSSQL = errors.New("sqlserver: *sql.DB must use go-mssqldb's driver")

// SQL Server error numbers the storage tells apart.
const (
	errDeadlock       = 1205 // chosen as deadlock victim; the transaction was rolled back
	errTruncated      = 8152 // string or binary data would be truncated
	errTruncatedNamed = 2628 // the same, naming the column (SQL Server 2019 on)
)

// deadlockRetries is how often an operation in a transaction of its own is
// tried again after SQL Server chose it as a deadlock victim.
const deadlockRetries = 5

// Store keeps CAP's Published and Received tables in SQL Server, through
// database/sql and go-mssqldb. It implements storage.Storage[*sql.Tx],
// storage.Namer, storage.Leaser, storage.Pinger, storage.BacklogReader,
// storage.ReceivedChecker, storage.NodeRegistry and storage.HistoryReader,
// and is safe for concurrent use.
type Store struct {
	db   *sql.DB
	q    *queries
	opts Options
}

var (
	_ storage.Storage[*sql.Tx] = (*Store)(nil)
	_ storage.Namer            = (*Store)(nil)
)

// New returns a storage over db, opened with go-mssqldb
// (sql.Open("sqlserver", dsn) or sql.OpenDB(connector)). It checks the
// options but does not touch the database; Migrate creates the tables.
func New(db *sql.DB, opts Options) (*Store, error) {
	if db == nil {
		return nil, errors.New("sqlserver: nil *sql.DB")
	}
	if _, ok := db.Driver().(*mssql.Driver); !ok {
		return nil, fmt.Errorf("%w, not %T", ErrNotMSSQL, db.Driver())
	}
	return newStore(db, opts)
}

// newStore is New without the driver check.
func newStore(db *sql.DB, opts Options) (*Store, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Store{db: db, q: newQueries(opts.Schema), opts: opts}, nil
}

// Name returns "SqlServer", CAP's name for this storage.
func (s *Store) Name() string { return "SqlServer" }

// Schema returns the schema holding the tables.
func (s *Store) Schema() string { return s.opts.Schema }

// DB returns the database the storage works on.
func (s *Store) DB() *sql.DB { return s.db }

// Begin starts a transaction.
func (s *Store) Begin(ctx context.Context) (*sql.Tx, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("sqlserver: begin: %w", err)
	}
	return tx, nil
}

// Commit commits tx.
func (s *Store) Commit(_ context.Context, tx *sql.Tx) error {
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlserver: commit: %w", err)
	}
	return nil
}

// Rollback rolls tx back; a finished tx is not an error.
func (s *Store) Rollback(_ context.Context, tx *sql.Tx) error {
	if err := tx.Rollback(); err != nil && !errors.Is(err, sql.ErrTxDone) {
		return fmt.Errorf("sqlserver: rollback: %w", err)
	}
	return nil
}

// sqlNumber returns the SQL Server error number in err, or 0.
func sqlNumber(err error) int32 {
	var e mssql.Error
	if errors.As(err, &e) {
		return e.Number
	}
	var pe *mssql.Error
	if errors.As(err, &pe) && pe != nil {
		return pe.Number
	}
	return 0
}

// retry runs f, again when SQL Server chose its transaction as a deadlock
// victim (which it rolled back). Only for work in a transaction of its own.
func (s *Store) retry(ctx context.Context, f func() error) error {
	var err error
	for attempt := range deadlockRetries {
		if err = f(); err == nil || sqlNumber(err) != errDeadlock {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(attempt+1) * 5 * time.Millisecond):
		}
	}
	return err
}

// inTx runs f in a transaction of its own, committed when f succeeds.
func (s *Store) inTx(ctx context.Context, f func(tx *sql.Tx) error) error {
	return s.retry(ctx, func() error {
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if err := f(tx); err != nil {
			_ = tx.Rollback()
			return err
		}
		return tx.Commit()
	})
}

// querier is shared by *sql.DB and *sql.Tx.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// run runs one statement on the database, or several in one transaction.
// f gets the index of the statement in stmts; after a deadlock the
// transaction runs again from the first.
func (s *Store) run(ctx context.Context, stmts []stmt, f func(q querier, i int, st stmt) error) error {
	if len(stmts) == 1 {
		return s.retry(ctx, func() error { return f(s.db, 0, stmts[0]) })
	}
	return s.inTx(ctx, func(tx *sql.Tx) error {
		for i, st := range stmts {
			if err := f(tx, i, st); err != nil {
				return err
			}
		}
		return nil
	})
}

// execOne runs one statement on the database, again after a deadlock.
func (s *Store) execOne(ctx context.Context, st stmt) error {
	return s.retry(ctx, func() error {
		_, err := s.db.ExecContext(ctx, st.query, st.args...)
		return err
	})
}

func execStmt(ctx context.Context, q querier, st stmt) (int64, error) {
	res, err := q.ExecContext(ctx, st.query, st.args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// written are the values the database fills in on insert.
type written struct {
	added    time.Time
	exp, nxt *time.Time
}

// scanWritten reads (Id, Added, ExpiresAt, NextAttemptAt) rows.
func scanWritten(ctx context.Context, q querier, st stmt, into map[int64]written) error {
	rs, err := q.QueryContext(ctx, st.query, st.args...)
	if err != nil {
		return err
	}
	defer rs.Close()
	for rs.Next() {
		var (
			id int64
			w  written
		)
		if err := rs.Scan(&id, &w.added, &w.exp, &w.nxt); err != nil {
			return err
		}
		into[id] = w
	}
	return rs.Err()
}

// checkRecords refuses what SQL Server would store altered: go-mssqldb
// turns text into UTF-16, replacing bytes that are not UTF-8, where
// PostgreSQL refuses them. A nil record is an error.
func checkRecords(recs []*storage.Record) error {
	for _, r := range recs {
		if r == nil {
			return errors.New("nil record")
		}
		for _, f := range []struct {
			name string
			ok   bool
		}{
			{"Content", utf8.Valid(r.Content)},
			{"Name", utf8.ValidString(r.Name)},
			{"Version", utf8.ValidString(r.Version)},
			{"Group", utf8.ValidString(r.Group)},
			{"MessageID", utf8.ValidString(r.MessageID)},
		} {
			if !f.ok {
				return fmt.Errorf("%w: %s of row %d is not valid UTF-8", storage.ErrRefused, f.name, r.ID)
			}
		}
	}
	return nil
}

// InsertPublished stores rows, in one statement when they fit in one
// (262 rows), else in one transaction, and fills in Added, NextAttemptAt
// and ExpiresAt.
func (s *Store) InsertPublished(ctx context.Context, recs []*storage.Record) error {
	if len(recs) == 0 {
		return nil
	}
	if err := checkRecords(recs); err != nil {
		return fmt.Errorf("sqlserver: insert published: %w", err)
	}
	stmts := s.q.insertPublished(recs, true)
	got := make(map[int64]written, len(recs))
	err := s.run(ctx, stmts, func(q querier, _ int, st stmt) error { return scanWritten(ctx, q, st, got) })
	if err != nil {
		return insertErr("insert published", err)
	}
	for _, r := range recs {
		r.Status = statusOf(r)
		if w, ok := got[r.ID]; ok {
			r.Added, r.ExpiresAt, r.NextAttemptAt = w.added.UTC(), utc(w.exp), utc(w.nxt)
		}
	}
	return nil
}

// InsertPublishedTx stores rows in the caller's transaction, without
// reading back the values the database fills in.
func (s *Store) InsertPublishedTx(ctx context.Context, tx *sql.Tx, recs []*storage.Record) error {
	if err := checkRecords(recs); err != nil {
		return fmt.Errorf("sqlserver: insert published: %w", err)
	}
	for _, st := range s.q.insertPublished(recs, false) {
		if _, err := tx.ExecContext(ctx, st.query, st.args...); err != nil {
			return insertErr("insert published", err)
		}
	}
	for _, r := range recs {
		r.Status = statusOf(r)
	}
	return nil
}

// InsertReceived stores a received row unless one with the same
// (MessageID, Group) exists.
func (s *Store) InsertReceived(ctx context.Context, r *storage.Record) (bool, error) {
	if r == nil {
		return false, errors.New("sqlserver: insert received: nil record")
	}
	inserted, err := s.InsertReceivedBatch(ctx, []*storage.Record{r})
	if err != nil {
		return false, err
	}
	return inserted[0], nil
}

// InsertReceivedBatch stores recs in one transaction (one statement when
// they fit, 209 rows), each unless a row with its (MessageID, Group)
// exists or comes earlier in recs, and reports which it stored.
func (s *Store) InsertReceivedBatch(ctx context.Context, recs []*storage.Record) ([]bool, error) {
	if err := checkRecords(recs); err != nil {
		return nil, fmt.Errorf("sqlserver: insert received: %w", err)
	}
	inserted := make([]bool, len(recs))
	type key struct{ msgID, group string }
	seen := make(map[key]bool, len(recs))
	rows := make([]*storage.Record, 0, len(recs))
	index := make(map[int64]int, len(recs))
	for i, r := range recs {
		k := key{r.MessageID, r.Group}
		if seen[k] {
			continue // the first of duplicates wins
		}
		seen[k] = true
		rows = append(rows, r)
		index[r.ID] = i
	}
	if len(rows) == 0 {
		return inserted, nil
	}
	got := make(map[int64]written, len(rows))
	err := s.run(ctx, s.q.insertReceived(rows), func(q querier, i int, st stmt) error {
		if i == 0 {
			clear(got) // a transaction run again starts over
		}
		return scanWritten(ctx, q, st, got)
	})
	if err != nil {
		return nil, insertErr("insert received", err)
	}
	// Written back only once the statements have succeeded as a whole.
	for id, w := range got {
		i, ok := index[id]
		if !ok {
			continue
		}
		r := recs[i]
		r.Status = statusOf(r)
		r.Added, r.ExpiresAt, r.NextAttemptAt = w.added.UTC(), utc(w.exp), utc(w.nxt)
		inserted[i] = true
	}
	return inserted, nil
}

// Claim leases up to req.Limit due rows of t, in due order.
func (s *Store) Claim(ctx context.Context, t storage.Table, req storage.ClaimRequest) ([]*storage.Record, error) {
	if req.Limit <= 0 {
		return nil, nil
	}
	st := s.q.claim(t, req)
	type claimed struct {
		rec *storage.Record
		was time.Time
	}
	var out []claimed
	err := s.retry(ctx, func() error {
		out = out[:0]
		rs, err := s.db.QueryContext(ctx, st.query, st.args...)
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			var c claimed
			if c.rec, err = scanRecord(rs, &c.was); err != nil {
				return err
			}
			out = append(out, c)
		}
		return rs.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("sqlserver: claim %s: %w", t, err)
	}
	slices.SortFunc(out, func(a, b claimed) int {
		if c := a.was.Compare(b.was); c != 0 {
			return c
		}
		return cmp.Compare(a.rec.ID, b.rec.ID)
	})
	recs := make([]*storage.Record, len(out))
	for i, c := range out {
		recs[i] = c.rec
	}
	return recs, nil
}

// Reschedule sets NextAttemptAt = now + in for the rows still awaiting an
// attempt.
func (s *Store) Reschedule(ctx context.Context, t storage.Table, ids []int64, in time.Duration) error {
	if len(ids) == 0 {
		return nil
	}
	err := s.run(ctx, s.q.reschedule(t, ids, in), func(q querier, _ int, st stmt) error {
		_, err := execStmt(ctx, q, st)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlserver: reschedule %s: %w", t, err)
	}
	return nil
}

// SetOutcomes writes outcomes in one transaction, so all or none apply.
// Unknown ids are ignored.
func (s *Store) SetOutcomes(ctx context.Context, t storage.Table, outs []storage.Outcome) error {
	if len(outs) == 0 {
		return nil
	}
	err := s.run(ctx, s.q.outcomes(t, outs, false), func(q querier, _ int, st stmt) error {
		_, err := execStmt(ctx, q, st)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlserver: set outcomes %s: %w", t, err)
	}
	return nil
}

// SetOutcomesTx writes outcomes in the caller's transaction. It fails with
// storage.ErrStale when a row is already Succeeded and storage.ErrNotFound
// when one does not exist; the transaction must then roll back.
func (s *Store) SetOutcomesTx(ctx context.Context, tx *sql.Tx, t storage.Table, outs []storage.Outcome) error {
	if len(outs) == 0 {
		return nil
	}
	written := make(map[int64]struct{}, len(outs))
	for _, st := range s.q.outcomes(t, outs, true) {
		if err := queryIDs(ctx, tx, st, written); err != nil {
			return fmt.Errorf("sqlserver: set outcomes %s: %w", t, err)
		}
	}
	var missing []int64
	for _, o := range outs {
		if _, ok := written[o.ID]; !ok && !slices.Contains(missing, o.ID) {
			missing = append(missing, o.ID)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	existing := make(map[int64]struct{}, len(missing))
	for _, st := range s.q.existing(t, missing) {
		if err := queryIDs(ctx, tx, st, existing); err != nil {
			return fmt.Errorf("sqlserver: set outcomes %s: %w", t, err)
		}
	}
	for _, id := range missing {
		if _, ok := existing[id]; !ok {
			return fmt.Errorf("sqlserver: set outcome of %s row %d: %w", t, id, storage.ErrNotFound)
		}
	}
	return fmt.Errorf("sqlserver: set outcome of %s row %d: %w", t, missing[0], storage.ErrStale)
}

// queryIDs runs a statement returning ids and adds them to into.
func queryIDs(ctx context.Context, q querier, st stmt, into map[int64]struct{}) error {
	rs, err := q.QueryContext(ctx, st.query, st.args...)
	if err != nil {
		return err
	}
	defer rs.Close()
	for rs.Next() {
		var id int64
		if err := rs.Scan(&id); err != nil {
			return err
		}
		into[id] = struct{}{}
	}
	return rs.Err()
}

// DeleteExpired deletes up to limit expired Succeeded or Failed rows,
// skipping rows another collector is deleting.
func (s *Store) DeleteExpired(ctx context.Context, t storage.Table, limit int) (int64, error) {
	if limit <= 0 {
		return 0, nil
	}
	var n int64
	err := s.run(ctx, []stmt{s.q.deleteExpired(t, limit)}, func(q querier, _ int, st stmt) error {
		var err error
		n, err = execStmt(ctx, q, st)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("sqlserver: delete expired %s: %w", t, err)
	}
	return n, nil
}

// Get returns one row, or an error wrapping storage.ErrNotFound.
func (s *Store) Get(ctx context.Context, t storage.Table, id int64) (*storage.Record, error) {
	st := s.q.get(t, id)
	rs, err := s.db.QueryContext(ctx, st.query, st.args...)
	if err != nil {
		return nil, fmt.Errorf("sqlserver: get %s: %w", t, err)
	}
	defer rs.Close()
	if !rs.Next() {
		if err := rs.Err(); err != nil {
			return nil, fmt.Errorf("sqlserver: get %s: %w", t, err)
		}
		return nil, fmt.Errorf("sqlserver: get %s row %d: %w", t, id, storage.ErrNotFound)
	}
	r, err := scanRecord(rs, nil)
	if err != nil {
		return nil, fmt.Errorf("sqlserver: get %s: %w", t, err)
	}
	return r, nil
}

// List returns one page of rows, newest first, and the number of rows
// matching q.
func (s *Store) List(ctx context.Context, t storage.Table, q storage.ListQuery) ([]*storage.Record, int64, error) {
	page, count := s.q.list(t, q)
	rs, err := s.db.QueryContext(ctx, page.query, page.args...)
	if err != nil {
		return nil, 0, fmt.Errorf("sqlserver: list %s: %w", t, err)
	}
	defer rs.Close()
	var recs []*storage.Record
	for rs.Next() {
		r, err := scanRecord(rs, nil)
		if err != nil {
			return nil, 0, fmt.Errorf("sqlserver: list %s: %w", t, err)
		}
		recs = append(recs, r)
	}
	if err := rs.Err(); err != nil {
		return nil, 0, fmt.Errorf("sqlserver: list %s: %w", t, err)
	}
	var total int64
	if err := s.db.QueryRowContext(ctx, count.query, count.args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("sqlserver: count %s: %w", t, err)
	}
	return recs, total, nil
}

// Counts returns the number of rows per status.
func (s *Store) Counts(ctx context.Context, t storage.Table) (map[storage.Status]int64, error) {
	st := s.q.counts(t)
	rs, err := s.db.QueryContext(ctx, st.query, st.args...)
	if err != nil {
		return nil, fmt.Errorf("sqlserver: counts %s: %w", t, err)
	}
	defer rs.Close()
	counts := make(map[storage.Status]int64)
	for rs.Next() {
		var (
			status string
			n      int64
		)
		if err := rs.Scan(&status, &n); err != nil {
			return nil, fmt.Errorf("sqlserver: counts %s: %w", t, err)
		}
		counts[storage.Status(status)] = n
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("sqlserver: counts %s: %w", t, err)
	}
	return counts, nil
}

// Delete removes rows by id, in one transaction.
func (s *Store) Delete(ctx context.Context, t storage.Table, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	err := s.run(ctx, s.q.delete(t, ids), func(q querier, _ int, st stmt) error {
		_, err := execStmt(ctx, q, st)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlserver: delete %s: %w", t, err)
	}
	return nil
}

// scanRecord reads the columns of a record, and then the claimed row's
// former due time when was is not nil.
func scanRecord(rs *sql.Rows, was *time.Time) (*storage.Record, error) {
	var (
		r        storage.Record
		content  sql.NullString
		retries  int64
		status   string
		exp, nxt *time.Time
	)
	dest := []any{&r.ID, &r.Version, &r.Name, &r.Group, &r.MessageID, &content, &retries,
		&r.Added, &exp, &status, &nxt}
	if was != nil {
		dest = append(dest, was)
	}
	if err := rs.Scan(dest...); err != nil {
		return nil, err
	}
	if content.Valid {
		r.Content = []byte(content.String)
	}
	r.Retries, r.Status = int(retries), storage.Status(status)
	r.Added, r.ExpiresAt, r.NextAttemptAt = r.Added.UTC(), utc(exp), utc(nxt)
	if was != nil {
		*was = was.UTC()
	}
	return &r, nil
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// insertErr wraps an error of an insert, marking the values SQL Server
// refused (a value too long for its column) with storage.ErrRefused.
func insertErr(op string, err error) error {
	switch sqlNumber(err) {
	case errTruncated, errTruncatedNamed:
		return fmt.Errorf("sqlserver: %s: %w: %w", op, storage.ErrRefused, err)
	}
	return fmt.Errorf("sqlserver: %s: %w", op, err)
}
