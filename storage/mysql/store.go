package mysql

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	driver "github.com/go-sql-driver/mysql"

	"github.com/go-cap/cap/storage"
)

// ErrNotMySQL: New was given a *sql.DB whose driver is not
// go-sql-driver/mysql.
var ErrNotMySQL = errors.New("mysql: *sql.DB must use github.com/go-sql-driver/mysql")

// Batch limits: rows of one INSERT, ids of one IN list, outcomes of one
// UPDATE, and the Content bytes of one INSERT (a statement must fit the
// server's max_allowed_packet, 16 MiB on MariaDB by default, 64 MiB on
// MySQL 8).
const (
	maxRows         = 500
	maxIDs          = 1000
	maxOutcomes     = 500
	maxContentBytes = 4 << 20
	// deadlockRetries is how often the storage's own transactions are tried
	// again after InnoDB chose them as a deadlock victim.
	deadlockRetries = 5
)

// Store keeps CAP's published and received tables in MySQL or MariaDB. It
// implements storage.Storage[*sql.Tx], storage.Notifier, storage.Namer,
// storage.Leaser, storage.Pinger, storage.BacklogReader and
// storage.ReceivedChecker, and is safe for concurrent use.
type Store struct {
	db   *sql.DB
	opts Options
	q    *queries
	rc   *sql.TxOptions // READ COMMITTED, for the transactions that lock
}

var (
	_ storage.Storage[*sql.Tx] = (*Store)(nil)
	_ storage.Namer            = (*Store)(nil)
	_ storage.Notifier         = (*Store)(nil)
)

// New returns a storage over a *sql.DB opened with go-sql-driver/mysql
// (Open, sql.Open("mysql", dsn) or sql.OpenDB(connector)). The DSN must
// have parseTime=true (CheckDSN lists what it needs); Migrate checks the
// same on a connection and refuses servers older than MySQL 8.0 or
// MariaDB 10.6.
func New(db *sql.DB, opts Options) (*Store, error) {
	if db == nil {
		return nil, errors.New("mysql: nil *sql.DB")
	}
	if _, ok := db.Driver().(*driver.MySQLDriver); !ok {
		return nil, fmt.Errorf("%w, not %T", ErrNotMySQL, db.Driver())
	}
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Store{db: db, opts: opts, q: newQueries(opts.TableNamePrefix),
		rc: &sql.TxOptions{Isolation: sql.LevelReadCommitted}}, nil
}

// Name returns "MySql", CAP's name for this storage.
func (s *Store) Name() string { return "MySql" }

// TableNamePrefix returns the prefix of the table names.
func (s *Store) TableNamePrefix() string { return s.opts.TableNamePrefix }

// Begin starts a transaction.
func (s *Store) Begin(ctx context.Context) (*sql.Tx, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("mysql: begin: %w", err)
	}
	return tx, nil
}

// Commit commits tx.
func (s *Store) Commit(_ context.Context, tx *sql.Tx) error {
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("mysql: commit: %w", err)
	}
	return nil
}

// Rollback rolls tx back; a finished tx is not an error.
func (s *Store) Rollback(_ context.Context, tx *sql.Tx) error {
	if err := tx.Rollback(); err != nil && !errors.Is(err, sql.ErrTxDone) {
		return fmt.Errorf("mysql: rollback: %w", err)
	}
	return nil
}

// inTx runs fn in a transaction of the storage's own, committed when fn
// succeeds, and runs it again when InnoDB picks it as a deadlock victim.
func (s *Store) inTx(ctx context.Context, opts *sql.TxOptions, fn func(tx *sql.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := s.tryTx(ctx, opts, fn)
		if err == nil || !isDeadlock(err) || attempt == deadlockRetries || ctx.Err() != nil {
			return err
		}
		s.opts.Logger.Debug("mysql: deadlock victim, running the transaction again", "attempt", attempt, "error", err)
	}
}

func (s *Store) tryTx(ctx context.Context, opts *sql.TxOptions, fn func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, opts)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// retryDeadlock runs a single statement again when InnoDB picks it as a
// deadlock victim.
func (s *Store) retryDeadlock(ctx context.Context, fn func() error) error {
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil || !isDeadlock(err) || attempt == deadlockRetries || ctx.Err() != nil {
			return err
		}
		s.opts.Logger.Debug("mysql: deadlock victim, running the statement again", "attempt", attempt, "error", err)
	}
}

