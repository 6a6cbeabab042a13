// Package memory is an in-memory storage.Storage, for tests, examples and
// services that accept losing their outbox on restart.
//
// It keeps both tables in maps behind one mutex. Claims take due rows from a
// heap per Version ordered by NextAttemptAt, and DeleteExpired takes rows
// from a heap ordered by ExpiresAt, so neither scans the table; List scans
// it, which is fine for a dashboard. Its transaction, *Tx, buffers writes and
// applies them atomically at Commit.
package memory

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-cap/cap/storage"
)

// DefaultListLimit is the page size of List when ListQuery.Limit is zero.
const DefaultListLimit = 20

// Errors of this package; the storage's own conditions use storage's errors.
var (
	// ErrDuplicateID reports an insert of a row whose id exists.
	ErrDuplicateID = errors.New("memory: duplicate row id")
	// ErrInvalidRecord reports a nil record or one without an id.
	ErrInvalidRecord = errors.New("memory: invalid record")
	// ErrUnknownTable reports a storage.Table other than Published and Received.
	ErrUnknownTable = errors.New("memory: unknown table")
)

// Storage is an in-memory storage.Storage[*Tx]. It is safe for concurrent
// use. Create it with New.
type Storage struct {
	now func() time.Time

	mu     sync.Mutex
	tables [2]*table
	subs   map[chan struct{}]struct{}
	leases map[string]lease
	nodes  map[string]storage.Node
}

// lease is one named lease of AcquireLease.
type lease struct {
	owner string
	until time.Time
}

var (
	_ storage.Storage[*Tx]  = (*Storage)(nil)
	_ storage.Notifier      = (*Storage)(nil)
	_ storage.Namer         = (*Storage)(nil)
	_ storage.Leaser        = (*Storage)(nil)
	_ storage.Pinger        = (*Storage)(nil)
	_ storage.BacklogReader = (*Storage)(nil)
)

// New returns an empty storage.
func New() *Storage {
	return &Storage{
		now:    func() time.Time { return time.Now().UTC().Round(0) }, // wall clock only, like a database's
		tables: [2]*table{newTable(false), newTable(true)},
		subs:   map[chan struct{}]struct{}{},
	}
}

// Name returns "InMemory", CAP's name for this storage.
func (s *Storage) Name() string { return "InMemory" }

// Migrate does nothing: the tables exist from New on.
func (s *Storage) Migrate(ctx context.Context) error { return ctx.Err() }

// table returns t's table; the caller holds s.mu.
func (s *Storage) table(t storage.Table) (*table, error) {
	if t != storage.Published && t != storage.Received {
		return nil, fmt.Errorf("%w: %d", ErrUnknownTable, t)
	}
	return s.tables[t], nil
}

// InsertPublished stores recs atomically: all of them or, on error, none.
func (s *Storage) InsertPublished(ctx context.Context, recs []*storage.Record) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkRecords(recs); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tb := s.tables[storage.Published]
	if err := checkFree(tb, recs, nil); err != nil {
		return err
	}
	now := s.now()
	for _, rec := range recs {
		tb.add(newRow(rec, now))
	}
	if len(recs) > 0 {
		s.notifyLocked()
	}
	return nil
}

// InsertPublishedTx buffers recs in tx; they become visible when tx
// commits. Added, NextAttemptAt and ExpiresAt are written back at once.
func (s *Storage) InsertPublishedTx(ctx context.Context, tx *Tx, recs []*storage.Record) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkRecords(recs); err != nil {
		return err
	}
	return s.withTx(tx, func() error {
		tb := s.tables[storage.Published]
		if err := checkFree(tb, recs, tx.inserts); err != nil {
			return err
		}
		now := s.now()
		for _, rec := range recs {
			tx.inserts = append(tx.inserts, newRow(rec, now))
		}
		return nil
	})
}

// InsertReceived stores rec unless a row with its (MessageID, Group)
// exists, and reports whether it did.
func (s *Storage) InsertReceived(ctx context.Context, rec *storage.Record) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if err := checkRecords([]*storage.Record{rec}); err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tb := s.tables[storage.Received]
	if _, dup := tb.keys[keyOf(rec)]; dup {
		return false, nil
	}
	if err := checkFree(tb, []*storage.Record{rec}, nil); err != nil {
		return false, err
	}
	tb.add(newRow(rec, s.now()))
	return true, nil
}

