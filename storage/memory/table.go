package memory

import (
	"bytes"
	"maps"
	"time"

	"github.com/go-cap/cap/storage"
)

// row is one stored row. rec holds only the stored fields (DueIn, Terminal
// and ExpiresIn are zero).
type row struct {
	rec storage.Record
	pos [slots]int // index in the due and expiry heaps, -1 when absent
}

// dedupKey is the unique key of the Received table.
type dedupKey struct{ messageID, group string }

// table is the Published or the Received table with its indexes. Every
// change to a row goes through add, remove or update, which keep the
// indexes and counts right. The Storage's mutex guards it.
type table struct {
	received bool
	rows     map[int64]*row
	peak     int                 // largest len(rows) since rows was last rebuilt
	due      map[string]*rowHeap // by Version: rows with a NextAttemptAt
	expiry   rowHeap             // Succeeded and Failed rows with an ExpiresAt
	keys     map[dedupKey]int64  // Received only
	counts   map[storage.Status]int64
}

func newTable(received bool) *table {
	return &table{
		received: received,
		rows:     map[int64]*row{},
		due:      map[string]*rowHeap{},
		expiry:   rowHeap{slot: expirySlot},
		keys:     map[dedupKey]int64{},
		counts:   map[storage.Status]int64{},
	}
}

func keyOf(rec *storage.Record) dedupKey { return dedupKey{rec.MessageID, rec.Group} }

// newRow builds the stored form of rec inserted at now, and writes Added,
// NextAttemptAt and ExpiresAt back into rec.
func newRow(rec *storage.Record, now time.Time) *row {
	r := &row{pos: [slots]int{-1, -1}}
	r.rec = storage.Record{
		ID:        rec.ID,
		Version:   rec.Version,
		Name:      rec.Name,
		Group:     rec.Group,
		MessageID: rec.MessageID,
		Content:   bytes.Clone(rec.Content),
		Retries:   rec.Retries,
		Added:     now,
		Status:    rec.Status,
	}
	if r.rec.Status == "" {
		r.rec.Status = storage.StatusScheduled
	}
	if !rec.Terminal {
		r.rec.NextAttemptAt = timePtr(now.Add(rec.DueIn))
	}
	switch {
	case r.rec.Status == storage.StatusDelayed && r.rec.NextAttemptAt != nil:
		r.rec.ExpiresAt = timePtr(*r.rec.NextAttemptAt) // as CAP: a delayed message expires when due
	case rec.ExpiresIn > 0:
		r.rec.ExpiresAt = timePtr(now.Add(rec.ExpiresIn))
	}
	rec.Added = now
	rec.NextAttemptAt = clonePtr(r.rec.NextAttemptAt)
	rec.ExpiresAt = clonePtr(r.rec.ExpiresAt)
	return r
}

// add stores r; the caller has checked that its id (and key) are free.
func (t *table) add(r *row) {
	t.rows[r.rec.ID] = r
	t.peak = max(t.peak, len(t.rows))
	if t.received {
		t.keys[keyOf(&r.rec)] = r.rec.ID
	}
	t.counts[r.rec.Status]++
	t.index(r)
}

// remove deletes r and everything that points to it.
func (t *table) remove(r *row) {
	delete(t.rows, r.rec.ID)
	if t.received {
		if k := keyOf(&r.rec); t.keys[k] == r.rec.ID {
			delete(t.keys, k)
		}
	}
	t.uncount(r.rec.Status)
	if h := t.due[r.rec.Version]; h != nil {
		h.drop(r)
		if h.Len() == 0 {
			delete(t.due, r.rec.Version)
		}
	}
	t.expiry.drop(r)
	t.shrink()
}

// update applies change to r and re-indexes it.
func (t *table) update(r *row, change func(rec *storage.Record)) {
	t.uncount(r.rec.Status)
	change(&r.rec)
	t.counts[r.rec.Status]++
	t.index(r)
}

func (t *table) uncount(s storage.Status) {
	if t.counts[s]--; t.counts[s] <= 0 {
		delete(t.counts, s)
	}
}

// index puts r in the heaps it belongs to and takes it out of the others.
func (t *table) index(r *row) {
	v := r.rec.Version
	h := t.due[v]
	switch {
	case r.rec.NextAttemptAt != nil:
		if h == nil {
			h = &rowHeap{slot: dueSlot}
			t.due[v] = h
		}
		h.put(r)
	case h != nil:
		h.drop(r)
		if h.Len() == 0 {
			delete(t.due, v)
		}
	}
	done := r.rec.Status == storage.StatusSucceeded || r.rec.Status == storage.StatusFailed
	if done && r.rec.ExpiresAt != nil {
		t.expiry.put(r)
	} else {
		t.expiry.drop(r)
	}
}

// shrink rebuilds the maps once most of their rows are gone: Go maps keep
// their peak size, and an outbox drains far more rows than it holds.
func (t *table) shrink() {
	if t.peak < 4096 || len(t.rows) > t.peak/4 {
		return
	}
	// A fresh map sized for what is left; maps.Clone may keep the old size.
	rows := make(map[int64]*row, len(t.rows))
	maps.Copy(rows, t.rows)
	keys := make(map[dedupKey]int64, len(t.keys))
	maps.Copy(keys, t.keys)
	t.rows, t.keys, t.peak = rows, keys, len(rows)
}

func timePtr(t time.Time) *time.Time { return &t }

func clonePtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	return timePtr(*t)
}

// snapshot returns a copy of r's record the caller may keep and change.
func (r *row) snapshot() *storage.Record {
	c := r.rec
	c.Content = bytes.Clone(r.rec.Content)
	c.ExpiresAt = clonePtr(r.rec.ExpiresAt)
	c.NextAttemptAt = clonePtr(r.rec.NextAttemptAt)
	return &c
}
