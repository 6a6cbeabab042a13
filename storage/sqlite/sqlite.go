// Package sqlite is the embedded storage: the Published and Received tables
// in a SQLite database, through database/sql and the pure-Go driver
// modernc.org/sqlite. Business code publishes in a *sql.Tx of the same
// database.
//
// The tables are named like CAP's MySQL ones, the prefix and the table name
// inside one identifier: "cap.published" and "cap.received". Times are
// stored as UTC text ("2006-01-02 15:04:05.000"), which orders like the
// times it holds. As the database is embedded, its clock is this process's
// clock.
//
// Open the database with Open: several writers need its settings
// (BEGIN IMMEDIATE, a busy timeout, WAL), or they fail with SQLITE_BUSY.
package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/go-cap/cap/storage"
)

// DefaultTablePrefix is the table prefix when Options.TablePrefix is empty,
// CAP's default.
const DefaultTablePrefix = "cap"

// Options configures a Storage.
type Options struct {
	// TablePrefix goes before ".published" and ".received" in the table
	// names. It must be a plain identifier. Defaults to DefaultTablePrefix.
	TablePrefix string
}

// Storage is a storage.Storage[*sql.Tx] on a SQLite database. It is safe
// for concurrent use.
type Storage struct {
	db  *sql.DB
	sql statements
}

var (
	_ storage.Storage[*sql.Tx] = (*Storage)(nil)
	_ storage.Namer            = (*Storage)(nil)
	_ storage.Leaser           = (*Storage)(nil)
	_ storage.Pinger           = (*Storage)(nil)
	_ storage.BacklogReader    = (*Storage)(nil)
)

// New returns a Storage on db, best opened with Open. It checks the options
// but does not touch the database; Migrate creates the tables.
func New(db *sql.DB, opts Options) (*Storage, error) {
	if db == nil {
		return nil, errors.New("sqlite: nil *sql.DB")
	}
	prefix := opts.TablePrefix
	if prefix == "" {
		prefix = DefaultTablePrefix
	}
	if err := storage.ValidateIdentifier("table prefix", prefix); err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	return &Storage{db: db, sql: buildStatements(prefix)}, nil
}

// Name returns "SQLite", the name the dashboard shows.
func (s *Storage) Name() string { return "SQLite" }

// DB returns the database the storage works on.
func (s *Storage) DB() *sql.DB { return s.db }

// now is the storage's clock: the database is embedded, so its "now" is
// this machine's, in UTC and at the stored precision.
func now() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }

// formatTime turns t into the stored text, truncated to milliseconds.
func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

// storedTime is t as it reads back from the database.
func storedTime(t time.Time) time.Time { return t.UTC().Truncate(time.Millisecond) }

func parseTime(s string) (time.Time, error) {
	t, err := time.ParseInLocation(timeLayout, s, time.UTC)
	if err != nil {
		return time.Time{}, fmt.Errorf("sqlite: bad stored time %q: %w", s, err)
	}
	return t, nil
}

func kind(t storage.Table) tableKind {
	if t == storage.Received {
		return receivedTable
	}
	return publishedTable
}

// Migrate creates the tables and indexes if absent, and replaces indexes
// that an earlier version of this storage made whole by their partial form.
// It runs in one write transaction, so instances starting together create
// them once.
func (s *Storage) Migrate(ctx context.Context) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		for _, stmt := range s.sql.migrate {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return err
			}
		}
		for _, idx := range s.sql.indexes {
			if idx.partial {
				var def sql.NullString
				err := tx.QueryRowContext(ctx, `SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?`,
					idx.name).Scan(&def)
				if err != nil && !errors.Is(err, sql.ErrNoRows) {
					return err
				}
				if def.Valid && !strings.Contains(strings.ToUpper(def.String), " WHERE ") {
					if _, err := tx.ExecContext(ctx, `DROP INDEX `+quote(idx.name)); err != nil {
						return err
					}
				}
			}
			if _, err := tx.ExecContext(ctx, idx.create); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	return nil
}

// Begin starts a transaction on the storage's database.
func (s *Storage) Begin(ctx context.Context) (*sql.Tx, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("sqlite: begin: %w", err)
	}
	return tx, nil
}

// Commit commits tx.
func (s *Storage) Commit(_ context.Context, tx *sql.Tx) error {
	if tx == nil {
		return errNilTx
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: commit: %w", err)
	}
	return nil
}