// InsertReceivedBatch stores, atomically, each of recs unless a row with
// its (MessageID, Group) exists or comes earlier in recs, and reports which
// it stored.
func (s *Storage) InsertReceivedBatch(ctx context.Context, recs []*storage.Record) ([]bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkRecords(recs); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tb := s.tables[storage.Received]
	inserted := make([]bool, len(recs))
	fresh := make([]*storage.Record, 0, len(recs))
	seen := make(map[dedupKey]bool, len(recs))
	for i, rec := range recs {
		k := keyOf(rec)
		if _, dup := tb.keys[k]; dup || seen[k] {
			continue
		}
		seen[k] = true
		inserted[i] = true
		fresh = append(fresh, rec)
	}
	if err := checkFree(tb, fresh, nil); err != nil {
		return nil, err
	}
	now := s.now()
	for _, rec := range fresh {
		tb.add(newRow(rec, now))
	}
	return inserted, nil
}

func checkRecords(recs []*storage.Record) error {
	for i, rec := range recs {
		if rec == nil {
			return fmt.Errorf("%w: record %d is nil", ErrInvalidRecord, i)
		}
		if rec.ID == 0 {
			return fmt.Errorf("%w: record %d (%s) has no id", ErrInvalidRecord, i, rec.Name)
		}
	}
	return nil
}

// checkFree fails when an id of recs is taken in tb, in pending or within
// recs; the caller holds s.mu.
func checkFree(tb *table, recs []*storage.Record, pending []*row) error {
	seen := make(map[int64]bool, len(recs)+len(pending))
	for _, r := range pending {
		seen[r.rec.ID] = true
	}
	for _, rec := range recs {
		if _, ok := tb.rows[rec.ID]; ok || seen[rec.ID] {
			return fmt.Errorf("%w: %d", ErrDuplicateID, rec.ID)
		}
		seen[rec.ID] = true
	}
	return nil
}

// Claim leases up to req.Limit due rows of req.Version, earliest
// NextAttemptAt first, by moving their NextAttemptAt to now + req.Lease.
func (s *Storage) Claim(ctx context.Context, t storage.Table, req storage.ClaimRequest) ([]*storage.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tb, err := s.table(t)
	if err != nil {
		return nil, err
	}
	h := tb.due[req.Version]
	if h == nil || req.Limit <= 0 {
		return nil, nil
	}
	now := s.now()
	// Take the rows off the heap first: with a lease <= 0 a re-queued row
	// would be due again within this very claim.
	var groups map[string]bool
	if t == storage.Received && len(req.Groups) > 0 {
		groups = make(map[string]bool, len(req.Groups))
		for _, g := range req.Groups {
			groups[g] = true
		}
	}
	var claimed, skipped []*row
	for len(claimed) < req.Limit {
		r := h.peek()
		if r == nil || r.rec.NextAttemptAt.After(now) {
			break
		}
		h.drop(r)
		if groups != nil && !groups[r.rec.Group] {
			skipped = append(skipped, r) // due, but another group's
			continue
		}
		claimed = append(claimed, r)
	}
	for _, r := range skipped {
		h.put(r)
	}
	out := make([]*storage.Record, len(claimed))
	until := now.Add(req.Lease)
	for i, r := range claimed {
		tb.update(r, func(rec *storage.Record) { rec.NextAttemptAt = timePtr(until) })
		out[i] = r.snapshot()
	}
	return out, nil
}

// Reschedule sets NextAttemptAt = now + in for the rows of ids that still
// await an attempt.
func (s *Storage) Reschedule(ctx context.Context, t storage.Table, ids []int64, in time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tb, err := s.table(t)
	if err != nil {
		return err
	}
	at := s.now().Add(in)
	changed := false
	for _, id := range ids {
		if r := tb.rows[id]; r != nil && r.rec.NextAttemptAt != nil {
			tb.update(r, func(rec *storage.Record) { rec.NextAttemptAt = timePtr(at) })
			changed = true
		}
	}
	if changed && t == storage.Published {
		s.notifyLocked()
	}
	return nil
}

// SetOutcomes writes outs atomically; outcomes of unknown rows are ignored.
func (s *Storage) SetOutcomes(ctx context.Context, t storage.Table, outs []storage.Outcome) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tb, err := s.table(t)
	if err != nil {
		return err
	}
	now := s.now()
	retried := false
	for _, o := range outs {
		// A success stands: a late outcome of an instance whose lease
		// ended must not undo it.
		if r := tb.rows[o.ID]; r != nil && (o.Force || r.rec.Status != storage.StatusSucceeded) {
			applyOutcome(tb, r, o, now)
			retried = retried || o.Retry
		}
	}
	if retried && t == storage.Published {
		s.notifyLocked()
	}
	return nil
}

