package postgres

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/go-cap/cap/storage"
)

// Errors of this package. Callers test them with errors.Is.
var (
	// ErrNotPgx: NewSQL was given a *sql.DB whose driver is not pgx's stdlib
	// driver; the storage passes Go slices as PostgreSQL arrays, which only
	// that driver does.
	ErrNotPgx = errors.New("postgres: *sql.DB must use pgx's stdlib driver")
	// ErrNoListenConfig: the listener could not find how to connect; set
	// Options.ListenConnString.
	ErrNoListenConfig = errors.New("postgres: no configuration for the listen connection")
)

// Store keeps CAP's published and received tables in PostgreSQL. TTx is
// pgx.Tx (New) or *sql.Tx (NewSQL). It implements storage.Storage[TTx],
// storage.Notifier and storage.Namer, and is safe for concurrent use.
type Store[TTx any] struct {
	b    backend[TTx]
	q    *queries
	opts Options

	// epoch and lastNotify (time since epoch of the last NOTIFY, 0 for
	// none) implement Options.NotifyInterval.
	epoch      time.Time
	lastNotify atomic.Int64
}

var (
	_ storage.Storage[pgx.Tx]  = (*Store[pgx.Tx])(nil)
	_ storage.Storage[*sql.Tx] = (*Store[*sql.Tx])(nil)
	_ storage.Notifier         = (*Store[pgx.Tx])(nil)
	_ storage.Namer            = (*Store[pgx.Tx])(nil)
)

// New returns a storage over a pgx pool, whose transactions are pgx.Tx.
func New(pool *pgxpool.Pool, opts Options) (*Store[pgx.Tx], error) {
	if pool == nil {
		return nil, errors.New("postgres: nil pool")
	}
	return newStore[pgx.Tx](pgxBackend{pool}, opts)
}

// NewSQL returns a storage over a *sql.DB opened with pgx's stdlib driver
// (sql.Open("pgx", dsn), stdlib.OpenDB or stdlib.OpenDBFromPool), whose
// transactions are *sql.Tx.
func NewSQL(db *sql.DB, opts Options) (*Store[*sql.Tx], error) {
	if db == nil {
		return nil, errors.New("postgres: nil *sql.DB")
	}
	if !isStdlib(db) {
		return nil, fmt.Errorf("%w, not %T", ErrNotPgx, db.Driver())
	}
	return newStore[*sql.Tx](sqlBackend{db}, opts)
}

func newStore[TTx any](b backend[TTx], opts Options) (*Store[TTx], error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Store[TTx]{b: b, q: newQueries(opts.Schema, opts.SyncCommit), opts: opts, epoch: time.Now()}, nil
}

// Name returns "PostgreSql", CAP's name for this storage.
func (s *Store[TTx]) Name() string { return "PostgreSql" }

// Schema returns the schema holding the tables.
func (s *Store[TTx]) Schema() string { return s.opts.Schema }

// Begin starts a transaction.
func (s *Store[TTx]) Begin(ctx context.Context) (TTx, error) {
	tx, err := s.b.begin(ctx)
	if err != nil {
		return tx, fmt.Errorf("postgres: begin: %w", err)
	}
	return tx, nil
}

// Commit commits tx.
func (s *Store[TTx]) Commit(ctx context.Context, tx TTx) error {
	if err := s.b.commit(ctx, tx); err != nil {
		return fmt.Errorf("postgres: commit: %w", err)
	}
	return nil
}

// Rollback rolls tx back; a finished tx is not an error.
func (s *Store[TTx]) Rollback(ctx context.Context, tx TTx) error {
	if err := s.b.rollback(ctx, tx); err != nil {
		return fmt.Errorf("postgres: rollback: %w", err)
	}
	return nil
}

// InsertPublished stores rows in one statement of its own.
func (s *Store[TTx]) InsertPublished(ctx context.Context, recs []*storage.Record) error {
	return s.insertPublished(ctx, s.b.db(), recs)
}

// InsertPublishedTx stores rows in the caller's transaction. When a row is
// due at once (DueIn <= 0), the transaction also notifies the listeners,
// which hear of it when it commits (see Options.NotifyInterval).
func (s *Store[TTx]) InsertPublishedTx(ctx context.Context, tx TTx, recs []*storage.Record) error {
	if len(recs) == 1 {
		return s.insertOnePublished(ctx, s.b.in(tx), recs[0])
	}
	return s.insertPublished(ctx, s.b.in(tx), recs)
}