// isDeadlock reports InnoDB's ER_LOCK_DEADLOCK, after which the
// transaction has been rolled back and may simply run again.
func isDeadlock(err error) bool {
	var me *driver.MySQLError
	return errors.As(err, &me) && me.Number == 1213
}

// execer is shared by *sql.DB and *sql.Tx.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// chunks splits recs into INSERTs of at most maxRows rows and about
// maxContentBytes of Content.
func chunks(recs []*storage.Record) [][]*storage.Record {
	var out [][]*storage.Record
	start, size := 0, 0
	for i, r := range recs {
		if i > start && (i-start == maxRows || size+len(r.Content) > maxContentBytes) {
			out = append(out, recs[start:i])
			start, size = i, 0
		}
		size += len(r.Content)
	}
	if start < len(recs) {
		out = append(out, recs[start:])
	}
	return out
}

// due returns the microsecond offsets of a new row's NextAttemptAt and
// ExpiresAt, nil for NULL: a Delayed row expires when due, as in CAP;
// others ExpiresIn after now when it is positive.
func due(r *storage.Record, status storage.Status) (next, expires any) {
	if !r.Terminal {
		next = r.DueIn.Microseconds()
	}
	switch {
	case status == storage.StatusDelayed && !r.Terminal:
		expires = r.DueIn.Microseconds()
	case r.ExpiresIn > 0:
		expires = r.ExpiresIn.Microseconds()
	}
	return next, expires
}

// insertPublished inserts rows into Published, in chunks.
func (s *Store) insertPublished(ctx context.Context, e execer, recs []*storage.Record) error {
	tq := &s.q.tables[storage.Published]
	for _, c := range chunks(recs) {
		args := make([]any, 0, len(c)*8)
		for _, r := range c {
			if r.Status == "" {
				r.Status = storage.StatusScheduled
			}
			next, exp := due(r, r.Status)
			args = append(args, r.ID, r.Version, r.Name, text(r.Content), int32(r.Retries), string(r.Status), exp, next)
		}
		if _, err := e.ExecContext(ctx, tq.insert(len(c)), args...); err != nil {
			return err
		}
	}
	return nil
}

// InsertPublished stores rows in a transaction of its own and reads back
// the times the database gave them.
func (s *Store) InsertPublished(ctx context.Context, recs []*storage.Record) error {
	if len(recs) == 0 {
		return nil
	}
	tq := &s.q.tables[storage.Published]
	type filled struct {
		added    time.Time
		exp, nxt *time.Time
	}
	var got map[int64]filled
	err := s.inTx(ctx, nil, func(tx *sql.Tx) error {
		if err := s.insertPublished(ctx, tx, recs); err != nil {
			return err
		}
		got = make(map[int64]filled, len(recs))
		return readInserted(ctx, tx, tq, recs, func(id int64, _, _ string, added time.Time, exp, nxt *time.Time) {
			got[id] = filled{added, exp, nxt}
		})
	})
	if err != nil {
		return fmt.Errorf("mysql: insert published: %w", err)
	}
	for _, r := range recs {
		if f, ok := got[r.ID]; ok {
			r.Added, r.ExpiresAt, r.NextAttemptAt = f.added.UTC(), utc(f.exp), utc(f.nxt)
		}
	}
	return nil
}

// readInserted reads back Id, MessageId, Group, Added, ExpiresAt and
// NextAttemptAt of the rows of recs' ids.
func readInserted(ctx context.Context, e execer, tq *tableQueries, recs []*storage.Record,
	each func(id int64, msgID, group string, added time.Time, exp, nxt *time.Time)) error {
	for start := 0; start < len(recs); start += maxIDs {
		part := recs[start:min(start+maxIDs, len(recs))]
		ids := make([]any, len(part))
		for i, r := range part {
			ids[i] = r.ID
		}
		rs, err := e.QueryContext(ctx, tq.insertedOnes(len(ids)), ids...)
		if err != nil {
			return err
		}
		for rs.Next() {
			var (
				id           int64
				msgID, group string
				added        time.Time
				exp, nxt     *time.Time
			)
			if err := rs.Scan(&id, &msgID, &group, &added, &exp, &nxt); err != nil {
				_ = rs.Close()
				return err
			}
			each(id, msgID, group, added, exp, nxt)
		}
		if err := rs.Err(); err != nil {
			return err
		}
		if err := rs.Close(); err != nil {
			return err
		}
	}
	return nil
}