// applyOutcome writes o, decided at now, into r; the caller holds s.mu.
func applyOutcome(tb *table, r *row, o storage.Outcome, now time.Time) {
	tb.update(r, func(rec *storage.Record) {
		rec.Status = o.Status
		rec.Retries = o.Retries
		if o.Content != nil {
			rec.Content = bytes.Clone(o.Content)
		}
		rec.ExpiresAt = nil
		if o.ExpiresIn > 0 {
			base := now
			if o.ExpiresFromAdded {
				base = rec.Added
			}
			rec.ExpiresAt = timePtr(base.Add(o.ExpiresIn))
		}
		rec.NextAttemptAt = nil
		if o.Retry {
			rec.NextAttemptAt = timePtr(now.Add(o.RetryIn))
		}
	})
}

// SetOutcomesTx buffers outs in tx; they are written when tx commits. It
// fails with storage.ErrNotFound for a missing row and storage.ErrStale for
// a row already Succeeded, as seen by tx; Commit checks again, so of two
// transactions that both mark a row Succeeded only the first commits.
func (s *Storage) SetOutcomesTx(ctx context.Context, tx *Tx, t storage.Table, outs []storage.Outcome) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.withTx(tx, func() error {
		if _, err := s.table(t); err != nil {
			return err
		}
		now := s.now()
		pending := slices.Clone(tx.outcomes)
		for _, o := range outs {
			p := pendingOutcome{table: t, out: o, at: now}
			p.out.Content = bytes.Clone(o.Content)
			pending = append(pending, p)
		}
		if err := s.checkOutcomes(tx.inserts, pending, len(tx.outcomes)); err != nil {
			return err
		}
		tx.outcomes = pending
		return nil
	})
}

// checkOutcomes replays pending, the outcomes of a transaction that inserted
// inserts, over the tables and fails at the first of pending[from:] whose
// row is missing or already Succeeded. The caller holds s.mu.
func (s *Storage) checkOutcomes(inserts []*row, pending []pendingOutcome, from int) error {
	type ref struct {
		t  storage.Table
		id int64
	}
	status := map[ref]storage.Status{}
	for _, r := range inserts {
		status[ref{storage.Published, r.rec.ID}] = r.rec.Status
	}
	for i, p := range pending {
		k := ref{p.table, p.out.ID}
		st, ok := status[k]
		if !ok {
			if r := s.tables[p.table].rows[p.out.ID]; r != nil {
				st, ok = r.rec.Status, true
			}
		}
		if i >= from {
			if !ok {
				return fmt.Errorf("memory: outcome of %s row %d: %w", p.table, p.out.ID, storage.ErrNotFound)
			}
			if st == storage.StatusSucceeded {
				return fmt.Errorf("memory: outcome of %s row %d: %w", p.table, p.out.ID, storage.ErrStale)
			}
		}
		status[k] = p.out.Status
	}
	return nil
}

// DeleteExpired deletes up to limit Succeeded or Failed rows whose
// ExpiresAt has passed, earliest first.
func (s *Storage) DeleteExpired(ctx context.Context, t storage.Table, limit int) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tb, err := s.table(t)
	if err != nil {
		return 0, err
	}
	now := s.now()
	var n int64
	for n < int64(limit) {
		r := tb.expiry.peek()
		if r == nil || !r.rec.ExpiresAt.Before(now) {
			break
		}
		tb.remove(r)
		n++
	}
	return n, nil
}

// Get returns a copy of one row, or an error wrapping storage.ErrNotFound.
func (s *Storage) Get(ctx context.Context, t storage.Table, id int64) (*storage.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tb, err := s.table(t)
	if err != nil {
		return nil, err
	}
	r := tb.rows[id]
	if r == nil {
		return nil, fmt.Errorf("memory: %s row %d: %w", t, id, storage.ErrNotFound)
	}
	return r.snapshot(), nil
}