// insertOnePublished stores one row without reading back the values the
// database fills in, which InsertPublishedTx does not promise.
func (s *Store[TTx]) insertOnePublished(ctx context.Context, q querier, r *storage.Record) error {
	if r.Status == "" {
		r.Status = storage.StatusScheduled
	}
	tq := &s.q.tables[storage.Published]
	args := []any{r.ID, r.Version, r.Name, text(r.Content), int32(r.Retries), string(r.Status),
		r.DueIn.Microseconds(), r.Terminal, r.ExpiresIn.Microseconds()}
	query := tq.insertOneExec
	if r.DueIn <= 0 && !r.Terminal && s.shouldNotify() {
		query = tq.insertOneNotify
	}
	if _, err := q.exec(ctx, query, args...); err != nil {
		return fmt.Errorf("postgres: insert published: %w", err)
	}
	return nil
}

func (s *Store[TTx]) insertPublished(ctx context.Context, q querier, recs []*storage.Record) error {
	if len(recs) == 0 {
		return nil
	}
	n := len(recs)
	var (
		ids      = make([]int64, n)
		versions = make([]string, n)
		names    = make([]string, n)
		contents = make([]*string, n)
		retries  = make([]int32, n)
		statuses = make([]string, n)
		due      = make([]int64, n)
		terminal = make([]bool, n)
		expires  = make([]int64, n)
		byID     = make(map[int64]*storage.Record, n)
		notify   bool
	)
	for i, r := range recs {
		if r.Status == "" {
			r.Status = storage.StatusScheduled
		}
		ids[i], versions[i], names[i] = r.ID, r.Version, r.Name
		contents[i] = text(r.Content)
		retries[i] = int32(r.Retries)
		statuses[i] = string(r.Status)
		due[i], terminal[i], expires[i] = r.DueIn.Microseconds(), r.Terminal, r.ExpiresIn.Microseconds()
		byID[r.ID] = r
		// A row due at once is one no instance is about to send by itself
		// (the bus gives the rows it sends a lease), so the listeners must
		// hear of it. Only then does the transaction pay for a NOTIFY.
		notify = notify || (r.DueIn <= 0 && !r.Terminal)
	}
	tq := &s.q.tables[storage.Published]
	notify = notify && s.shouldNotify()
	var rs rows
	var err error
	if n == 1 {
		query := tq.insertOne
		if notify {
			query = tq.insertOneNotify
		}
		rs, err = q.query(ctx, query, ids[0], versions[0], names[0], contents[0], retries[0], statuses[0], due[0],
			terminal[0], expires[0])
	} else {
		query := tq.insert
		if notify {
			query = tq.insertNotify
		}
		rs, err = q.query(ctx, query, ids, versions, names, contents, retries, statuses, due, terminal, expires)
	}
	if err != nil {
		return fmt.Errorf("postgres: insert published: %w", err)
	}
	defer rs.Close()
	for rs.Next() {
		var (
			id       int64
			added    time.Time
			exp, nxt *time.Time
		)
		if err := rs.Scan(&id, &added, &exp, &nxt); err != nil {
			return fmt.Errorf("postgres: insert published: %w", err)
		}
		if r := byID[id]; r != nil {
			r.Added, r.ExpiresAt, r.NextAttemptAt = added.UTC(), utc(exp), utc(nxt)
		}
	}
	if err := rs.Err(); err != nil {
		return fmt.Errorf("postgres: insert published: %w", err)
	}
	return nil
}

// shouldNotify reports whether an insert of due rows should NOTIFY, and
// then counts it as sent.
func (s *Store[TTx]) shouldNotify() bool {
	switch {
	case s.opts.DisableNotify:
		return false
	case s.opts.NotifyInterval < 0:
		return true
	}
	now := int64(time.Since(s.epoch)) + 1 // never 0, which means none yet
	last := s.lastNotify.Load()
	if last != 0 && now-last < int64(s.opts.NotifyInterval) {
		return false
	}
	return s.lastNotify.CompareAndSwap(last, now)
}

// InsertReceived stores a received row unless one with the same
// (MessageID, Group) exists.
func (s *Store[TTx]) InsertReceived(ctx context.Context, r *storage.Record) (bool, error) {
	if r.Status == "" {
		r.Status = storage.StatusScheduled
	}
	rs, err := s.b.db().query(ctx, s.q.tables[storage.Received].insert,
		r.ID, r.Version, r.Name, r.Group, r.MessageID, text(r.Content), int32(r.Retries), string(r.Status),
		r.DueIn.Microseconds(), r.ExpiresIn.Microseconds(), r.Terminal)
	if err != nil {
		return false, insertReceivedErr(err)
	}
	defer rs.Close()
	if !rs.Next() {
		if err := rs.Err(); err != nil {
			return false, insertReceivedErr(err)
		}
		return false, nil // a duplicate delivery
	}
	var (
		added    time.Time
		exp, nxt *time.Time
	)
	if err := rs.Scan(&added, &exp, &nxt); err != nil {
		return false, insertReceivedErr(err)
	}
	rs.Close()
	if err := rs.Err(); err != nil {
		return false, insertReceivedErr(err)
	}
	r.Added, r.ExpiresAt, r.NextAttemptAt = added.UTC(), utc(exp), utc(nxt)
	return true, nil
}