// InsertPublishedTx stores rows in the caller's transaction, in one INSERT
// per chunk of rows. A single row (what PublishTx stores) costs one
// statement; for several it reads back the times the database gave them.
func (s *Store) InsertPublishedTx(ctx context.Context, tx *sql.Tx, recs []*storage.Record) error {
	if err := s.insertPublished(ctx, tx, recs); err != nil {
		return fmt.Errorf("mysql: insert published: %w", err)
	}
	if len(recs) == 1 {
		// What PublishTx stores: one row, and one statement for it.
		return nil
	}
	byID := make(map[int64]*storage.Record, len(recs))
	for _, r := range recs {
		byID[r.ID] = r
	}
	err := readInserted(ctx, tx, &s.q.tables[storage.Published], recs,
		func(id int64, _, _ string, added time.Time, exp, nxt *time.Time) {
			if r := byID[id]; r != nil {
				r.Added, r.ExpiresAt, r.NextAttemptAt = added.UTC(), utc(exp), utc(nxt)
			}
		})
	if err != nil {
		return fmt.Errorf("mysql: insert published: %w", err)
	}
	return nil
}

// InsertReceived stores a received row unless one with the same
// (MessageID, Group) exists.
func (s *Store) InsertReceived(ctx context.Context, r *storage.Record) (bool, error) {
	ins, err := s.InsertReceivedBatch(ctx, []*storage.Record{r})
	if err != nil {
		return false, err
	}
	return ins[0], nil
}

// InsertReceivedBatch stores recs in one transaction, each unless a row
// with its (MessageID, Group) exists or comes earlier in recs, and reports
// which it stored.
func (s *Store) InsertReceivedBatch(ctx context.Context, recs []*storage.Record) ([]bool, error) {
	inserted := make([]bool, len(recs))
	type key struct{ msgID, group string }
	seen := make(map[key]bool, len(recs))
	var todo []*storage.Record
	index := make(map[int64]int, len(recs))
	for i, r := range recs {
		if r == nil {
			return nil, errors.New("mysql: insert received: nil record")
		}
		// A duplicate within the batch is left out here, so the first wins.
		k := key{r.MessageID, r.Group}
		if seen[k] {
			continue
		}
		seen[k] = true
		todo = append(todo, r)
		index[r.ID] = i
	}
	if len(todo) == 0 {
		return inserted, nil
	}
	// Rows in key order, so two batches that share keys lock them in the
	// same order.
	slices.SortFunc(todo, func(a, b *storage.Record) int {
		return cmp.Or(cmp.Compare(a.MessageID, b.MessageID), cmp.Compare(a.Group, b.Group))
	})
	tq := &s.q.tables[storage.Received]
	type filled struct {
		added    time.Time
		exp, nxt *time.Time
	}
	var got map[int]filled
	err := s.inTx(ctx, nil, func(tx *sql.Tx) error {
		for _, c := range chunks(todo) {
			args := make([]any, 0, len(c)*10)
			for _, r := range c {
				status := r.Status
				if status == "" {
					status = storage.StatusScheduled
				}
				next, exp := due(r, status)
				args = append(args, r.ID, r.Version, r.Name, r.Group, r.MessageID, text(r.Content), int32(r.Retries),
					string(status), exp, next)
			}
			if _, err := tx.ExecContext(ctx, tq.insert(len(c)), args...); err != nil {
				return err
			}
		}
		got = make(map[int]filled, len(todo))
		var clash error
		err := readInserted(ctx, tx, tq, todo, func(id int64, msgID, group string, added time.Time, exp, nxt *time.Time) {
			i, ok := index[id]
			if !ok {
				return
			}
			// The row is ours if it carries our id and key. An id taken
			// by a row of another key made the upsert a no-op: the batch
			// fails, as an INSERT would on the primary key.
			if recs[i].MessageID != msgID || recs[i].Group != group {
				clash = fmt.Errorf("row id %d is already stored for message %q of group %q", id, msgID, group)
				return
			}
			got[i] = filled{added, exp, nxt}
		})
		return cmp.Or(err, clash)
	})
	if err != nil {
		return nil, insertReceivedErr(err)
	}
	// Written back only once the transaction has committed.
	for i, f := range got {
		r := recs[i]
		if r.Status == "" {
			r.Status = storage.StatusScheduled
		}
		r.Added, r.ExpiresAt, r.NextAttemptAt = f.added.UTC(), utc(f.exp), utc(f.nxt)
		inserted[i] = true
	}
	return inserted, nil
}