// List returns one page of the rows matching q, newest Added first (then
// highest id), and the number of matching rows. It scans the table.
func (s *Storage) List(ctx context.Context, t storage.Table, q storage.ListQuery) ([]*storage.Record, int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	name := strings.ToLower(q.Name)
	content := bytes.ToLower([]byte(q.Content))
	s.mu.Lock()
	defer s.mu.Unlock()
	tb, err := s.table(t)
	if err != nil {
		return nil, 0, err
	}
	var match []*row
	for _, r := range tb.rows {
		switch {
		case q.Status != "" && r.rec.Status != q.Status,
			q.Group != "" && r.rec.Group != q.Group,
			name != "" && !strings.Contains(strings.ToLower(r.rec.Name), name),
			len(content) > 0 && !bytes.Contains(bytes.ToLower(r.rec.Content), content):
			continue
		}
		match = append(match, r)
	}
	slices.SortFunc(match, func(a, b *row) int {
		if c := b.rec.Added.Compare(a.rec.Added); c != 0 {
			return c
		}
		return cmp.Compare(b.rec.ID, a.rec.ID)
	})
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultListLimit
	}
	from := min(max(q.Offset, 0), len(match))
	to := min(from+limit, len(match))
	page := make([]*storage.Record, 0, to-from)
	for _, r := range match[from:to] {
		page = append(page, r.snapshot())
	}
	return page, int64(len(match)), nil
}

// Counts returns the number of rows per status; statuses without rows are
// absent.
func (s *Storage) Counts(ctx context.Context, t storage.Table) (map[storage.Status]int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tb, err := s.table(t)
	if err != nil {
		return nil, err
	}
	out := make(map[storage.Status]int64, len(tb.counts))
	for st, n := range tb.counts {
		out[st] = n
	}
	return out, nil
}

// Delete removes the rows of ids that exist.
func (s *Storage) Delete(ctx context.Context, t storage.Table, ids []int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tb, err := s.table(t)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if r := tb.rows[id]; r != nil {
			tb.remove(r)
		}
	}
	return nil
}

// Notifications returns a channel that receives a value, without blocking
// the writer, whenever Published rows became visible or due (InsertPublished,
// the commit of a transaction that inserted Published rows or retried them,
// Reschedule); values coalesce in its buffer of one. It is closed when ctx
// ends.
func (s *Storage) Notifications(ctx context.Context) (<-chan struct{}, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	s.subs[ch] = struct{}{}
	s.mu.Unlock()
	context.AfterFunc(ctx, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.subs, ch)
		close(ch)
	})
	return ch, nil
}

// notifyLocked signals every subscriber; the caller holds s.mu, which also
// keeps a channel from being closed while it is signalled.
func (s *Storage) notifyLocked() {
	for ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// AcquireLease implements storage.Leaser, for buses that share one Storage.
func (s *Storage) AcquireLease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if l, ok := s.leases[name]; ok && l.owner != owner && now.Before(l.until) {
		return false, nil
	}
	if s.leases == nil {
		s.leases = map[string]lease{}
	}
	s.leases[name] = lease{owner: owner, until: now.Add(ttl)}
	return true, nil
}

// ReleaseLease implements storage.Leaser.
func (s *Storage) ReleaseLease(ctx context.Context, name, owner string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.leases[name]; ok && l.owner == owner {
		delete(s.leases, name)
	}
	return nil
}

// Ping implements storage.Pinger; it fails only when ctx has ended.
func (s *Storage) Ping(ctx context.Context) error { return ctx.Err() }

// Backlog implements storage.BacklogReader. It scans the table, which is
// fine at the rate metrics are collected.
func (s *Storage) Backlog(ctx context.Context, t storage.Table, version string) ([]storage.Backlog, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tb, err := s.table(t)
	if err != nil {
		return nil, err
	}
	now := s.now()
	by := map[string]*storage.Backlog{}
	get := func(g string) *storage.Backlog {
		b, ok := by[g]
		if !ok {
			b = &storage.Backlog{Group: g, Now: now}
			by[g] = b
		}
		return b
	}
	for _, r := range tb.rows {
		rec := &r.rec
		if rec.Version != version {
			continue
		}
		switch {
		case rec.NextAttemptAt != nil && !rec.NextAttemptAt.After(now):
			b := get(rec.Group)
			b.Due++
			if b.OldestDue.IsZero() || rec.NextAttemptAt.Before(b.OldestDue) {
				b.OldestDue = *rec.NextAttemptAt
			}
		case rec.NextAttemptAt == nil && rec.Status == storage.StatusFailed:
			get(rec.Group).Failed++
		}
	}
	out := make([]storage.Backlog, 0, len(by))
	for _, b := range by {
		out = append(out, *b)
	}
	slices.SortFunc(out, func(a, b storage.Backlog) int { return strings.Compare(a.Group, b.Group) })
	return out, nil
}