// Rollback rolls tx back; a finished tx is not an error.
func (s *Storage) Rollback(_ context.Context, tx *sql.Tx) error {
	if tx == nil {
		return errNilTx
	}
	if err := tx.Rollback(); err != nil && !errors.Is(err, sql.ErrTxDone) {
		return fmt.Errorf("sqlite: rollback: %w", err)
	}
	return nil
}

var errNilTx = errors.New("sqlite: nil transaction")

// inTx runs fn in a transaction of its own, committed when fn succeeds.
func (s *Storage) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// insertValues are the columns the storage computes for an inserted row.
type insertValues struct {
	status    storage.Status
	added     time.Time
	next      *time.Time
	expiresAt *time.Time
}

func computeInsert(rec *storage.Record, at time.Time) insertValues {
	v := insertValues{status: rec.Status, added: at}
	if v.status == "" {
		v.status = storage.StatusScheduled
	}
	if !rec.Terminal {
		n := storedTime(at.Add(rec.DueIn))
		v.next = &n
	}
	switch {
	case v.status == storage.StatusDelayed && v.next != nil:
		e := *v.next
		v.expiresAt = &e
	case rec.ExpiresIn > 0:
		e := storedTime(at.Add(rec.ExpiresIn))
		v.expiresAt = &e
	}
	return v
}

func (v insertValues) apply(rec *storage.Record) {
	rec.Status = v.status
	rec.Added = v.added
	rec.NextAttemptAt = v.next
	rec.ExpiresAt = v.expiresAt
}

func insertArgs(rec *storage.Record, v insertValues) []any {
	return []any{
		rec.ID, rec.Version, rec.Name, content(rec.Content), rec.Retries,
		formatTime(v.added), nullTime(v.expiresAt), string(v.status), nullTime(v.next),
	}
}

// content stores Content as text, as CAP does, so that it can be searched.
func content(b []byte) any {
	if b == nil {
		return nil
	}
	return string(b)
}

func nullTime(t *time.Time) any {
	if t == nil {
		return nil
	}
	return formatTime(*t)
}

// InsertPublished stores recs in one transaction of its own.
func (s *Storage) InsertPublished(ctx context.Context, recs []*storage.Record) error {
	if len(recs) == 0 {
		return nil
	}
	var vals []insertValues
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		vals, err = s.insertPublished(ctx, tx, recs)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: insert published: %w", err)
	}
	for i, rec := range recs {
		vals[i].apply(rec)
	}
	return nil
}

// InsertPublishedTx stores recs in the caller's transaction.
func (s *Storage) InsertPublishedTx(ctx context.Context, tx *sql.Tx, recs []*storage.Record) error {
	if tx == nil {
		return errNilTx
	}
	if len(recs) == 0 {
		return nil
	}
	vals, err := s.insertPublished(ctx, tx, recs)
	if err != nil {
		return fmt.Errorf("sqlite: insert published: %w", err)
	}
	for i, rec := range recs {
		vals[i].apply(rec)
	}
	return nil
}

// insertPublished inserts recs with one prepared statement and returns the
// computed columns, which the caller writes back once the insert holds.
func (s *Storage) insertPublished(ctx context.Context, tx *sql.Tx, recs []*storage.Record) ([]insertValues, error) {
	for _, rec := range recs {
		if rec == nil {
			return nil, errors.New("nil record")
		}
	}
	stmt, err := tx.PrepareContext(ctx, s.sql.published.insert)
	if err != nil {
		return nil, err
	}
	defer stmt.Close()
	at := now()
	vals := make([]insertValues, len(recs))
	for i, rec := range recs {
		vals[i] = computeInsert(rec, at)
		if _, err := stmt.ExecContext(ctx, insertArgs(rec, vals[i])...); err != nil {
			return nil, fmt.Errorf("id %d: %w", rec.ID, err)
		}
	}
	return vals, nil
}