// Claim leases up to req.Limit due rows of t, in due order: a locking read
// that skips rows other claimers hold, then the update of their due time,
// in one READ COMMITTED transaction (no gap locks, so inserts never wait
// for a claim).
func (s *Store) Claim(ctx context.Context, t storage.Table, req storage.ClaimRequest) ([]*storage.Record, error) {
	if req.Limit <= 0 {
		return nil, nil
	}
	tq := &s.q.tables[t]
	args := []any{req.Lease.Microseconds(), req.Version}
	groups := 0
	if t == storage.Received {
		for _, g := range req.Groups {
			args = append(args, g)
		}
		groups = len(req.Groups)
	}
	args = append(args, req.Limit)
	var recs []*storage.Record
	err := s.inTx(ctx, s.rc, func(tx *sql.Tx) error {
		recs = recs[:0]
		rs, err := tx.QueryContext(ctx, tq.claim(groups), args...)
		if err != nil {
			return err
		}
		var until time.Time
		for rs.Next() {
			r, err := scanRecord(rs, &until)
			if err != nil {
				_ = rs.Close()
				return err
			}
			recs = append(recs, r)
		}
		if err := rs.Err(); err != nil {
			return err
		}
		if err := rs.Close(); err != nil {
			return err
		}
		for start := 0; start < len(recs); start += maxIDs {
			part := recs[start:min(start+maxIDs, len(recs))]
			largs := make([]any, 0, len(part)+1)
			largs = append(largs, until)
			for _, r := range part {
				largs = append(largs, r.ID)
			}
			if _, err := tx.ExecContext(ctx, tq.lease(len(part)), largs...); err != nil {
				return err
			}
		}
		u := until.UTC()
		for _, r := range recs {
			r.NextAttemptAt = &u
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("mysql: claim %s: %w", t, err)
	}
	return recs, nil
}

// Reschedule sets NextAttemptAt = now + in for those rows still due.
func (s *Store) Reschedule(ctx context.Context, t storage.Table, ids []int64, in time.Duration) error {
	tq := &s.q.tables[t]
	for start := 0; start < len(ids); start += maxIDs {
		part := ids[start:min(start+maxIDs, len(ids))]
		args := make([]any, 0, len(part)+1)
		args = append(args, in.Microseconds())
		for _, id := range part {
			args = append(args, id)
		}
		if err := s.retryDeadlock(ctx, func() error {
			_, err := s.db.ExecContext(ctx, tq.reschedule(len(part)), args...)
			return err
		}); err != nil {
			return fmt.Errorf("mysql: reschedule %s: %w", t, err)
		}
	}
	return nil
}

// outcomeArgs returns the parameters of outcomes.
func outcomeArgs(outs []storage.Outcome) []any {
	args := make([]any, 0, len(outs)*outcomeParams)
	for _, o := range outs {
		args = append(args, o.ID, string(o.Status), int32(o.Retries), text(o.Content), o.ExpiresIn.Microseconds(),
			o.ExpiresFromAdded, o.Retry, o.RetryIn.Microseconds(), o.Force)
	}
	return args
}

// byID returns outs sorted by id, so that writers lock rows in one order.
func byID(outs []storage.Outcome) []storage.Outcome {
	outs = slices.Clone(outs)
	slices.SortStableFunc(outs, func(a, b storage.Outcome) int { return cmp.Compare(a.ID, b.ID) })
	return outs
}

// SetOutcomes writes outcomes in one statement per 500 of them, in one
// transaction, so all or none apply. Unknown ids are ignored.
func (s *Store) SetOutcomes(ctx context.Context, t storage.Table, outs []storage.Outcome) error {
	if len(outs) == 0 {
		return nil
	}
	tq := &s.q.tables[t]
	outs = byID(outs)
	var err error
	if len(outs) <= maxOutcomes {
		err = s.retryDeadlock(ctx, func() error {
			_, err := s.db.ExecContext(ctx, tq.outcomes(len(outs)), outcomeArgs(outs)...)
			return err
		})
	} else {
		err = s.inTx(ctx, nil, func(tx *sql.Tx) error {
			for start := 0; start < len(outs); start += maxOutcomes {
				part := outs[start:min(start+maxOutcomes, len(outs))]
				if _, err := tx.ExecContext(ctx, tq.outcomes(len(part)), outcomeArgs(part)...); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err != nil {
		return fmt.Errorf("mysql: set outcomes %s: %w", t, err)
	}
	return nil
}

// SetOutcomesTx writes outcomes in the caller's transaction. It locks the
// rows first: a row another transaction is completing is waited for, and
// then seen as it committed. It fails with storage.ErrStale when a row is
// already Succeeded and storage.ErrNotFound when one does not exist; the
// transaction must then roll back.
func (s *Store) SetOutcomesTx(ctx context.Context, tx *sql.Tx, t storage.Table, outs []storage.Outcome) error {
	if len(outs) == 0 {
		return nil
	}
	tq := &s.q.tables[t]
	outs = byID(outs)
	status := make(map[int64]string, len(outs))
	for start := 0; start < len(outs); start += maxIDs {
		part := outs[start:min(start+maxIDs, len(outs))]
		ids := make([]any, len(part))
		for i, o := range part {
			ids[i] = o.ID
		}
		rs, err := tx.QueryContext(ctx, tq.lockForOutcome(len(ids)), ids...)
		if err != nil {
			return fmt.Errorf("mysql: set outcomes %s: %w", t, err)
		}
		for rs.Next() {
			var (
				id int64
				st string
			)
			if err := rs.Scan(&id, &st); err != nil {
				_ = rs.Close()
				return fmt.Errorf("mysql: set outcomes %s: %w", t, err)
			}
			status[id] = st
		}
		if err := rs.Err(); err != nil {
			return fmt.Errorf("mysql: set outcomes %s: %w", t, err)
		}
		_ = rs.Close()
	}
	for _, o := range outs {
		st, ok := status[o.ID]
		if !ok {
			return fmt.Errorf("mysql: set outcome of %s row %d: %w", t, o.ID, storage.ErrNotFound)
		}
		if st == string(storage.StatusSucceeded) {
			return fmt.Errorf("mysql: set outcome of %s row %d: %w", t, o.ID, storage.ErrStale)
		}
	}
	for start := 0; start < len(outs); start += maxOutcomes {
		part := outs[start:min(start+maxOutcomes, len(outs))]
		if _, err := tx.ExecContext(ctx, tq.outcomes(len(part)), outcomeArgs(part)...); err != nil {
			return fmt.Errorf("mysql: set outcomes %s: %w", t, err)
		}
	}
	return nil
}

// DeleteExpired deletes up to limit expired Succeeded or Failed rows,
// skipping rows another collector is deleting.
func (s *Store) DeleteExpired(ctx context.Context, t storage.Table, limit int) (int64, error) {
	if limit <= 0 {
		return 0, nil
	}
	var n int64
	err := s.inTx(ctx, s.rc, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q.tables[t].deleteX, limit)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("mysql: delete expired %s: %w", t, err)
	}
	return n, nil
}

// Get returns one row, or an error wrapping storage.ErrNotFound.
func (s *Store) Get(ctx context.Context, t storage.Table, id int64) (*storage.Record, error) {
	rs, err := s.db.QueryContext(ctx, s.q.tables[t].get, id)
	if err != nil {
		return nil, fmt.Errorf("mysql: get %s: %w", t, err)
	}
	defer rs.Close()
	if !rs.Next() {
		if err := rs.Err(); err != nil {
			return nil, fmt.Errorf("mysql: get %s: %w", t, err)
		}
		return nil, fmt.Errorf("mysql: get %s row %d: %w", t, id, storage.ErrNotFound)
	}
	r, err := scanRecord(rs, nil)
	if err != nil {
		return nil, fmt.Errorf("mysql: get %s: %w", t, err)
	}
	return r, nil
}

// List returns one page of rows, newest first, and the number of rows
// matching q.
func (s *Store) List(ctx context.Context, t storage.Table, q storage.ListQuery) ([]*storage.Record, int64, error) {
	limit, offset := q.Limit, q.Offset
	if limit <= 0 {
		limit = 20
	}
	if offset < 0 {
		offset = 0
	}
	var (
		f      listFilter
		filter []any
	)
	add := func(bit listFilter, v string) {
		if v != "" {
			f |= bit
			filter = append(filter, v)
		}
	}
	add(filterStatus, string(q.Status))
	add(filterName, likePattern(q.Name))
	add(filterContent, likePattern(q.Content))
	if t == storage.Received {
		add(filterGroup, q.Group)
	}
	tq := &s.q.tables[t]
	rs, err := s.db.QueryContext(ctx, tq.list[f], append(slices.Clone(filter), limit, offset)...)
	if err != nil {
		return nil, 0, fmt.Errorf("mysql: list %s: %w", t, err)
	}
	defer rs.Close()
	var recs []*storage.Record
	for rs.Next() {
		r, err := scanRecord(rs, nil)
		if err != nil {
			return nil, 0, fmt.Errorf("mysql: list %s: %w", t, err)
		}
		recs = append(recs, r)
	}
	if err := rs.Err(); err != nil {
		return nil, 0, fmt.Errorf("mysql: list %s: %w", t, err)
	}
	_ = rs.Close()
	var total int64
	if err := s.db.QueryRowContext(ctx, tq.count[f], filter...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("mysql: count %s: %w", t, err)
	}
	return recs, total, nil
}

// Counts returns the number of rows per status.
func (s *Store) Counts(ctx context.Context, t storage.Table) (map[storage.Status]int64, error) {
	rs, err := s.db.QueryContext(ctx, s.q.tables[t].counts)
	if err != nil {
		return nil, fmt.Errorf("mysql: counts %s: %w", t, err)
	}
	defer rs.Close()
	counts := make(map[storage.Status]int64)
	for rs.Next() {
		var (
			st string
			n  int64
		)
		if err := rs.Scan(&st, &n); err != nil {
			return nil, fmt.Errorf("mysql: counts %s: %w", t, err)
		}
		counts[storage.Status(st)] = n
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("mysql: counts %s: %w", t, err)
	}
	return counts, nil
}

// Delete removes rows by id.
func (s *Store) Delete(ctx context.Context, t storage.Table, ids []int64) error {
	tq := &s.q.tables[t]
	for start := 0; start < len(ids); start += maxIDs {
		part := ids[start:min(start+maxIDs, len(ids))]
		args := make([]any, len(part))
		for i, id := range part {
			args[i] = id
		}
		if err := s.retryDeadlock(ctx, func() error {
			_, err := s.db.ExecContext(ctx, tq.delete(len(part)), args...)
			return err
		}); err != nil {
			return fmt.Errorf("mysql: delete %s: %w", t, err)
		}
	}
	return nil
}

// scanner is *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

// scanRecord reads the columns of a record, and then the claim's new due
// time when until is not nil.
func scanRecord(rs scanner, until *time.Time) (*storage.Record, error) {
	var (
		r        storage.Record
		retries  int64
		status   string
		exp, nxt *time.Time
	)
	dest := []any{&r.ID, &r.Version, &r.Name, &r.Group, &r.MessageID, &r.Content, &retries,
		&r.Added, &exp, &status, &nxt}
	if until != nil {
		dest = append(dest, until)
	}
	if err := rs.Scan(dest...); err != nil {
		return nil, err
	}
	r.Retries, r.Status = int(retries), storage.Status(status)
	r.Added, r.ExpiresAt, r.NextAttemptAt = r.Added.UTC(), utc(exp), utc(nxt)
	return &r, nil
}

// text passes content as a string parameter; nil stands for NULL.
func text(b []byte) any {
	if b == nil {
		return nil
	}
	return string(b)
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// refusedCodes are the server's errors about a value of the row itself:
// out of range (1264), an invalid date (1292), a string the character set
// cannot hold (1366, 1300), too long for its column (1406).
var refusedCodes = map[uint16]bool{1264: true, 1292: true, 1300: true, 1366: true, 1406: true}

// insertReceivedErr wraps an error of a Received insert, marking the
// values the database refuses, and a row larger than the largest packet,
// with storage.ErrRefused.
func insertReceivedErr(err error) error {
	var me *driver.MySQLError
	if (errors.As(err, &me) && refusedCodes[me.Number]) || errors.Is(err, driver.ErrPktTooLarge) {
		return fmt.Errorf("mysql: insert received: %w: %w", storage.ErrRefused, err)
	}
	return fmt.Errorf("mysql: insert received: %w", err)
}