// InsertReceivedBatch stores recs in one statement, each unless a row with
// its (MessageID, Group) exists or comes earlier in recs, and reports which
// it stored.
func (s *Store[TTx]) InsertReceivedBatch(ctx context.Context, recs []*storage.Record) ([]bool, error) {
	inserted := make([]bool, len(recs))
	type key struct{ msgID, group string }
	seen := make(map[key]bool, len(recs))
	var (
		n        = len(recs)
		ids      = make([]int64, 0, n)
		versions = make([]string, 0, n)
		names    = make([]string, 0, n)
		groups   = make([]string, 0, n)
		msgIDs   = make([]string, 0, n)
		contents = make([]*string, 0, n)
		retries  = make([]int32, 0, n)
		statuses = make([]string, 0, n)
		due      = make([]int64, 0, n)
		expires  = make([]int64, 0, n)
		terminal = make([]bool, 0, n)
		byID     = make(map[int64]int, n)
	)
	for i, r := range recs {
		if r == nil {
			return nil, errors.New("postgres: insert received: nil record")
		}
		// A duplicate within the batch is left out here: the statement
		// would skip it too, but which of the two it keeps is the first.
		k := key{r.MessageID, r.Group}
		if seen[k] {
			continue
		}
		seen[k] = true
		status := r.Status
		if status == "" {
			status = storage.StatusScheduled
		}
		ids, versions, names = append(ids, r.ID), append(versions, r.Version), append(names, r.Name)
		groups, msgIDs = append(groups, r.Group), append(msgIDs, r.MessageID)
		contents, retries = append(contents, text(r.Content)), append(retries, int32(r.Retries))
		statuses, due = append(statuses, string(status)), append(due, r.DueIn.Microseconds())
		expires, terminal = append(expires, r.ExpiresIn.Microseconds()), append(terminal, r.Terminal)
		byID[r.ID] = i
	}
	if len(ids) == 0 {
		return inserted, nil
	}
	rs, err := s.b.db().query(ctx, s.q.tables[storage.Received].insertBatch,
		ids, versions, names, groups, msgIDs, contents, retries, statuses, due, expires, terminal)
	if err != nil {
		return nil, insertReceivedErr(err)
	}
	defer rs.Close()
	type stored struct {
		added    time.Time
		exp, nxt *time.Time
	}
	got := make(map[int]stored, len(ids))
	for rs.Next() {
		var (
			id int64
			v  stored
		)
		if err := rs.Scan(&id, &v.added, &v.exp, &v.nxt); err != nil {
			return nil, insertReceivedErr(err)
		}
		if i, ok := byID[id]; ok {
			got[i] = v
		}
	}
	if err := rs.Err(); err != nil {
		return nil, insertReceivedErr(err)
	}
	// Written back only once the statement has succeeded as a whole.
	for i, v := range got {
		r := recs[i]
		if r.Status == "" {
			r.Status = storage.StatusScheduled
		}
		r.Added, r.ExpiresAt, r.NextAttemptAt = v.added.UTC(), utc(v.exp), utc(v.nxt)
		inserted[i] = true
	}
	return inserted, nil
}