// InsertReceived stores rec unless a row with the same (MessageID, Group)
// exists, and reports whether it inserted.
func (s *Storage) InsertReceived(ctx context.Context, rec *storage.Record) (bool, error) {
	if rec == nil {
		return false, errors.New("sqlite: insert received: nil record")
	}
	v := computeInsert(rec, now())
	args := append(insertArgs(rec, v), rec.Group, rec.MessageID)
	res, err := s.db.ExecContext(ctx, s.sql.received.insert, args...)
	if err != nil {
		return false, fmt.Errorf("sqlite: insert received id %d: %w", rec.ID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("sqlite: insert received id %d: %w", rec.ID, err)
	}
	if n == 0 {
		return false, nil
	}
	v.apply(rec)
	return true, nil
}

// InsertReceivedBatch stores recs in one write transaction, each unless a
// row with its (MessageID, Group) exists or comes earlier in recs, and
// reports which it stored.
func (s *Storage) InsertReceivedBatch(ctx context.Context, recs []*storage.Record) ([]bool, error) {
	for _, rec := range recs {
		if rec == nil {
			return nil, errors.New("sqlite: insert received: nil record")
		}
	}
	inserted := make([]bool, len(recs))
	if len(recs) == 0 {
		return inserted, nil
	}
	vals := make([]insertValues, len(recs))
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, s.sql.received.insert)
		if err != nil {
			return err
		}
		defer stmt.Close()
		at := now() // once the write lock is held
		for i, rec := range recs {
			vals[i] = computeInsert(rec, at)
			res, err := stmt.ExecContext(ctx, append(insertArgs(rec, vals[i]), rec.Group, rec.MessageID)...)
			if err != nil {
				return fmt.Errorf("id %d: %w", rec.ID, err)
			}
			n, err := res.RowsAffected()
			if err != nil {
				return fmt.Errorf("id %d: %w", rec.ID, err)
			}
			inserted[i] = n > 0
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: insert received: %w", err)
	}
	for i, rec := range recs {
		if inserted[i] {
			vals[i].apply(rec)
		}
	}
	return inserted, nil
}

// Claim leases up to req.Limit due rows of t, oldest due first. The rows
// are read and leased in one write transaction; SQLite has one writer at a
// time, so no other claim sees them as due. A claim that finds nothing due
// does not take the write lock.
func (s *Storage) Claim(ctx context.Context, t storage.Table, req storage.ClaimRequest) ([]*storage.Record, error) {
	if req.Limit <= 0 {
		return nil, nil
	}
	q := s.sql.table(kind(t))
	// The Received statements take the groups as one more argument.
	var groups []any
	if t == storage.Received {
		var g any
		if len(req.Groups) > 0 {
			b, err := json.Marshal(req.Groups)
			if err != nil {
				return nil, fmt.Errorf("sqlite: claim %s: %w", t, err)
			}
			g = string(b)
		}
		groups = []any{g}
	}
	var one int
	switch err := s.db.QueryRowContext(ctx, q.claimProbe, append([]any{req.Version, formatTime(now())}, groups...)...).Scan(&one); {
	case errors.Is(err, sql.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("sqlite: claim %s: %w", t, err)
	}
	var recs []*storage.Record
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		// Read the clock once the write lock is held, not before waiting.
		at := now()
		rows, err := tx.QueryContext(ctx, q.claimSelect, append([]any{req.Version, formatTime(at), req.Limit}, groups...)...)
		if err != nil {
			return err
		}
		recs, err = scanRecords(rows)
		if err != nil || len(recs) == 0 {
			return err
		}
		ids := make([]int64, len(recs))
		for i, r := range recs {
			ids[i] = r.ID
		}
		lease := storedTime(at.Add(req.Lease))
		res, err := tx.ExecContext(ctx, q.claimUpdate, formatTime(lease), idsJSON(ids))
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n != int64(len(ids)) {
			return fmt.Errorf("leased %d of %d rows", n, len(ids))
		}
		for _, r := range recs {
			l := lease
			r.NextAttemptAt = &l
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: claim %s: %w", t, err)
	}
	return recs, nil
}

// Reschedule sets NextAttemptAt = now + in for the rows of ids that still
// await an attempt.
func (s *Storage) Reschedule(ctx context.Context, t storage.Table, ids []int64, in time.Duration) error {
	if len(ids) == 0 {
		return nil
	}
	next := storedTime(now().Add(in))
	if _, err := s.db.ExecContext(ctx, s.sql.table(kind(t)).reschedule, formatTime(next), idsJSON(ids)); err != nil {
		return fmt.Errorf("sqlite: reschedule %s: %w", t, err)
	}
	return nil
}

// outcomeArgs are the arguments of setOutcome and setOutcomeLive.
func outcomeArgs(o storage.Outcome, at time.Time) []any {
	var expires, fromAdded any
	if o.ExpiresIn > 0 {
		if o.ExpiresFromAdded {
			// A strftime modifier in seconds with milliseconds, which SQLite
			// rounds to the millisecond.
			fromAdded = fmt.Sprintf("%+.3f seconds", o.ExpiresIn.Seconds())
		} else {
			expires = formatTime(at.Add(o.ExpiresIn))
		}
	}
	var next any
	if o.Retry {
		next = formatTime(at.Add(o.RetryIn))
	}
	return []any{string(o.Status), o.Retries, content(o.Content), expires, fromAdded, next, o.ID}
}

// SetOutcomes writes outs in one transaction, with one prepared statement.
// Outcomes of rows that do not exist are ignored.
func (s *Storage) SetOutcomes(ctx context.Context, t storage.Table, outs []storage.Outcome) error {
	if len(outs) == 0 {
		return nil
	}
	q := s.sql.table(kind(t))
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		// A success stands unless the outcome is forced: a late outcome of
		// an instance whose lease ended must not undo it.
		live, err := tx.PrepareContext(ctx, q.setOutcomeLive)
		if err != nil {
			return err
		}
		defer live.Close()
		force, err := tx.PrepareContext(ctx, q.setOutcome)
		if err != nil {
			return err
		}
		defer force.Close()
		at := now()
		for _, o := range outs {
			stmt := live
			if o.Force {
				stmt = force
			}
			if _, err := stmt.ExecContext(ctx, outcomeArgs(o, at)...); err != nil {
				return fmt.Errorf("id %d: %w", o.ID, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: set outcomes %s: %w", t, err)
	}
	return nil
}

// SetOutcomesTx writes outs in the caller's transaction. It fails with
// storage.ErrStale when a row is already Succeeded and with
// storage.ErrNotFound when a row does not exist.
func (s *Storage) SetOutcomesTx(ctx context.Context, tx *sql.Tx, t storage.Table, outs []storage.Outcome) error {
	if tx == nil {
		return errNilTx
	}
	if len(outs) == 0 {
		return nil
	}
	q := s.sql.table(kind(t))
	stmt, err := tx.PrepareContext(ctx, q.setOutcomeLive)
	if err != nil {
		return fmt.Errorf("sqlite: set outcomes %s: %w", t, err)
	}
	defer stmt.Close()
	at := now()
	for _, o := range outs {
		res, err := stmt.ExecContext(ctx, outcomeArgs(o, at)...)
		if err != nil {
			return fmt.Errorf("sqlite: set outcome %s id %d: %w", t, o.ID, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("sqlite: set outcome %s id %d: %w", t, o.ID, err)
		}
		if n > 0 {
			continue
		}
		// Nothing updated: the row is either completed or missing.
		var one int
		err = tx.QueryRowContext(ctx, q.exists, o.ID).Scan(&one)
		switch {
		case err == nil:
			return fmt.Errorf("sqlite: set outcome %s id %d: %w", t, o.ID, storage.ErrStale)
		case errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("sqlite: set outcome %s id %d: %w", t, o.ID, storage.ErrNotFound)
		default:
			return fmt.Errorf("sqlite: set outcome %s id %d: %w", t, o.ID, err)
		}
	}
	return nil
}

// DeleteExpired deletes up to limit Succeeded or Failed rows of t whose
// ExpiresAt has passed.
func (s *Storage) DeleteExpired(ctx context.Context, t storage.Table, limit int) (int64, error) {
	if limit <= 0 {
		return 0, nil
	}
	res, err := s.db.ExecContext(ctx, s.sql.table(kind(t)).deleteExpired, formatTime(now()), limit)
	if err != nil {
		return 0, fmt.Errorf("sqlite: delete expired %s: %w", t, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("sqlite: delete expired %s: %w", t, err)
	}
	return n, nil
}

// Get returns the row id of t, or an error wrapping storage.ErrNotFound.
func (s *Storage) Get(ctx context.Context, t storage.Table, id int64) (*storage.Record, error) {
	rows, err := s.db.QueryContext(ctx, s.sql.table(kind(t)).get, id)
	if err != nil {
		return nil, fmt.Errorf("sqlite: get %s %d: %w", t, id, err)
	}
	recs, err := scanRecords(rows)
	if err != nil {
		return nil, fmt.Errorf("sqlite: get %s %d: %w", t, id, err)
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("sqlite: get %s %d: %w", t, id, storage.ErrNotFound)
	}
	return recs[0], nil
}

// DefaultListLimit is the page size of List when ListQuery.Limit is zero.
const DefaultListLimit = 20

// List returns one page of rows matching q, newest first, and the number of
// all matching rows. Name and Content match case-insensitively for ASCII
// letters (SQLite's lower()).
func (s *Storage) List(ctx context.Context, t storage.Table, q storage.ListQuery) ([]*storage.Record, int64, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultListLimit
	}
	offset := max(q.Offset, 0)
	group := q.Group
	if t != storage.Received {
		group = ""
	}
	stmts := s.sql.table(kind(t))
	filter := []any{group, string(q.Status), q.Name, q.Content}
	var (
		recs  []*storage.Record
		total int64
	)
	// A read-only transaction is a plain BEGIN even under _txlock=immediate:
	// the page and the count see one snapshot without taking the write lock.
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, 0, fmt.Errorf("sqlite: list %s: %w", t, err)
	}
	defer func() { _ = tx.Rollback() }()
	if err := tx.QueryRowContext(ctx, stmts.count, filter...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("sqlite: list %s: %w", t, err)
	}
	rows, err := tx.QueryContext(ctx, stmts.list, append(filter, limit, offset)...)
	if err != nil {
		return nil, 0, fmt.Errorf("sqlite: list %s: %w", t, err)
	}
	if recs, err = scanRecords(rows); err != nil {
		return nil, 0, fmt.Errorf("sqlite: list %s: %w", t, err)
	}
	return recs, total, nil
}

// Counts returns the number of rows of t per status.
func (s *Storage) Counts(ctx context.Context, t storage.Table) (map[storage.Status]int64, error) {
	rows, err := s.db.QueryContext(ctx, s.sql.table(kind(t)).counts)
	if err != nil {
		return nil, fmt.Errorf("sqlite: counts %s: %w", t, err)
	}
	defer rows.Close()
	counts := make(map[storage.Status]int64)
	for rows.Next() {
		var (
			status string
			n      int64
		)
		if err := rows.Scan(&status, &n); err != nil {
			return nil, fmt.Errorf("sqlite: counts %s: %w", t, err)
		}
		counts[storage.Status(status)] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: counts %s: %w", t, err)
	}
	return counts, nil
}

// Delete removes the rows ids of t; absent ids are ignored.
func (s *Storage) Delete(ctx context.Context, t storage.Table, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	if _, err := s.db.ExecContext(ctx, s.sql.table(kind(t)).deleteIDs, idsJSON(ids)); err != nil {
		return fmt.Errorf("sqlite: delete %s: %w", t, err)
	}
	return nil
}

// idsJSON encodes ids as a JSON array for json_each.
func idsJSON(ids []int64) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(id, 10))
	}
	b.WriteByte(']')
	return b.String()
}

// scanRecords reads rows of the tables' common column list and closes rows.
func scanRecords(rows *sql.Rows) ([]*storage.Record, error) {
	defer rows.Close()
	var recs []*storage.Record
	for rows.Next() {
		var (
			r                    storage.Record
			status, added        string
			expiresAt, nextAttem sql.NullString
		)
		if err := rows.Scan(&r.ID, &r.Version, &r.Name, &r.Group, &r.MessageID, &r.Content,
			&r.Retries, &added, &expiresAt, &status, &nextAttem); err != nil {
			return nil, err
		}
		r.Status = storage.Status(status)
		var err error
		if r.Added, err = parseTime(added); err != nil {
			return nil, err
		}
		if r.ExpiresAt, err = parseNullTime(expiresAt); err != nil {
			return nil, err
		}
		if r.NextAttemptAt, err = parseNullTime(nextAttem); err != nil {
			return nil, err
		}
		recs = append(recs, &r)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return recs, nil
}

func parseNullTime(s sql.NullString) (*time.Time, error) {
	if !s.Valid {
		return nil, nil
	}
	t, err := parseTime(s.String)
	if err != nil {
		return nil, err
	}
	return &t, nil
}