// Claim leases up to req.Limit due rows of t, in due order.
func (s *Store[TTx]) Claim(ctx context.Context, t storage.Table, req storage.ClaimRequest) ([]*storage.Record, error) {
	if req.Limit <= 0 {
		return nil, nil
	}
	args := []any{req.Version, req.Limit, req.Lease.Microseconds()}
	if t == storage.Received {
		var groups []string // NULL: every group
		if len(req.Groups) > 0 {
			groups = req.Groups
		}
		args = append(args, groups)
	}
	rs, err := s.b.db().query(ctx, s.q.tables[t].claim, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: claim %s: %w", t, err)
	}
	defer rs.Close()
	type claimed struct {
		rec *storage.Record
		was time.Time
	}
	var out []claimed
	for rs.Next() {
		var c claimed
		c.rec, err = scanRecord(rs, &c.was)
		if err != nil {
			return nil, fmt.Errorf("postgres: claim %s: %w", t, err)
		}
		out = append(out, c)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("postgres: claim %s: %w", t, err)
	}
	// RETURNING has no order; the batch goes out in the order rows fell due.
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

// Reschedule sets NextAttemptAt = now + in for the rows.
func (s *Store[TTx]) Reschedule(ctx context.Context, t storage.Table, ids []int64, in time.Duration) error {
	if len(ids) == 0 {
		return nil
	}
	if _, err := s.b.db().exec(ctx, s.q.tables[t].reschedule, ids, in.Microseconds()); err != nil {
		return fmt.Errorf("postgres: reschedule %s: %w", t, err)
	}
	return nil
}

// outcomeArgs turns outcomes into the array parameters of the outcome
// statements.
func outcomeArgs(outs []storage.Outcome) []any {
	n := len(outs)
	var (
		ids       = make([]int64, n)
		statuses  = make([]string, n)
		retries   = make([]int32, n)
		contents  = make([]*string, n)
		expires   = make([]int64, n)
		fromAdded = make([]bool, n)
		retry     = make([]bool, n)
		retryIn   = make([]int64, n)
		force     = make([]bool, n)
	)
	for i, o := range outs {
		ids[i], statuses[i], retries[i] = o.ID, string(o.Status), int32(o.Retries)
		contents[i] = text(o.Content)
		expires[i], fromAdded[i] = o.ExpiresIn.Microseconds(), o.ExpiresFromAdded
		retry[i], retryIn[i] = o.Retry, o.RetryIn.Microseconds()
		force[i] = o.Force
	}
	return []any{ids, statuses, retries, contents, expires, fromAdded, retry, retryIn, force}
}

// SetOutcomes writes outcomes in one statement, so all or none apply.
// Unknown ids are ignored.
func (s *Store[TTx]) SetOutcomes(ctx context.Context, t storage.Table, outs []storage.Outcome) error {
	if len(outs) == 0 {
		return nil
	}
	if _, err := s.b.db().exec(ctx, s.q.tables[t].outcomes, outcomeArgs(outs)...); err != nil {
		return fmt.Errorf("postgres: set outcomes %s: %w", t, err)
	}
	return nil
}

// SetOutcomesTx writes outcomes in the caller's transaction. It fails with
// storage.ErrStale when a row is already Succeeded and storage.ErrNotFound
// when one does not exist; the transaction must then roll back.
func (s *Store[TTx]) SetOutcomesTx(ctx context.Context, tx TTx, t storage.Table, outs []storage.Outcome) error {
	if len(outs) == 0 {
		return nil
	}
	q := s.b.in(tx)
	written, err := queryIDs(ctx, q, s.q.tables[t].outcomesTx, outcomeArgs(outs)...)
	if err != nil {
		return fmt.Errorf("postgres: set outcomes %s: %w", t, err)
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
	existing, err := queryIDs(ctx, q, s.q.tables[t].existing, missing)
	if err != nil {
		return fmt.Errorf("postgres: set outcomes %s: %w", t, err)
	}
	for _, id := range missing {
		if _, ok := existing[id]; !ok {
			return fmt.Errorf("postgres: set outcome of %s row %d: %w", t, id, storage.ErrNotFound)
		}
	}
	return fmt.Errorf("postgres: set outcome of %s row %d: %w", t, missing[0], storage.ErrStale)
}

// queryIDs runs a statement returning ids and collects them.
func queryIDs(ctx context.Context, q querier, query string, args ...any) (map[int64]struct{}, error) {
	rs, err := q.query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	ids := make(map[int64]struct{})
	for rs.Next() {
		var id int64
		if err := rs.Scan(&id); err != nil {
			return nil, err
		}
		ids[id] = struct{}{}
	}
	return ids, rs.Err()
}

// DeleteExpired deletes up to limit expired Succeeded or Failed rows,
// skipping rows another collector is deleting.
func (s *Store[TTx]) DeleteExpired(ctx context.Context, t storage.Table, limit int) (int64, error) {
	if limit <= 0 {
		return 0, nil
	}
	n, err := s.b.db().exec(ctx, s.q.tables[t].deleteExp, limit)
	if err != nil {
		return 0, fmt.Errorf("postgres: delete expired %s: %w", t, err)
	}
	return n, nil
}

// Get returns one row, or an error wrapping storage.ErrNotFound.
func (s *Store[TTx]) Get(ctx context.Context, t storage.Table, id int64) (*storage.Record, error) {
	rs, err := s.b.db().query(ctx, s.q.tables[t].get, id)
	if err != nil {
		return nil, fmt.Errorf("postgres: get %s: %w", t, err)
	}
	defer rs.Close()
	if !rs.Next() {
		if err := rs.Err(); err != nil {
			return nil, fmt.Errorf("postgres: get %s: %w", t, err)
		}
		return nil, fmt.Errorf("postgres: get %s row %d: %w", t, id, storage.ErrNotFound)
	}
	r, err := scanRecord(rs, nil)
	if err != nil {
		return nil, fmt.Errorf("postgres: get %s: %w", t, err)
	}
	return r, nil
}

// List returns one page of rows, newest first, and the number of rows
// matching q.
func (s *Store[TTx]) List(ctx context.Context, t storage.Table, q storage.ListQuery) ([]*storage.Record, int64, error) {
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
	scheduled := q.Status == storage.StatusScheduled
	if !scheduled {
		add(filterStatus, string(q.Status))
	}
	add(filterName, likePattern(q.Name))
	add(filterContent, likePattern(q.Content))
	if t == storage.Received {
		add(filterGroup, q.Group)
	}
	list, count := s.q.tables[t].list[f], s.q.tables[t].count[f]
	if scheduled {
		list, count = s.q.tables[t].listScheduled[f], s.q.tables[t].countScheduled[f]
	}
	rs, err := s.b.db().query(ctx, list, append(filter, limit, offset)...)
	if err != nil {
		return nil, 0, fmt.Errorf("postgres: list %s: %w", t, err)
	}
	defer rs.Close()
	var recs []*storage.Record
	for rs.Next() {
		r, err := scanRecord(rs, nil)
		if err != nil {
			return nil, 0, fmt.Errorf("postgres: list %s: %w", t, err)
		}
		recs = append(recs, r)
	}
	if err := rs.Err(); err != nil {
		return nil, 0, fmt.Errorf("postgres: list %s: %w", t, err)
	}
	rs.Close()

	cs, err := s.b.db().query(ctx, count, filter...)
	if err != nil {
		return nil, 0, fmt.Errorf("postgres: count %s: %w", t, err)
	}
	defer cs.Close()
	var total int64
	if cs.Next() {
		if err := cs.Scan(&total); err != nil {
			return nil, 0, fmt.Errorf("postgres: count %s: %w", t, err)
		}
	}
	if err := cs.Err(); err != nil {
		return nil, 0, fmt.Errorf("postgres: count %s: %w", t, err)
	}
	return recs, total, nil
}

// Counts returns the number of rows per status.
func (s *Store[TTx]) Counts(ctx context.Context, t storage.Table) (map[storage.Status]int64, error) {
	rs, err := s.b.db().query(ctx, s.q.tables[t].counts)
	if err != nil {
		return nil, fmt.Errorf("postgres: counts %s: %w", t, err)
	}
	defer rs.Close()
	counts := make(map[storage.Status]int64)
	for rs.Next() {
		var (
			st string
			n  int64
		)
		if err := rs.Scan(&st, &n); err != nil {
			return nil, fmt.Errorf("postgres: counts %s: %w", t, err)
		}
		counts[storage.Status(st)] = n
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("postgres: counts %s: %w", t, err)
	}
	return counts, nil
}

// Delete removes rows by id.
func (s *Store[TTx]) Delete(ctx context.Context, t storage.Table, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	if _, err := s.b.db().exec(ctx, s.q.tables[t].delete, ids); err != nil {
		return fmt.Errorf("postgres: delete %s: %w", t, err)
	}
	return nil
}

// scanRecord reads the columns of a record, and then the claimed row's
// former due time when was is not nil.
func scanRecord(rs rows, was *time.Time) (*storage.Record, error) {
	var (
		r        storage.Record
		content  *string
		retries  int32
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
	if content != nil {
		r.Content = []byte(*content)
	}
	r.Retries, r.Status = int(retries), storage.Status(status)
	r.Added, r.ExpiresAt, r.NextAttemptAt = r.Added.UTC(), utc(exp), utc(nxt)
	return &r, nil
}

// text passes content as a TEXT parameter; nil stands for NULL.
func text(b []byte) *string {
	if b == nil {
		return nil
	}
	s := string(b)
	return &s
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// insertReceivedErr wraps an error of a Received insert, marking
// PostgreSQL's data exceptions (SQLSTATE class 22: text the encoding cannot
// hold, a value too long) with storage.ErrRefused.
func insertReceivedErr(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && strings.HasPrefix(pe.Code, "22") {
		return fmt.Errorf("postgres: insert received: %w: %w", storage.ErrRefused, err)
	}
	return fmt.Errorf("postgres: insert received: %w", err)
}
